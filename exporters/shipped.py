"""The bundles the package ships: a task's shipped weights as fp32 ONNX Runtime graphs, so that
``edgeaudio run TASK`` works on a base install (no torch) from the very first run.

A shipped bundle lies beside its weights as an xz-compressed ``.eab`` archive named after them
(e.g. ``plugins/seld/weights/seld-respeaker-4mic.eab``; a bundle archive is a tar, read
compressed or not). ``edgeaudio.api.default_bundle`` uses it while the checkpoint hash its
manifest records is the weights' own, and exports the weights into the cache otherwise (which
needs torch). Maintainers rewrite the bundles after changing weights or graphs::

    python -m edgeaudio.exporters.shipped [TASK ...]      # default: every task that ships weights

``tests/test_shipped_bundles.py`` re-exports each one from its weights and checks that the
shipped graphs still match. Weights that are exactly representable in fp16 (text-to-audio's,
stored as fp16) are stored that way in the graph and cast to fp32 when it loads: the graph
computes exactly what the fp32 graph computes, in half the bytes.
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from edgeaudio.bundle import MANIFEST, load_bundle, pack_archive, write_manifest
from edgeaudio.errors import EdgeAudioError, ExportError, UsageError, report, require
from edgeaudio.exporters.pipeline import export_task, plan_export
from edgeaudio.task import Task

Log = Callable[[str], None]
BACKEND, PRECISION = "onnxruntime", "fp32"
PROFILE = "x86-cpu"  # where the graphs are checked against torch; fp32 ONNX runs on every CPU profile
MIN_COMPACT_ELEMENTS = 1024  # smaller tensors stay fp32: a Cast node would cost more than it saves


def shipped_location(checkpoint: str | Path) -> Path:
    """Where the bundle of ``checkpoint`` ships: beside it, named after it."""
    return Path(checkpoint).with_suffix(".eab")


def write_shipped_bundle(task: Task, log: Log = print, target: Path | None = None) -> Path:
    """Export ``task``'s default checkpoint to fp32 ONNX Runtime graphs, checked against torch,
    and write them as the bundle archive that ships beside the checkpoint (replacing any older
    one), or at ``target`` (the drift test's fresh copy)."""
    checkpoint = task.default_checkpoint()
    if checkpoint is None:
        raise UsageError(f"task '{task.name}' ships no weights for its config, so no bundle to ship")
    target = Path(target) if target is not None else shipped_location(checkpoint)
    plan, _ = plan_export(PROFILE, precisions=[PRECISION], backends=[BACKEND])
    with tempfile.TemporaryDirectory(prefix=".ship-", dir=target.parent) as tmp:
        staging = Path(tmp) / "bundle"
        export_task(task, plan, staging, checkpoint=checkpoint, log=log)
        examples = {graph.name: graph.example_inputs for graph in task.graphs(task.load_model(checkpoint))}
        _keep_only_runtime_graphs(staging, examples)
        unpacked = _size(staging)
        tar = pack_archive(staging, Path(tmp) / "bundle.tar")
        packed = Path(tmp) / target.name
        packed.write_bytes(lzma.compress(tar.read_bytes(), preset=9 | lzma.PRESET_EXTREME))
        packed.chmod(0o644)
        packed.replace(target)
        with tempfile.TemporaryDirectory() as check:
            load_bundle(target, extract_to=Path(check) / "bundle")  # unpacks, and every hash verifies
    log(f"shipped bundle: {target} ({target.stat().st_size / 1e6:.2f} MB, {unpacked / 1e6:.2f} MB unpacked)")
    return target


def _keep_only_runtime_graphs(root: Path, examples: dict[str, dict[str, np.ndarray]]) -> None:
    """Drop the torch reference (a copy of the weights, which ship beside the bundle anyway),
    store the graphs' weights compactly (checked on each graph's example inputs) and re-hash
    the manifest."""
    manifest = json.loads((root / MANIFEST).read_text())
    for graph in manifest["graphs"]:
        graph["artifacts"] = [a for a in graph["artifacts"] if (a["backend"], a["precision"]) == (BACKEND, PRECISION)]
        for artifact in graph["artifacts"]:
            compact_initializers(root / artifact["files"]["model"], examples[graph["name"]])
    (root / "weights.safetensors").unlink(missing_ok=True)
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()  # the export's scratch folder for the plain ONNX
    manifest["default_precision"] = {BACKEND: PRECISION}
    write_manifest(root, {k: v for k, v in manifest.items() if k not in ("files", "schema_version")})


def compact_initializers(path: Path, feeds: dict[str, np.ndarray]) -> None:
    """Store every float initializer that fp16 holds exactly as fp16, cast back to fp32 as the
    graph loads (ONNX Runtime folds the casts). The outputs on ``feeds`` are checked to be
    bit-identical."""
    onnx = require("onnx")
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    casts = []
    for index, initializer in enumerate(graph.initializer):
        if initializer.data_type != onnx.TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(initializer)
        half = values.astype(np.float16)
        if values.size < MIN_COMPACT_ELEMENTS or not np.array_equal(half.astype(np.float32), values):
            continue
        name = initializer.name
        graph.initializer[index].CopyFrom(numpy_helper.from_array(half, f"{name}.fp16"))
        casts.append(helper.make_node("Cast", [f"{name}.fp16"], [name], to=onnx.TensorProto.FLOAT, name=f"/compact/{name}"))
    if not casts:
        return
    original = path.with_suffix(".fp32-reference.onnx")
    path.rename(original)
    try:
        nodes = casts + list(graph.node)  # before every use: the graph stays topologically sorted
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        _check_identical(original, path, feeds)
    finally:
        original.unlink(missing_ok=True)


def _check_identical(reference: Path, candidate: Path, feeds: dict[str, np.ndarray]) -> None:
    ort = require("onnxruntime")
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (reference, candidate)]
    want, got = (s.run(None, feeds) for s in sessions)
    if not all(np.array_equal(a, b, equal_nan=True) for a, b in zip(want, got)):
        raise ExportError(f"{candidate.name}: fp16-stored weights changed the graph's outputs")


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def shipping_tasks(names: list[str]) -> list[Task]:
    """Every configuration of the named tasks that has shipped weights: the default one, and for
    a task trained per microphone array, one per array profile it ships weights for."""
    from edgeaudio.profiles import ArrayProfile, load_profiles
    from edgeaudio.tasks import get_task

    found = []
    for name in names:
        task = get_task(name)
        configs = [{"array": p.name} for p in load_profiles().values() if isinstance(p, ArrayProfile)] if task.per_array else [None]
        for config in configs:
            candidate = get_task(name, config) if config else task
            if candidate.default_checkpoint() is not None:
                found.append(candidate)
    return found


def main(argv: list[str] | None = None) -> int:
    from edgeaudio.tasks import task_classes

    parser = argparse.ArgumentParser(prog="python -m edgeaudio.exporters.shipped", description=__doc__.split("\n")[0])
    parser.add_argument("tasks", nargs="*", help="tasks to write (default: every installed task that ships weights)")
    args = parser.parse_args(argv)
    try:
        for task in shipping_tasks(args.tasks or sorted(task_classes())):
            write_shipped_bundle(task, log=lambda message: print(message, file=sys.stderr))
    except EdgeAudioError as exc:
        return report(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
