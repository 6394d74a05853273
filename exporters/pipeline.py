"""The export pipeline: torch -> ONNX (parity) -> per-target artifacts -> accuracy gate -> bundle.

Which targets and precisions to build comes from the compute-target profile; what each target can
build comes from the target itself. Every artifact that runs here is checked against torch on the
task's example inputs (against ONNX Runtime on the task's own file, for a graph the task brings as
ONNX); lower precisions are judged on the task's own metric and dropped, with a note, when they
lose more than the task's gate allows.
"""

from __future__ import annotations

import datetime as _dt
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeaudio import registry
from edgeaudio.backends.base import backends as registered_backends
from edgeaudio.bundle import Bundle, pack_archive, sha256_file, write_manifest
from edgeaudio.errors import ExportError, UsageError, require
from edgeaudio.exporters.base import export_targets
from edgeaudio.exporters.onnx import check_onnx_parity, compare_outputs, export_onnx, torch_outputs
from edgeaudio.task import Graph, Task

Log = Callable[[str], None]
PRECISIONS = ("fp32", "fp16", "int8")
SPEED_MARGIN = 0.05  # a lower precision must take at most 95 % of fp32's time to be a backend's default


@dataclass
class ExportPlan:
    """What to build: target profile name, export targets and precisions for each."""

    profile: str
    targets: list[str]
    precisions: list[str]


@dataclass
class ExportResult:
    bundle_dir: Path
    archive: Path | None
    manifest: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def plan_export(target: str, precisions: Sequence[str] | None = None, backends: Sequence[str] | None = None) -> tuple[ExportPlan, str]:
    """Resolve a target profile (family names allowed) into targets and precisions."""
    from edgeaudio.profiles import get_target

    profile, reason = get_target(target)
    available = export_targets()
    wanted = list(backends) if backends else [b for b in profile.backends if b in available]
    unknown = [b for b in wanted if b not in available]
    if unknown:
        raise UsageError(f"no export target for {unknown}; known: {', '.join(sorted(available))}")
    chosen = list(precisions) if precisions else list(profile.precisions)
    bad = [p for p in chosen if p not in PRECISIONS]
    if bad:
        raise UsageError(f"unknown precision {bad}; use {', '.join(PRECISIONS)}")
    if "fp32" not in chosen:
        chosen.append("fp32")  # the safe fallback every gate can fall back to
    return ExportPlan(profile.name, wanted, chosen), reason


def export_task(
    task: Task,
    plan: ExportPlan,
    out_dir: str | Path,
    checkpoint: str | None = None,
    archive: bool = False,
    validation: Any = None,
    log: Log = print,
    sign: str | Path | None = None,
    calibration: Any = None,
) -> ExportResult:
    """Build the bundle in a staging folder beside ``out_dir`` (``.export-PID-*``: removed when the
    export fails, and by the next export in that folder when its process was killed), then rename
    it into place. An export holds a lock on ``out_dir`` (``edgeaudio.cache.lock``), so a second
    export to the same folder waits and then fails cleanly instead of racing the rename. ``sign``:
    a private key file (``edgeaudio keygen``) whose signature of the manifest goes with the bundle."""
    from edgeaudio.cache import lock
    from edgeaudio.signing import load_private_key, sign_bundle
    from edgeaudio.staging import staging_dir

    out_dir = Path(out_dir)
    if sign is not None:
        load_private_key(sign)  # a bad key fails now, not after the export's minutes of work
    with lock(f"export:{out_dir.resolve()}"):
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise UsageError(f"{out_dir} exists and is not empty", hint="choose another --output or remove it")
        staging = staging_dir(out_dir.parent, "export")
        try:
            result = _export_into(task, plan, staging, checkpoint, validation, log, calibration)
            if sign is not None:
                log(f"signed by key {sign_bundle(staging, sign)} ({sign})")
            if out_dir.exists():
                out_dir.rmdir()
            staging.rename(out_dir)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    result.bundle_dir = out_dir
    if archive:
        result.archive = pack_archive(out_dir, out_dir.with_suffix(".eab"))
        log(f"archive: {result.archive}")
    return result


def _export_into(task: Task, plan: ExportPlan, root: Path, checkpoint, validation, log: Log, calibration=None) -> ExportResult:
    checkpoint = checkpoint or task.default_checkpoint()
    model = _load_model(task, checkpoint)
    graphs = task.graphs(model)
    notes: list[str] = []
    parity: dict[str, dict[str, Any]] = {}
    graph_entries = []
    calibration = _calibration_by_graph(task, plan, log, calibration)
    targets = {name: export_targets()[name]() for name in plan.targets}
    for graph in graphs:
        log(f"[{graph.name}] " + ("torch -> ONNX" if graph.module is not None else f"ONNX: the task's own ({Path(graph.onnx_path).name})"))
        onnx_path = export_onnx(graph, root / "onnx" / f"{graph.name}.onnx")
        parity[graph.name] = {"onnx/fp32": check_onnx_parity(graph, onnx_path)}
        artifacts = _torch_artifact(graph, model, root)
        for target in targets.values():
            ok, why = target.available()
            if not ok:
                notes.append(f"{target.name}: skipped ({why})")
                log(f"[{graph.name}] {target.name}: skipped ({why})")
                continue
            for precision in [p for p in plan.precisions if p in target.precisions]:
                log(f"[{graph.name}] {target.name}/{precision}")
                files = target.build(graph, onnx_path, precision, root, calibration.get(graph.name, []))
                artifacts.append({"backend": target.backend, "precision": precision, "files": files})
        onnx_path.unlink()
        graph_entries.append(_graph_entry(graph, artifacts))
    manifest = _manifest(task, plan, checkpoint, graph_entries, parity, notes)
    write_manifest(root, manifest)
    bundle = Bundle(root, manifest)
    _check_artifact_parity(task, bundle, graphs, targets, parity, log)
    gate = _apply_gate(task, bundle, targets, validation, notes, log)
    speed = _check_speed(task, bundle, targets, plan, notes, log)
    manifest = dict(bundle.manifest, reports={"parity": parity, "gate": gate, "speed": speed, "notes": notes})
    manifest["default_precision"] = _default_precisions(manifest, plan)
    write_manifest(root, manifest)
    return ExportResult(root, None, manifest, notes)


def _load_model(task: Task, checkpoint: str | None):
    try:
        return task.load_model(checkpoint)
    except NotImplementedError:
        return None  # a task that brings its own ONNX graphs


def _calibration_by_graph(task: Task, plan: ExportPlan, log: Log, dataset: Any = None) -> dict[str, list[dict[str, np.ndarray]]]:
    """INT8 calibration feeds per graph, from ``dataset`` (the user's ``--calibration`` items)
    or else the task's own data."""
    if "int8" not in plan.precisions:
        return {}
    log("collecting calibration data" + (f" from {_describe(dataset)}" if dataset is not None else ""))
    by_graph: dict[str, list[dict[str, np.ndarray]]] = {}
    for sample in task.calibration_data() if dataset is None else task.calibration_data(dataset=dataset):
        for name, feeds in sample.items():
            by_graph.setdefault(name, []).append(feeds)
    return by_graph


def _set_name(dataset: Any) -> str:
    """What a data set is called in reports: its ``EvalSet`` name, else the task's own set."""
    return getattr(dataset, "name", None) or "the task's validation set"


def _items(dataset: Any) -> int | None:
    return len(dataset) if hasattr(dataset, "__len__") else None


def _describe(dataset: Any) -> str:
    return f"{_set_name(dataset)} ({_items(dataset) if _items(dataset) is not None else 'unknown number of'} items)"


def _torch_artifact(graph: Graph, model, root: Path) -> list[dict[str, Any]]:
    """The reference weights, so the torch backend can rebuild the model from the bundle."""
    if graph.module is None or model is None:
        return []
    weights = root / "weights.safetensors"
    if not weights.exists():
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(weights))
    return [{"backend": "torch", "precision": "fp32", "files": {"weights": "weights.safetensors"}}]


def _graph_entry(graph: Graph, artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": graph.name,
        "inputs": [t.to_json() for t in graph.inputs],
        "outputs": [t.to_json() for t in graph.outputs],
        "state": [{"input": p.input, "output": p.output} for p in graph.state],
        "streaming": graph.streaming.to_json() if graph.streaming else None,
        "atol": graph.atol,
        "rtol": graph.rtol,
        "axes": {name: list(bounds) for name, bounds in graph.axes.items()},
        "artifacts": artifacts,
    }


def _manifest(task: Task, plan: ExportPlan, checkpoint, graphs, parity, notes) -> dict[str, Any]:
    plugin = registry.plugin_of(type(task))
    plugin_version = next((p["version"] for p in registry.plugin_info() if p["name"] == plugin), None)
    return {
        "format": "edgeaudio-bundle",
        "task": {"name": task.name, "version": task.version, "plugin": plugin, "plugin_version": plugin_version},
        "audio": {"sample_rate": task.sample_rate, "channels": task.channels, "array": _array_info(task)},
        "target": plan.profile,
        "graphs": graphs,
        "reports": {"parity": parity, "notes": notes},
        "provenance": _provenance(task, checkpoint),
    }


def _array_info(task: Task) -> dict[str, Any] | None:
    if not task.array:
        return None
    from edgeaudio.profiles import get_array

    profile, _ = get_array(task.array, live_devices=[])
    return {"name": profile.name, "positions": [list(p) for p in profile.positions]}


def _provenance(task: Task, checkpoint: str | None) -> dict[str, Any]:
    from importlib.metadata import version

    info: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": task.config,
        "checkpoint": Path(checkpoint).name if checkpoint else None,
        "checkpoint_sha256": sha256_file(checkpoint) if checkpoint else None,
        "host": f"{platform.system()} {platform.machine()}",
    }
    for package in ("edgeaudio", "torch", "onnx", "onnxruntime", "openvino", "nncf"):
        try:
            info[f"{package}_version"] = version(package)
        except Exception:
            continue
    return info


def _check_artifact_parity(task: Task, bundle: Bundle, graphs: list[Graph], targets, parity, log: Log) -> None:
    """Every artifact that runs here vs the reference on the example inputs; fp32 must be within
    tolerance. The reference is torch, or for a graph the task brought as ONNX (no torch module)
    that ONNX file run by ONNX Runtime, so those graphs are checked across backends instead."""
    runnable = {t.backend for t in targets.values() if t.runs_here} | {"torch"}
    for graph in graphs:
        reference, source = _reference_outputs(graph)
        spec = bundle.graph(graph.name)
        for artifact in spec["artifacts"]:
            backend, precision = artifact["backend"], artifact["precision"]
            if backend not in runnable or backend == "torch":
                continue
            runner = registered_backends()[backend]({}).load_graph(bundle, spec, artifact)
            report = compare_outputs(reference, runner.run(graph.example_inputs), graph.atol, graph.rtol)
            parity[graph.name][f"{backend}/{precision}"] = report
            bad = {n: r["max_abs"] for n, r in report.items() if not r["ok"]}
            if bad and precision == "fp32":
                raise ExportError(f"{backend}/fp32 output differs from {source} for '{graph.name}': {bad}")
            log(f"[{graph.name}] parity {backend}/{precision}: max |err| "
                + ", ".join(f"{n}={r['max_abs']:.2e}" for n, r in report.items()))


def _reference_outputs(graph: Graph) -> tuple[dict[str, np.ndarray], str]:
    """The outputs artifacts must match on the example inputs, and what produced them."""
    if graph.module is not None:
        return torch_outputs(graph, graph.example_inputs), "torch"
    ort = require("onnxruntime")
    session = ort.InferenceSession(str(graph.onnx_path), providers=["CPUExecutionProvider"])
    values = session.run(graph.output_names, {n: graph.example_inputs[n] for n in graph.input_names})
    return dict(zip(graph.output_names, values)), "the task's ONNX in onnxruntime"


def _apply_gate(task: Task, bundle: Bundle, targets, validation, notes: list[str], log: Log) -> dict[str, Any]:
    """Judge every lower-precision artifact on the task metric against the fp32 reference."""
    lower = sorted({(a["backend"], a["precision"]) for g in bundle.manifest["graphs"] for a in g["artifacts"] if a["precision"] != "fp32"})
    if not lower:
        return {}
    if task.gate is None:
        notes.append("no accuracy gate: the task declares no gate metric; lower precisions kept unjudged")
        return {}
    dataset = validation if validation is not None else task.validation_set()
    if dataset is None:
        notes.append("no accuracy gate: the task has no validation set; lower precisions kept unjudged")
        return {}
    from edgeaudio.runtime import BundleRunner

    gate = task.gate
    reference_backend = "torch" if any(a["backend"] == "torch" for a in bundle.manifest["graphs"][0]["artifacts"]) else "onnxruntime"
    log(f"gate: evaluating {reference_backend}/fp32 reference on {_describe(dataset)}")
    reference = task.evaluate(BundleRunner(bundle, task, registered_backends()[reference_backend]({}), "fp32"), dataset)
    reference = {name: float(value) for name, value in reference.items()}
    from edgeaudio.fingerprint import content_hash

    report: dict[str, Any] = {"gate": gate.to_json(), "dataset": {"name": _set_name(dataset), "items": _items(dataset)},
                              "reference": {"backend": reference_backend, **reference}, "candidates": {},
                              "validation_sha256": content_hash(dataset)}  # which data the verdicts come from
    proxies = {t.backend: getattr(t, "proxy_backend", None) for t in targets.values() if not t.runs_here}
    rejected: list[tuple[str, str]] = []
    for backend, precision in lower:
        run_as = proxies.get(backend, backend)
        if run_as != backend and precision != "int8":
            run_as = None  # the proxy runs the fp32 ONNX; only the QDQ graph carries its precision
        if run_as is None:
            notes.append(f"{backend}/{precision}: gate not measurable here; check on the device with `edgeaudio bench --validate`")
            continue
        log(f"gate: evaluating {backend}/{precision}" + (f" (as {run_as})" if run_as != backend else ""))
        metrics = task.evaluate(_runner_for(bundle, task, backend, run_as, precision), dataset)
        metrics = {name: float(value) for name, value in metrics.items()}
        drop = float(gate.drop(reference[gate.metric], metrics[gate.metric]))
        passed = drop <= gate.max_drop
        report["candidates"][f"{backend}/{precision}"] = {**metrics, "drop": drop, "passed": passed}
        if not passed:
            rejected.append((backend, precision))
            notes.append(
                f"{backend}/{precision} rejected: {gate.metric} drop {drop:.4g} > {gate.max_drop}; falls back to a safer precision"
            )
        log(f"gate: {backend}/{precision} {gate.metric}={metrics[gate.metric]:.4g} drop {drop:.4g} -> {'kept' if passed else 'REJECTED'}")
    _drop_artifacts(bundle, rejected)
    return report


def _runner_for(bundle: Bundle, task: Task, backend: str, run_as: str, precision: str):
    """A runner for ``backend``'s artifacts, executed by ``run_as`` when that differs (TensorRT's
    INT8 QDQ ONNX is judged through ONNX Runtime on hosts without a GPU)."""
    from edgeaudio.runtime import BundleRunner

    cls = registered_backends()[run_as]
    if run_as == backend:
        return BundleRunner(bundle, task, cls({}), precision)

    class _Proxy(cls):  # reads the other backend's artifacts, which are ONNX files
        artifact = backend

    return BundleRunner(bundle, task, _Proxy({}), precision)


def _drop_artifacts(bundle: Bundle, rejected: list[tuple[str, str]]) -> None:
    for graph in bundle.manifest["graphs"]:
        kept = []
        for artifact in graph["artifacts"]:
            if (artifact["backend"], artifact["precision"]) in rejected:
                for relative in artifact["files"].values():
                    (bundle.root / relative).unlink(missing_ok=True)
            else:
                kept.append(artifact)
        graph["artifacts"] = kept


def _default_precisions(manifest: dict[str, Any], plan: ExportPlan) -> dict[str, str]:
    """Per backend, the first precision of the target profile's order that the bundle kept,
    passing over one the speed check found no faster than fp32."""
    from edgeaudio.profiles import get_target

    order = list(get_target(plan.profile)[0].precisions) + ["fp32", "fp16", "int8"]
    slow = {name for name, row in manifest["reports"].get("speed", {}).get("candidates", {}).items() if not row["faster"]}
    have: dict[str, set[str]] = {}
    for graph in manifest["graphs"]:
        for artifact in graph["artifacts"]:
            have.setdefault(artifact["backend"], set()).add(artifact["precision"])
    return {backend: next(p for p in order if p in precisions and f"{backend}/{p}" not in slow)
            for backend, precisions in have.items()}


def _check_speed(task: Task, bundle: Bundle, targets, plan: ExportPlan, notes: list[str], log: Log) -> dict[str, Any]:
    """Beside the accuracy gate: is each lower precision that passed it faster than fp32 on the
    same backend? Timed on the task's own work, candidates interleaved (``runtime.measure_candidates``),
    on this host, so only for a bundle exported for this host's profile. A precision that is not
    at least ``SPEED_MARGIN`` faster stays in the bundle (``--precision`` takes it) but is not the
    backend's default; ``edgeaudio run`` with ``auto`` measures again wherever it runs."""
    from edgeaudio.profiles import this_host
    from edgeaudio.runtime import measure_candidates

    host = this_host()[0].name
    if plan.profile != host:
        return {"skipped": f"exported for {plan.profile} on a {host} host: speed is measured where the bundle runs"}
    registered, runnable = registered_backends(), {t.backend for t in targets.values() if t.runs_here}
    lower = sorted({(a["backend"], a["precision"]) for g in bundle.manifest["graphs"] for a in g["artifacts"]
                    if a["precision"] != "fp32" and a["backend"] in runnable and a["backend"] in registered})
    if not lower:
        return {}
    backends = sorted({backend for backend, _ in lower})
    candidates = [(registered[b], p) for b in backends for p in ["fp32", *(p for x, p in lower if x == b)]]
    log(f"speed: timing {', '.join(f'{cls.name}/{p}' for cls, p in candidates)} on the task's own work")
    rows, probe = measure_candidates(bundle, task, candidates, {}, rounds=5)
    ms = {f"{r['backend']}/{r['precision']}": r.get("ms") for r in rows}
    report: dict[str, Any] = {"probe": probe, "host": host, "margin": SPEED_MARGIN, "ms": ms, "candidates": {}}
    for backend, precision in lower:
        name, reference = f"{backend}/{precision}", ms.get(f"{backend}/fp32")
        if ms.get(name) is None or reference is None:
            notes.append(f"{name}: speed not measured (it did not run here)")
            continue
        ratio = round(ms[name] / reference, 3)  # the verdict is taken on the figure the manifest shows
        faster = ratio <= 1 - SPEED_MARGIN
        report["candidates"][name] = {"ms": ms[name], "vs_fp32": ratio, "faster": faster}
        if not faster:
            notes.append(f"{name} is not faster than fp32 here ({ratio:.2f}x its time on {probe}): "
                         f"kept, but not the default precision of {backend}")
        log(f"speed: {name} {ms[name]:.3g} ms vs fp32 {reference:.3g} ms ({ratio:.2f}x) -> {'faster' if faster else 'NOT faster'}")
    return report
