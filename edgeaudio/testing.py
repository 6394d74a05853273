"""The conformance suite: what every task plugin must do so the core can export, stream and ship it.

A plugin runs it from its own tests, all checks in one call::

    from edgeaudio.testing import check_task

    def test_conformance(tmp_path):
        check_task("mytask", tmp_dir=tmp_path)

or as one pytest test per check, so a failure names the check that broke::

    from edgeaudio.testing import conformance_tests

    test_conformance = conformance_tests("mytask")

The task may be given by name (an installed plugin) or as its class (registered for the duration
of each check, so a plugin can test itself before it is installed). Each check raises
``AssertionError`` saying what is wrong and where. The checks, in order (``CHECKS``):

- ``metadata``: name, version, description, sample rate, channels (and array, when set) are usable.
- ``graphs``: every graph is consistent: a torch module or an ONNX file, example inputs for
  every declared input with the declared rank and fixed sizes, state pairs and streaming
  declarations that name real inputs and outputs.
- ``export_parity``: the export pipeline builds every requested backend and precision, and each
  fp32 artifact matches the reference (torch, or ONNX Runtime on the task's own ONNX file).
- ``stream_equals_session``: on every backend and precision, chunked streaming gives the same raw
  outputs as one whole-clip call, for chunk sizes that do and do not divide the block.
- ``bundle_round_trip``: every file is hashed in the manifest, the ``.eab`` archive loads and gives
  identical outputs, and a modified file is refused.
- ``bad_input``: wrong sample rate, wrong channel count, empty audio and NaN raise
  ``AudioInputError`` from both ``Session.process`` and ``Stream.accept``.
- ``decode_schema``: decoded results pass strict ``json.dumps`` and keep one schema across chunks
  and the offline result.

The audio it feeds is the streaming graph's example audio (the task chose it to be representative);
tasks without a streaming graph get a second of seeded noise.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from edgeaudio.errors import AudioInputError, BundleError, EdgeAudioError
from edgeaudio.hookspecs import hookimpl
from edgeaudio.task import Graph, MetricGate, Task

CHECKS = (
    "metadata",
    "graphs",
    "export_parity",
    "stream_equals_session",
    "bundle_round_trip",
    "bad_input",
    "decode_schema",
)
TASK_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
EXAMPLE_PROMPT = "a horn honks twice"  # what the checks generate from, for text-to-audio tasks
PROFILE = "x86-cpu"  # the profile whose backends (ONNX Runtime, OpenVINO) run on any x86 CI machine


@dataclass
class ConformanceReport:
    """What passed, with one line of detail and the seconds each check took."""

    task: str
    bundle: Path | None
    passed: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"task '{self.task}' conforms ({len(self.passed)} checks):"]
        lines += [f"  {name}: {detail} ({self.seconds[name]:.1f} s)" for name, detail in self.passed.items()]
        return "\n".join(lines)


def check_task(
    task_name_or_class: str | type[Task],
    config: Mapping[str, Any] | None = None,
    tmp_dir: str | Path | None = None,
    backends: Sequence[str] = ("onnxruntime", "openvino"),
    precisions: Sequence[str] = ("fp32",),
) -> ConformanceReport:
    """Run every check in order; raise AssertionError on the first failure.

    ``tmp_dir`` receives the exported bundle (a temporary directory, removed afterwards, when
    None). ``backends`` are the runtime backends to build and run; ``precisions`` the precisions
    to build (fp32 is always built: it is the reference and the fallback).
    """
    with _work_dir(tmp_dir) as work:
        suite = Conformance(task_name_or_class, config, work, backends, precisions)
        for check in CHECKS:
            suite.run(check)
        return suite.report


def conformance_tests(
    task_name_or_class: str | type[Task],
    config: Mapping[str, Any] | None = None,
    backends: Sequence[str] = ("onnxruntime", "openvino"),
    precisions: Sequence[str] = ("fp32",),
):
    """A pytest test function parametrized over ``CHECKS``; assign it to a ``test_*`` name.

    The bundle is exported once, under pytest's temporary directory, and shared by the checks.
    """
    import pytest

    suites: dict[str, Conformance] = {}

    @pytest.mark.parametrize("check", CHECKS)
    def test_conformance(check: str, tmp_path_factory) -> None:
        if "suite" not in suites:
            work = tmp_path_factory.mktemp("conformance")
            suites["suite"] = Conformance(task_name_or_class, config, work, backends, precisions)
        suites["suite"].run(check)

    return test_conformance


@contextmanager
def _work_dir(tmp_dir: str | Path | None) -> Iterator[Path]:
    if tmp_dir is not None:
        path = Path(tmp_dir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="edgeaudio-conformance-") as path:
        yield Path(path)


class Conformance:
    """The checks for one task; the exported bundle is shared between them and built once."""

    def __init__(self, task_name_or_class, config, work: Path, backends: Sequence[str], precisions: Sequence[str]):
        self.task_ref = task_name_or_class
        self.config = dict(config or {})
        self.work = Path(work)
        self.backends = list(backends)
        self.precisions = list(dict.fromkeys(["fp32", *precisions]))
        name = task_name_or_class if isinstance(task_name_or_class, str) else task_name_or_class.name
        self.report = ConformanceReport(task=name, bundle=None)
        self._export_error: str | None = None
        self._example: tuple[np.ndarray, int] | None = None

    def run(self, check: str) -> str:
        """Run one check by name; returns its one-line detail and records it in ``report``."""
        if check not in CHECKS:
            raise ValueError(f"unknown check '{check}'; checks are {', '.join(CHECKS)}")
        start = time.perf_counter()
        with _registered(self.task_ref):
            detail = getattr(self, f"_check_{check}")(self._task())
        self.report.passed[check] = detail
        self.report.seconds[check] = time.perf_counter() - start
        return detail

    def _task(self) -> Task:
        from edgeaudio.tasks import get_task

        return get_task(self.report.task, self.config)

    # -- checks ---------------------------------------------------------------------------------
    def _check_metadata(self, task: Task) -> str:
        where = f"{type(task).__module__}.{type(task).__name__}"
        _require(isinstance(task.name, str) and TASK_NAME.match(task.name),
                 f"{where}.name {task.name!r} must be lowercase letters, digits, '-' or '_' (it is a CLI argument)")
        _require(isinstance(task.version, str) and task.version.strip(),
                 f"{where}.version must be a non-empty string (bundles record it; bump it when graphs change meaning)")
        _require(isinstance(task.description, str) and task.description.strip(),
                 f"{where}.description must say in one line what the task does (`edgeaudio doctor` lists it)")
        _require(_positive_int(task.sample_rate), f"{where}.sample_rate must be a positive int, got {task.sample_rate!r}")
        _require(_positive_int(task.channels), f"{where}.channels must be a positive int, got {task.channels!r}")
        _require(task.gate is None or isinstance(task.gate, MetricGate),
                 f"{where}.gate must be an edgeaudio.task.MetricGate or None, got {task.gate!r}")
        _require(task.inputs in ("audio", "text"), f"{where}.inputs must be 'audio' or 'text', got {task.inputs!r}")
        _require(task.inputs == "audio" or type(task).generate is not Task.generate,
                 f"{where}.inputs is 'text' but the task does not override generate()")
        if task.array:
            from edgeaudio.profiles import get_array

            mics = get_array(task.array, live_devices=[])[0].num_mics
            _require(mics == task.channels, f"{where}.array '{task.array}' has {mics} mics but channels is {task.channels}")
        return f"{task.name} v{task.version}, {task.sample_rate} Hz, {task.channels} channel(s)"

    def _check_graphs(self, task: Task) -> str:
        graphs = _graphs_of(task)
        _require(graphs, f"task '{task.name}' graphs() returned no graphs")
        names = [g.name for g in graphs]
        _require(len(set(names)) == len(names), f"task '{task.name}' has duplicate graph names: {names}")
        for graph in graphs:
            _check_graph(task, graph)
        streaming = [g.name for g in graphs if g.streaming]
        return f"{len(graphs)} graph(s) {names}; streaming: {streaming or 'none'}"

    def _check_export_parity(self, task: Task) -> str:
        bundle = self._bundle(task)
        parity = bundle.manifest["reports"]["parity"]
        lines = []
        for graph in bundle.manifest["graphs"]:
            report = parity.get(graph["name"], {})
            for backend in self.backends:
                key = f"{backend}/fp32"
                _require(key in report, f"graph '{graph['name']}': no parity report for {key} (reports: {sorted(report)})")
                bad = {out: r["max_abs"] for out, r in report[key].items() if not r["ok"]}
                _require(not bad, f"graph '{graph['name']}': {key} differs from the reference beyond tolerance: {bad}")
                worst = max((r["max_abs"] for r in report[key].values()), default=0.0)
                lines.append(f"{graph['name']} {key} max|err| {worst:.1e}")
        return "; ".join(lines)

    def _check_stream_equals_session(self, task: Task) -> str:
        from edgeaudio.exporters.onnx import compare_outputs
        from edgeaudio.runtime import load

        bundle = self._bundle(task)
        spec = _streaming_spec(bundle.manifest)
        if spec is None:
            return "no streaming graph: nothing to compare"
        audio, rate = self._audio(task)
        block = spec["streaming"]["block"]
        checked = []
        for backend, precision in self._artifacts(bundle):
            session = load(bundle, backend=backend, precision=precision)
            offline = session.process_raw(audio, rate)
            for chunk in _chunk_sizes(block):
                streamed = _stream_raw(session, audio, rate, chunk)
                report = compare_outputs(offline, streamed, spec["atol"], spec["rtol"])
                bad = {name: r.get("shape", r["max_abs"]) for name, r in report.items() if not r["ok"]}
                _require(not bad, f"{backend}/{precision}: streaming in chunks of {chunk} samples differs from "
                                  f"Session.process_raw: {bad} (atol {spec['atol']}, rtol {spec['rtol']})")
            checked.append(f"{backend}/{precision}")
        return f"{', '.join(checked)}; chunks {_chunk_sizes(block)} samples"

    def _check_bundle_round_trip(self, task: Task) -> str:
        from edgeaudio.bundle import MANIFEST, load_bundle, sha256_file
        from edgeaudio.runtime import load

        bundle = self._bundle(task)
        on_disk = {p.relative_to(bundle.root).as_posix() for p in bundle.root.rglob("*") if p.is_file()} - {MANIFEST}
        listed = set(bundle.manifest["files"])
        _require(on_disk == listed, f"bundle files and manifest disagree: unlisted {sorted(on_disk - listed)}, "
                                    f"missing {sorted(listed - on_disk)}")
        for relative, digest in bundle.manifest["files"].items():
            _require(sha256_file(bundle.root / relative) == digest, f"bundle file {relative} does not match its sha256")
        archive = bundle.root.with_suffix(".eab")
        _require(archive.is_file(), f"the export wrote no archive at {archive}")
        unpacked = load_bundle(archive, extract_to=self.work / "unpacked")
        _require(unpacked.manifest == bundle.manifest, "the archive's manifest differs from the directory's")
        backend, precision = self.backends[0], "fp32"
        direct = self._example_raw(task, load(bundle, backend=backend, precision=precision))
        packed = self._example_raw(task, load(unpacked, backend=backend, precision=precision))
        for name, value in direct.items():
            _require(np.array_equal(value, packed[name]), f"output '{name}' differs between the directory and the .eab archive")
        _require_tamper_refused(bundle, self.work / "tampered")
        return f"{len(listed)} files hashed; .eab ({archive.stat().st_size} bytes) loads identically; tampering refused"

    def _check_bad_input(self, task: Task) -> str:
        from edgeaudio.runtime import load

        if task.inputs == "text":
            return "not applicable: the task takes a text prompt, not audio"
        bundle = self._bundle(task)
        session = load(bundle, backend=self.backends[0], precision="fp32")
        audio, rate = self._audio(task)
        cases = {
            f"{rate * 2} Hz audio (task expects {rate} Hz)": (audio, rate * 2),
            f"{task.channels + 1} channels (task expects {task.channels})": (np.concatenate([audio, audio[:1]]), rate),
            "empty audio (0 samples)": (audio[:, :0], rate),
            "audio containing NaN": (np.where(np.arange(audio.shape[1]) % 7 == 0, np.nan, audio).astype(np.float32), rate),
        }
        for what, (bad, bad_rate) in cases.items():
            _require_refused(f"Session.process with {what}", session.process, bad, bad_rate)
            _require_refused(f"{type(session.stream()).__name__}.accept with {what}", session.stream().accept, bad, bad_rate)
        return "; ".join(cases)

    def _check_decode_schema(self, task: Task) -> str:
        from edgeaudio.runtime import load

        if task.inputs == "text":
            return "not applicable: the task's results carry generated audio"
        bundle = self._bundle(task)
        session = load(bundle, backend=self.backends[0], precision="fp32")
        audio, rate = self._audio(task)
        offline = session.process(audio, rate)
        schema = _schema(_json_checked(offline, "Session.process result"))
        results = []
        if _streaming_spec(bundle.manifest) is not None:
            stream = session.stream()
            chunk = _chunk_sizes(stream.block)[0]
            for offset in range(0, audio.shape[1], chunk):
                results += stream.accept(audio[:, offset : offset + chunk], rate)
            results += stream.flush()
        for index, result in enumerate(results):
            found = _schema(_json_checked(result, f"streamed result #{index}"))
            schema = _merge(schema, found, f"streamed result #{index} vs earlier results")
        return f"offline and {len(results)} streamed result(s) share schema {_describe(schema)}"

    # -- shared state ---------------------------------------------------------------------------
    def _bundle(self, task: Task):
        """The task exported once for ``PROFILE`` with the requested backends and precisions."""
        from edgeaudio.bundle import load_bundle

        if self._export_error:
            raise AssertionError(f"export failed in an earlier check: {self._export_error}")
        if self.report.bundle is None:
            try:
                self.report.bundle = self._export(task)
            except (EdgeAudioError, AssertionError) as exc:
                self._export_error = f"{type(exc).__name__}: {exc}" + (f" (hint: {exc.hint})" if getattr(exc, "hint", None) else "")
                raise AssertionError(self._export_error) from exc
        return load_bundle(self.report.bundle)

    def _export(self, task: Task) -> Path:
        from edgeaudio.backends.base import backends as registered_backends
        from edgeaudio.exporters.pipeline import export_task, plan_export

        for name in self.backends:
            cls = registered_backends().get(name)
            _require(cls is not None, f"backend '{name}' is not registered (see `edgeaudio plugins`)")
            ok, why = cls.available()
            _require(ok, f"backend '{name}' cannot run here ({why}); install it or pass backends without it")
        plan, _ = plan_export(PROFILE, self.precisions, self.backends)
        out = self.work / f"{task.name}-bundle"
        export_task(task, plan, out, archive=True, log=lambda message: None)
        return out

    def _artifacts(self, bundle) -> list[tuple[str, str]]:
        """(backend, precision) pairs built for every graph; a precision the gate dropped is skipped."""
        have = set(bundle.artifacts())
        return [(b, p) for b in self.backends for p in self.precisions if (b, p) in have]

    def _example_raw(self, task: Task, session) -> dict[str, np.ndarray]:
        """Raw outputs for the example input: the example audio, or for text tasks a fixed prompt."""
        if task.inputs == "text":
            return task.generate(session.runner, EXAMPLE_PROMPT, seed=0)
        return session.process_raw(*self._audio(task))

    def _audio(self, task: Task) -> tuple[np.ndarray, int]:
        """The audio every check feeds, taken once (building the graphs may load a model)."""
        if self._example is None:
            self._example = _example_audio(task)
        return self._example


# -- helpers ------------------------------------------------------------------------------------


def _example_audio(task: Task) -> tuple[np.ndarray, int]:
    """The streaming graph's example audio, its last block left partial to exercise padding."""
    streaming = next((g for g in _graphs_of(task) if g.streaming), None)
    if streaming is None:
        rng = np.random.default_rng(0)
        return (0.1 * rng.standard_normal((task.channels, task.sample_rate))).astype(np.float32), task.sample_rate
    audio = np.asarray(streaming.example_inputs[streaming.streaming.audio_input][0], dtype=np.float32)
    block = streaming.streaming.block
    if audio.shape[1] > block:
        audio = audio[:, : audio.shape[1] - block // 3]
    return np.ascontiguousarray(audio), task.sample_rate


@contextmanager
def _registered(task_ref: str | type[Task]) -> Iterator[None]:
    """Register a task class given directly (not installed) for the duration of one check."""
    from edgeaudio import registry
    from edgeaudio.tasks import task_classes

    if isinstance(task_ref, str):
        yield
        return
    existing = task_classes().get(task_ref.name)
    if existing is task_ref:
        yield
        return
    if existing is not None:
        raise AssertionError(f"task name '{task_ref.name}' is already taken by {existing.__module__}.{existing.__qualname__}")
    plugin_name = f"conformance:{task_ref.name}"
    registry.register(_InlinePlugin(task_ref), plugin_name)
    try:
        yield
    finally:
        registry.unregister(plugin_name)


class _InlinePlugin:
    """A one-task plugin object, as a test would register it."""

    def __init__(self, task_class: type[Task]):
        self.task_class = task_class

    @hookimpl
    def register_tasks(self, register):
        register(self.task_class)


def _require(condition: Any, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _graphs_of(task: Task) -> list[Graph]:
    """The task's graphs as the export pipeline sees them (no torch model for a task that brings ONNX)."""
    try:
        model = task.load_model()
    except NotImplementedError:
        model = None
    return task.graphs(model)


def _check_graph(task: Task, graph: Graph) -> None:
    where = f"graph '{graph.name}'"
    if graph.module is None:
        _require(graph.onnx_path and Path(graph.onnx_path).is_file(),
                 f"{where} has no torch module and its onnx_path {graph.onnx_path!r} is not a file")
    inputs = {spec.name: spec for spec in graph.inputs}
    outputs = {spec.name: spec for spec in graph.outputs}
    _require(set(graph.example_inputs) == set(inputs),
             f"{where}: example_inputs {sorted(graph.example_inputs)} must match inputs {sorted(inputs)}")
    for name, spec in inputs.items():
        value = graph.example_inputs[name]
        _require(isinstance(value, np.ndarray) and value.dtype == np.dtype(spec.dtype),
                 f"{where}: example input '{name}' must be a numpy {spec.dtype} array, got {type(value).__name__} "
                 f"{getattr(value, 'dtype', '')}")
        _require(value.ndim == len(spec.shape), f"{where}: example input '{name}' has rank {value.ndim}, spec {spec.shape}")
        for axis, (dim, size) in enumerate(zip(spec.shape, value.shape)):
            _require(isinstance(dim, str) or dim == size,
                     f"{where}: example input '{name}' axis {axis} is {size}, spec says {dim} ({spec.shape})")
    for pair in graph.state:
        _require(pair.input in inputs and pair.output in outputs,
                 f"{where}: state pair {pair.input} <- {pair.output} must name an input and an output")
        dynamic = [d for d in inputs[pair.input].shape if isinstance(d, str) and d != "batch"]
        _require(not dynamic, f"{where}: state input '{pair.input}' has dynamic axes {dynamic}; only 'batch' may be")
    if graph.streaming:
        _check_streaming(task, graph, inputs, outputs)


def _check_streaming(task: Task, graph: Graph, inputs, outputs) -> None:
    where, streaming = f"graph '{graph.name}'", graph.streaming
    audio = inputs.get(streaming.audio_input)
    _require(audio is not None, f"{where}: streaming audio_input '{streaming.audio_input}' is not an input")
    _require(len(audio.shape) == 3, f"{where}: audio input must be [batch, channels, samples], spec {audio.shape}")
    _require(isinstance(audio.shape[1], str) or audio.shape[1] == task.channels,
             f"{where}: audio input has {audio.shape[1]} channels, task has {task.channels}")
    _require(_positive_int(streaming.block), f"{where}: streaming block must be a positive int")
    example = graph.example_inputs[streaming.audio_input]
    _require(example.shape[2] % streaming.block == 0 and example.shape[2] >= 2 * streaming.block,
             f"{where}: example audio must be at least two whole blocks of {streaming.block} samples, got {example.shape[2]}")
    frames = set(outputs) - {pair.output for pair in graph.state}
    unknown = set(streaming.time_axes) - frames
    _require(not unknown, f"{where}: time_axes name outputs that are not frame outputs: {sorted(unknown)}")


def _streaming_spec(manifest: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((g for g in manifest["graphs"] if g.get("streaming")), None)


def _chunk_sizes(block: int) -> list[int]:
    """A size that divides nothing, one block, and several blocks plus one sample."""
    return [37, block, 3 * block + 1]


def _stream_raw(session, audio: np.ndarray, rate: int, chunk: int) -> dict[str, np.ndarray]:
    stream = session.stream()
    for offset in range(0, audio.shape[1], chunk):
        stream.accept(audio[:, offset : offset + chunk], rate)
    stream.flush()
    return stream.outputs()


def _require_refused(what: str, call, *args) -> None:
    try:
        call(*args)
    except AudioInputError:
        return
    except Exception as exc:
        raise AssertionError(f"{what} raised {type(exc).__name__} ({exc}), expected edgeaudio.errors.AudioInputError") from exc
    raise AssertionError(f"{what} was accepted; it must raise edgeaudio.errors.AudioInputError")


def _require_tamper_refused(bundle, copy: Path) -> None:
    from edgeaudio.bundle import load_bundle

    shutil.copytree(bundle.root, copy)
    victim = copy / next(iter(bundle.manifest["files"]))
    victim.write_bytes(victim.read_bytes() + b"\0")
    try:
        load_bundle(copy)
    except BundleError:
        return
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    raise AssertionError("a bundle with a modified file loaded; its sha256 was not verified")


def _json_checked(value: Any, what: str) -> Any:
    """``value`` after a strict JSON round trip (no NaN, no numpy types), or AssertionError."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{what} is not JSON-serialisable ({exc}); decode() must return plain "
                             f"dicts, lists, str, int, float, bool or None: {str(value)[:200]}") from exc


# A schema is a type name, ("list", element schema or None when empty) or ("dict", {key: schema}).
def _schema(value: Any) -> Any:
    if isinstance(value, dict):
        return ("dict", {key: _schema(item) for key, item in value.items()})
    if isinstance(value, list):
        element = None
        for index, item in enumerate(value):
            element = _merge(element, _schema(item), f"list element {index}")
        return ("list", element)
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "null" if value is None else type(value).__name__


def _merge(a: Any, b: Any, where: str) -> Any:
    """One schema covering both; an empty list fits any list. Otherwise they must be equal."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, tuple) and isinstance(b, tuple) and a[0] == b[0] == "list":
        return ("list", _merge(a[1], b[1], f"{where}, list elements"))
    if isinstance(a, tuple) and isinstance(b, tuple) and a[0] == b[0] == "dict":
        _require(a[1].keys() == b[1].keys(), f"decode schema differs at {where}: keys {sorted(a[1])} vs {sorted(b[1])}")
        return ("dict", {key: _merge(a[1][key], b[1][key], f"{where}, key '{key}'") for key in a[1]})
    _require(a == b, f"decode schema differs at {where}: {_describe(a)} vs {_describe(b)}")
    return a


def _describe(schema: Any) -> str:
    if isinstance(schema, tuple) and schema[0] == "list":
        return f"[{_describe(schema[1]) if schema[1] is not None else ''}]"
    if isinstance(schema, tuple):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in schema[1].items()) + "}"
    return str(schema)
