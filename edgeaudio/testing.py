"""The conformance suite: what every task plugin must do so the core can export, run and ship it.

A plugin runs it from its own tests, all checks in one call::

    from edgeaudio.testing import check_task

    def test_conformance(tmp_path):
        check_task("mytask", tmp_dir=tmp_path)

or as one pytest test per check, so a failure names the check that broke::

    from edgeaudio.testing import conformance_tests

    test_conformance = conformance_tests("mytask")

The task may be given by name (an installed plugin) or as its class (registered for the duration
of each check, so a plugin can test itself before it is installed). Each check raises
``AssertionError`` saying what is wrong and where.

Which checks a task gets follows from its declared capabilities (``Task.input_kind`` and
``Task.result_kind``; ``checks_for`` lists them); a check that does not fit a capability is not
run for it (nor collected, with ``conformance_tests``), and asking for it is an error, never a
pass. The checks, by the capabilities they fit (``CHECKS`` is the order they run in):

Every task:

- ``metadata``: name, version, description, sample rate, channels (and array, when set) are
  usable; the capabilities are an ``InputKind`` and a ``ResultKind`` and the task implements what
  they promise (``generate`` for TEXT, ``results_to_audio`` for WAVEFORM, ``classes`` for EVENTS).
- ``graphs``: every graph is consistent: a torch module or an ONNX file, example inputs for
  every declared input with the declared rank and fixed sizes, state pairs and streaming
  declarations that name real inputs and outputs; one streaming graph for a STREAM task, none
  for CLIP and TEXT tasks (the runtime would stream them otherwise).
- ``export_parity``: the export pipeline builds every requested backend and precision, and each
  fp32 artifact matches the reference (torch, or ONNX Runtime on the task's own ONNX file).
- ``bundle_round_trip``: every file is hashed in the manifest, the ``.eab`` archive loads and gives
  identical outputs, and a modified file is refused.

STREAM tasks (audio in chunks through a streaming graph):

- ``stream_equals_session``: on every backend and precision, chunked streaming gives the same raw
  outputs as one whole-clip call, for chunk sizes that do and do not divide the block.

CLIP tasks (whole clips; live input runs them once per window):

- ``clip_lengths``: on every backend and precision, clips of two lengths give finite raw outputs
  and decoded results of one schema (no graph is fixed to the example's length).
- ``window_equals_clip``: live (windowed) results are the whole-clip results of the same windows,
  with their start and end times, whatever the chunking of the input.

STREAM and CLIP tasks (audio in):

- ``bad_input``: wrong sample rate, wrong channel count, empty audio and NaN raise
  ``AudioInputError`` from both ``Session.process`` and ``Stream.accept``.
- ``decode_schema``: decoded results are what the JSON-lines output writes (JSON types, numpy
  arrays and scalars, no NaN or infinity) and keep one schema across live results and the
  whole-clip result.
- ``waveform_results`` (WAVEFORM results): ``results_to_audio`` of the whole-clip result is
  finite audio as long as the input, and the live results give the same audio (equal within the
  graph's tolerance for a streaming graph).

TEXT tasks (a prompt in):

- ``generate_deterministic``: on every backend and precision, a prompt and seed give identical
  raw outputs twice, also from a freshly loaded bundle.
- ``generate_length`` (WAVEFORM results): the audio is as long as requested (``seconds``) for two
  lengths, finite, shaped [samples] or [channels, samples], and a list of results gives the
  audio of each in order.
- ``generation_schema``: ``Session.generate`` results are what the JSON-lines output writes and
  keep one schema across prompts and lengths.

The audio the checks feed is the streaming graph's example audio (the task chose it to be
representative); tasks without a streaming graph get seeded noise (``CLIP_SECONDS``). Text tasks
generate from ``EXAMPLE_PROMPT`` with the ``seconds`` and ``seed`` options the core passes.
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
from edgeaudio.task import Graph, InputKind, MetricGate, ResultKind, Task

TASK_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
EXAMPLE_PROMPT = "a horn honks twice"  # what the checks generate from, for text tasks
OTHER_PROMPT = "rain falls on a roof"  # a second prompt, for the schema across prompts
GENERATE_SECONDS = (0.5, 1.25)  # the lengths text-to-audio checks request
GENERATE_SEED = 3
CLIP_SECONDS = (1.0, 2.5)  # clip lengths for tasks without a streaming graph; the longer is the example
WINDOW_SECONDS = 1.0  # the live window of a clip task in the checks (the example holds 2.5 of them)
PROFILE = "x86-cpu"  # the profile the checks export for (ONNX Runtime and OpenVINO artifacts)
SPAN_KEYS = ("start_s", "end_s")  # what a live window adds to a clip task's result

AUDIO_IN = frozenset({InputKind.STREAM, InputKind.CLIP})
ANY_INPUT = frozenset(InputKind)
ANY_RESULT = frozenset(ResultKind)
WAVEFORM = frozenset({ResultKind.WAVEFORM})

# check -> (input kinds, result kinds) it fits; CHECKS is the order they run in
FITS: dict[str, tuple[frozenset[InputKind], frozenset[ResultKind]]] = {
    "metadata": (ANY_INPUT, ANY_RESULT),
    "graphs": (ANY_INPUT, ANY_RESULT),
    "export_parity": (ANY_INPUT, ANY_RESULT),
    "stream_equals_session": (frozenset({InputKind.STREAM}), ANY_RESULT),
    "generate_deterministic": (frozenset({InputKind.TEXT}), ANY_RESULT),  # before the archive compares generations
    "bundle_round_trip": (ANY_INPUT, ANY_RESULT),
    "clip_lengths": (frozenset({InputKind.CLIP}), ANY_RESULT),
    "window_equals_clip": (frozenset({InputKind.CLIP}), ANY_RESULT),
    "bad_input": (AUDIO_IN, ANY_RESULT),
    "decode_schema": (AUDIO_IN, ANY_RESULT),
    "waveform_results": (AUDIO_IN, WAVEFORM),
    "generate_length": (frozenset({InputKind.TEXT}), WAVEFORM),
    "generation_schema": (frozenset({InputKind.TEXT}), ANY_RESULT),
}
CHECKS = tuple(FITS)


def checks_for(task: str | type[Task] | Task) -> tuple[str, ...]:
    """The checks that fit a task's capabilities, in the order they run.

    ``task``: a name (an installed task), a task class or an instance. A task whose
    ``input_kind`` or ``result_kind`` is not one of the declared kinds gets ``metadata`` alone,
    which fails saying so.
    """
    cls = _task_class(task)
    input_kind, result_kind = getattr(cls, "input_kind", None), getattr(cls, "result_kind", None)
    if not (isinstance(input_kind, InputKind) and isinstance(result_kind, ResultKind)):
        return ("metadata",)
    return tuple(check for check, (inputs, results) in FITS.items() if input_kind in inputs and result_kind in results)


def _task_class(task: str | type[Task] | Task) -> type[Task]:
    if isinstance(task, Task):
        return type(task)
    if isinstance(task, type) and issubclass(task, Task):
        return task
    from edgeaudio.tasks import get_task, task_classes

    classes = task_classes()
    if task not in classes:
        get_task(task)  # raises UsageError naming the installed tasks and failed plugins
    return classes[task]


@dataclass
class ConformanceReport:
    """What passed, with one line of detail and the seconds each check took; ``checks`` are the
    checks that fit the task (``checks_for``)."""

    task: str
    bundle: Path | None
    checks: tuple[str, ...] = ()
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
    """Run every check that fits the task, in order; raise AssertionError on the first failure.

    ``tmp_dir`` receives the exported bundle (a temporary directory, removed afterwards, when
    None). ``backends`` are the runtime backends to build and run; ``precisions`` the precisions
    to build (fp32 is always built: it is the reference and the fallback).
    """
    with _work_dir(tmp_dir) as work:
        suite = Conformance(task_name_or_class, config, work, backends, precisions)
        for check in suite.checks:
            suite.run(check)
        return suite.report


def conformance_tests(
    task_name_or_class: str | type[Task],
    config: Mapping[str, Any] | None = None,
    backends: Sequence[str] = ("onnxruntime", "openvino"),
    precisions: Sequence[str] = ("fp32",),
):
    """A pytest test function parametrized over the checks that fit the task (``checks_for``);
    assign it to a ``test_*`` name. A task given by name must be installed when the tests are
    collected.

    The bundle is exported once, under pytest's temporary directory, and shared by the checks.
    """
    import pytest

    suites: dict[str, Conformance] = {}

    @pytest.mark.parametrize("check", checks_for(task_name_or_class))
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
        self.checks = checks_for(task_name_or_class)
        self.report = ConformanceReport(task=name, bundle=None, checks=self.checks)
        self._export_error: str | None = None
        self._examples: dict[int | None, tuple[np.ndarray, int]] = {}

    def run(self, check: str) -> str:
        """Run one check by name; returns its one-line detail and records it in ``report``.

        A check that does not fit the task's capabilities raises ValueError: it is not a pass.
        """
        if check not in CHECKS:
            raise ValueError(f"unknown check '{check}'; checks are {', '.join(CHECKS)}")
        if check not in self.checks:
            raise ValueError(f"check '{check}' does not fit task '{self.report.task}' (its checks: {', '.join(self.checks)})")
        start = time.perf_counter()
        with _registered(self.task_ref):
            detail = getattr(self, f"_check_{check}")(self._task())
        self.report.passed[check] = detail
        self.report.seconds[check] = time.perf_counter() - start
        return detail

    def _task(self) -> Task:
        from edgeaudio.tasks import get_task

        return get_task(self.report.task, self.config)

    # -- every task -----------------------------------------------------------------------------
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
        _require(isinstance(task.input_kind, InputKind),
                 f"{where}.input_kind must be an edgeaudio.task.InputKind (STREAM, CLIP or TEXT), got {task.input_kind!r}")
        _require(isinstance(task.result_kind, ResultKind),
                 f"{where}.result_kind must be an edgeaudio.task.ResultKind (WAVEFORM, EVENTS, TEXT or RECORDS), "
                 f"got {task.result_kind!r}")
        _require(task.input_kind is not InputKind.TEXT or type(task).generate is not Task.generate,
                 f"{where}.input_kind is TEXT but the task does not override generate()")
        _require(task.result_kind is not ResultKind.WAVEFORM or type(task).results_to_audio is not Task.results_to_audio,
                 f"{where}.result_kind is WAVEFORM but the task does not override results_to_audio() "
                 "(WAV files and the speaker take the audio from it)")
        if task.result_kind is ResultKind.EVENTS:
            classes = task.classes
            _require(isinstance(classes, (list, tuple)) and classes and all(isinstance(c, str) and c for c in classes),
                     f"{where}.result_kind is EVENTS but classes {classes!r} is not a non-empty list of class names")
            _require(len(set(classes)) == len(classes), f"{where}.classes has duplicates: {list(classes)}")
        if task.array:
            from edgeaudio.profiles import get_array

            mics = get_array(task.array, live_devices=[])[0].num_mics
            _require(mics == task.channels, f"{where}.array '{task.array}' has {mics} mics but channels is {task.channels}")
        return (f"{task.name} v{task.version}, {task.sample_rate} Hz, {task.channels} channel(s), "
                f"{task.input_kind.value} in, {task.result_kind.value} out")  # fmt: skip

    def _check_graphs(self, task: Task) -> str:
        graphs = _graphs_of(task)
        _require(graphs, f"task '{task.name}' graphs() returned no graphs")
        names = [g.name for g in graphs]
        _require(len(set(names)) == len(names), f"task '{task.name}' has duplicate graph names: {names}")
        for graph in graphs:
            _check_graph(task, graph)
        streaming = [g.name for g in graphs if g.streaming]
        if task.input_kind is InputKind.STREAM:
            _require(len(streaming) == 1, f"task '{task.name}' has input_kind STREAM but {len(streaming)} streaming "
                                          f"graph(s) {streaming}; it needs exactly one (a Graph with streaming set)")
        else:
            _require(not streaming, f"task '{task.name}' has input_kind {task.input_kind.name} but graph(s) {streaming} "
                                    "declare streaming; the runtime would stream them instead of running "
                                    f"{'whole clips' if task.input_kind is InputKind.CLIP else 'generate()'}")
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
        direct = self._example_raw(load(bundle, backend=backend, precision=precision))
        packed = self._example_raw(load(unpacked, backend=backend, precision=precision))
        _require(direct and direct.keys() == packed.keys(),
                 f"raw outputs differ between the directory ({sorted(direct)}) and the .eab archive ({sorted(packed)})")
        for name, value in direct.items():
            _require(np.array_equal(value, packed[name]), f"output '{name}' differs between the directory and the .eab archive")
        _require_tamper_refused(bundle, self.work / "tampered")
        return f"{len(listed)} files hashed; .eab ({archive.stat().st_size} bytes) loads identically; tampering refused"

    # -- STREAM ---------------------------------------------------------------------------------
    def _check_stream_equals_session(self, task: Task) -> str:
        from edgeaudio.exporters.onnx import compare_outputs
        from edgeaudio.runtime import load

        bundle = self._bundle(task)
        spec = _streaming_spec(bundle.manifest)
        _require(spec is not None, f"task '{task.name}' has input_kind STREAM but its bundle has no streaming graph")
        audio, rate = self._audio(task)
        block = spec["streaming"]["block"]
        checked = []
        for backend, precision in self._artifacts(bundle):
            session = load(bundle, backend=backend, precision=precision)
            offline = session.process_raw(audio, rate)
            _require(offline, f"{backend}/{precision}: Session.process_raw returned no outputs")
            for chunk in _chunk_sizes(block):
                streamed = _stream_raw(session, audio, rate, chunk)
                report = compare_outputs(offline, streamed, spec["atol"], spec["rtol"])
                bad = {name: r.get("shape", r["max_abs"]) for name, r in report.items() if not r["ok"]}
                _require(not bad, f"{backend}/{precision}: streaming in chunks of {chunk} samples differs from "
                                  f"Session.process_raw: {bad} (atol {spec['atol']}, rtol {spec['rtol']})")
            checked.append(f"{backend}/{precision}")
        return f"{', '.join(checked)}; chunks {_chunk_sizes(block)} samples"

    # -- CLIP -----------------------------------------------------------------------------------
    def _check_clip_lengths(self, task: Task) -> str:
        from edgeaudio.runtime import load

        bundle = self._bundle(task)
        checked = []
        for backend, precision in self._artifacts(bundle):
            session = load(bundle, backend=backend, precision=precision)
            schema = None
            for seconds in CLIP_SECONDS:
                audio, rate = self._audio(task, seconds)
                what = f"{backend}/{precision} on a {seconds:g} s clip"
                raw = session.process_raw(audio, rate)
                _require(isinstance(raw, Mapping) and raw, f"{what}: Session.process_raw returned no outputs ({raw!r})")
                for name, value in raw.items():
                    value = np.asarray(value)
                    _require(value.dtype.kind not in "fc" or np.all(np.isfinite(value)), f"{what}: output '{name}' is not finite")
                found = _schema(_json_checked(session.process(audio, rate), f"{what}: Session.process result"))
                schema = _merge(schema, found, f"{what} vs the {CLIP_SECONDS[0]:g} s clip")
            checked.append(f"{backend}/{precision}")
        return f"{', '.join(checked)}; clips of {' and '.join(f'{s:g}' for s in CLIP_SECONDS)} s, schema {_describe(schema)}"

    def _check_window_equals_clip(self, task: Task) -> str:
        from edgeaudio.runtime import load

        bundle = self._bundle(task)
        session = load(bundle, backend=self.backends[0], precision="fp32")
        audio, rate = self._audio(task)
        stream = session.stream(every=WINDOW_SECONDS)
        window = int(round(WINDOW_SECONDS * rate))
        _require(getattr(stream, "block", None) == window,
                 f"Session.stream(every={WINDOW_SECONDS}) of a clip task gave {type(stream).__name__} with block "
                 f"{getattr(stream, 'block', None)}, expected windows of {window} samples")
        chunk = window // 3 + 1  # windows end inside chunks
        live = []
        for offset in range(0, audio.shape[1], chunk):
            live += stream.accept(audio[:, offset : offset + chunk], rate)
        live += stream.flush()
        starts = range(0, audio.shape[1], window)
        _require(len(live) == len(starts), f"{len(live)} live result(s) for {audio.shape[1]} samples in windows of "
                                           f"{window}; expected {len(starts)}")
        for index, (start, result) in enumerate(zip(starts, live)):
            piece = audio[:, start : start + window]
            span = {"start_s": round(start / rate, 3), "end_s": round((start + piece.shape[1]) / rate, 3)}
            whole = session.process(piece, rate)
            expected = {**span, **whole} if isinstance(whole, dict) else {**span, "result": whole}
            got = _json_checked(result, f"live result #{index}")
            want = _json_checked(expected, f"Session.process result of window #{index}")
            _require(got == want, f"live result #{index} ({span['start_s']}-{span['end_s']} s) differs from "
                                  f"Session.process on the same window: {str(got)[:200]} vs {str(want)[:200]}")
        return f"{len(live)} window(s) of {WINDOW_SECONDS:g} s in chunks of {chunk} samples equal whole-clip results"

    # -- audio in -------------------------------------------------------------------------------
    def _check_bad_input(self, task: Task) -> str:
        from edgeaudio.runtime import load

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

        bundle = self._bundle(task)
        session = load(bundle, backend=self.backends[0], precision="fp32")
        audio, rate = self._audio(task)
        offline = session.process(audio, rate)
        schema = _schema(_json_checked(offline, "Session.process result"))
        results = self._live(session, audio, rate)
        _require(results, f"{type(session.stream()).__name__} gave no results for {audio.shape[1]} samples")
        for index, result in enumerate(results):
            found = _json_checked(result, f"live result #{index}")
            if task.input_kind is InputKind.CLIP:
                found = _unwindowed(found, f"live result #{index}")
            schema = _merge(schema, _schema(found), f"live result #{index} vs earlier results")
        return f"offline and {len(results)} live result(s) share schema {_describe(schema)}"

    def _check_waveform_results(self, task: Task) -> str:
        from edgeaudio.runtime import load

        bundle = self._bundle(task)
        session = load(bundle, backend=self.backends[0], precision="fp32")
        audio, rate = self._audio(task)
        whole = _waveform(task, session.process(audio, rate), "the whole-clip result")
        _require(whole.shape[-1] == audio.shape[1],
                 f"results_to_audio of the whole-clip result has {whole.shape[-1]} samples for {audio.shape[1]} input "
                 "samples; waveform results must line up with their input")
        live = _waveform(task, self._live(session, audio, rate), "the live results")
        _require(live.shape == whole.shape,
                 f"results_to_audio of the live results is shaped {live.shape}, of the whole-clip result {whole.shape}")
        spec = _streaming_spec(bundle.manifest)
        if spec is None:
            return f"{whole.shape} finite audio, live and whole-clip alike"
        worst = float(np.max(np.abs(live - whole))) if whole.size else 0.0
        _require(np.allclose(live, whole, atol=spec["atol"], rtol=spec["rtol"]),
                 f"streamed audio differs from whole-clip audio by up to {worst:.2e} (atol {spec['atol']}, rtol {spec['rtol']})")
        return f"{whole.shape} finite audio; streamed equals whole-clip (max|err| {worst:.1e})"

    # -- TEXT -----------------------------------------------------------------------------------
    def _check_generate_deterministic(self, task: Task) -> str:
        from edgeaudio.runtime import load

        bundle = self._bundle(task)
        checked = []
        for backend, precision in self._artifacts(bundle):
            what = f"{backend}/{precision}"
            session = load(bundle, backend=backend, precision=precision)
            first = self._generate_raw(session)
            _require(isinstance(first, Mapping) and first, f"{what}: generate() returned no outputs ({first!r})")
            for label, again in (("again", self._generate_raw(session)),
                                 ("from a freshly loaded bundle", self._generate_raw(load(bundle, backend=backend, precision=precision)))):  # fmt: skip
                _require(again.keys() == first.keys(), f"{what}: outputs {sorted(again)} {label}, first {sorted(first)}")
                for name, value in first.items():
                    _require(np.array_equal(np.asarray(value), np.asarray(again[name])),
                             f"{what}: output '{name}' for prompt {EXAMPLE_PROMPT!r} and seed {GENERATE_SEED} differs "
                             f"{label}; generate() must depend on its seed alone")
            checked.append(what)
        return f"{', '.join(checked)}: identical outputs for seed {GENERATE_SEED}, twice and after reloading"

    def _check_generate_length(self, task: Task) -> str:
        from edgeaudio.runtime import load

        session = load(self._bundle(task), backend=self.backends[0], precision="fp32")
        results, lengths = [], []
        for seconds in GENERATE_SECONDS:
            result = session.generate(EXAMPLE_PROMPT, seconds=seconds, seed=GENERATE_SEED)
            audio = _waveform(task, result, f"the result for seconds={seconds:g}")
            expected = int(round(seconds * task.sample_rate))
            _require(audio.shape[-1] == expected,
                     f"generate(seconds={seconds:g}) gave {audio.shape[-1]} samples; {expected} requested at {task.sample_rate} Hz")
            results.append(result)
            lengths.append(audio.shape)
        both = _waveform(task, results, "a list of two results")
        _require(both.shape[:-1] == lengths[0][:-1] and both.shape[-1] == sum(shape[-1] for shape in lengths),
                 f"results_to_audio of a list of results is shaped {both.shape}; each alone {lengths}")
        return f"seconds {' and '.join(f'{s:g}' for s in GENERATE_SECONDS)} give audio shaped {' and '.join(map(str, lengths))}"

    def _check_generation_schema(self, task: Task) -> str:
        from edgeaudio.runtime import load

        session = load(self._bundle(task), backend=self.backends[0], precision="fp32")
        schema = None
        for prompt in (EXAMPLE_PROMPT, OTHER_PROMPT):
            for seconds in GENERATE_SECONDS:
                what = f"Session.generate({prompt!r}, seconds={seconds:g})"
                found = _schema(_json_checked(session.generate(prompt, seconds=seconds, seed=GENERATE_SEED), what))
                schema = _merge(schema, found, f"{what} vs earlier results")
        return f"2 prompts x {len(GENERATE_SECONDS)} lengths share schema {_describe(schema)}"

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

    def _example_raw(self, session) -> dict[str, np.ndarray]:
        """Raw outputs for the example input: the example audio, or for text tasks a fixed prompt."""
        if session.task.input_kind is InputKind.TEXT:
            return self._generate_raw(session)
        return session.process_raw(*self._audio(session.task))

    def _generate_raw(self, session) -> dict[str, np.ndarray]:
        return session.task.generate(session.runner, EXAMPLE_PROMPT, seconds=GENERATE_SECONDS[0], seed=GENERATE_SEED)

    def _live(self, session, audio: np.ndarray, rate: int) -> list[Any]:
        """Results of ``session.stream()`` (windows of ``WINDOW_SECONDS`` for clip tasks) fed
        ``audio`` in chunks that do not divide its block, then flushed."""
        stream = session.stream(every=WINDOW_SECONDS)
        chunk = _chunk_sizes(stream.block)[0] if session.streaming else stream.block // 3 + 1
        results = []
        for offset in range(0, audio.shape[1], chunk):
            results += stream.accept(audio[:, offset : offset + chunk], rate)
        return results + stream.flush()

    def _audio(self, task: Task, seconds: float | None = None) -> tuple[np.ndarray, int]:
        """The audio every check feeds, taken once (building the graphs may load a model);
        ``seconds``: seeded noise of that length instead."""
        if seconds not in self._examples:
            self._examples[seconds] = _example_audio(task) if seconds is None else _noise(task, seconds)
        return self._examples[seconds]


# -- helpers ------------------------------------------------------------------------------------


def _example_audio(task: Task) -> tuple[np.ndarray, int]:
    """The streaming graph's example audio, its last block left partial to exercise padding; for
    a task without a streaming graph, the longer of ``CLIP_SECONDS`` of seeded noise."""
    streaming = next((g for g in _graphs_of(task) if g.streaming), None)
    if streaming is None:
        return _noise(task, CLIP_SECONDS[-1])
    audio = np.asarray(streaming.example_inputs[streaming.streaming.audio_input][0], dtype=np.float32)
    block = streaming.streaming.block
    if audio.shape[1] > block:
        audio = audio[:, : audio.shape[1] - block // 3]
    return np.ascontiguousarray(audio), task.sample_rate


def _noise(task: Task, seconds: float) -> tuple[np.ndarray, int]:
    """``seconds`` of seeded noise with a tone in it, for every channel of the task."""
    samples = int(round(seconds * task.sample_rate))
    rng = np.random.default_rng(samples)
    tone = 0.2 * np.sin(2 * np.pi * 440.0 * np.arange(samples) / task.sample_rate)
    audio = tone[None, :] + 0.05 * rng.standard_normal((task.channels, samples))
    return audio.astype(np.float32), task.sample_rate


@contextmanager
def registered_plugin(plugin: Any, name: str) -> Iterator[Any]:
    """``plugin`` (a module or object with hook implementations) registered as ``name`` while the
    block runs, then unregistered. A plugin already registered under that name (an installed
    entry point, an enclosing block) is used as it is and left registered; another plugin under
    that name is an error.
    """
    from edgeaudio import registry

    existing = registry.get_plugin_manager().get_plugin(name)
    if existing is plugin:
        yield plugin
        return
    if existing is not None:
        raise AssertionError(f"plugin name '{name}' is already taken by {existing!r}")
    registry.register(plugin, name)
    try:
        yield plugin
    finally:
        registry.unregister(name)


@contextmanager
def _registered(task_ref: str | type[Task]) -> Iterator[None]:
    """Register a task class given directly (not installed) for the duration of one check."""
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
    with registered_plugin(_InlinePlugin(task_ref), f"conformance:{task_ref.name}"):
        yield


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
    """``value`` after a strict JSON round trip as the JSON-lines output writes it (numpy arrays
    and scalars as lists and numbers; no NaN or infinity), or AssertionError."""
    try:
        return json.loads(json.dumps(value, allow_nan=False, default=_plain))
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{what} is not JSON-serialisable ({exc}); decoded results must be dicts, lists, str, "
                             f"int, float, bool, None or numpy arrays and scalars, all finite: {str(value)[:200]}") from exc


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _unwindowed(result: Any, what: str) -> Any:
    """A live window's result without its span: the whole-clip result it carries."""
    _require(isinstance(result, dict) and all(isinstance(result.get(key), (int, float)) for key in SPAN_KEYS),
             f"{what} has no numeric {' and '.join(SPAN_KEYS)}: {str(result)[:200]}")
    rest = {key: value for key, value in result.items() if key not in SPAN_KEYS}
    return rest["result"] if set(rest) == {"result"} else rest


def _waveform(task: Task, results: Any, what: str) -> np.ndarray:
    """``task.results_to_audio(results)``, required to be finite float audio shaped [samples] or
    [channels, samples]."""
    audio = task.results_to_audio(results)
    _require(audio is not None, f"results_to_audio of {what} returned None")
    audio = np.asarray(audio)
    _require(audio.dtype.kind == "f", f"results_to_audio of {what} is {audio.dtype}, not float audio")
    _require(audio.ndim in (1, 2), f"results_to_audio of {what} is shaped {audio.shape}; [samples] or [channels, samples]")
    _require(audio.ndim == 1 or audio.shape[0] >= 1, f"results_to_audio of {what} has no channels: {audio.shape}")
    _require(np.all(np.isfinite(audio)), f"results_to_audio of {what} contains NaN or infinite samples")
    return audio


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
