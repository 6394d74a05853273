"""Running the conformance checks: which fit a task, the report, pytest tests, plugin registration."""

from __future__ import annotations

import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from edgeaudio.errors import EdgeAudioError
from edgeaudio.task import InputKind, ResultKind, Task
from edgeaudio.testing.checks_all import EveryTaskChecks
from edgeaudio.testing.checks_audio import AudioChecks
from edgeaudio.testing.checks_text import TextChecks
from edgeaudio.testing.common import (
    ANY_INPUT,
    ANY_RESULT,
    AUDIO_IN,
    EXAMPLE_PROMPT,
    GENERATE_SECONDS,
    GENERATE_SEED,
    PROFILE,
    WAVEFORM,
    WINDOW_SECONDS,
    _chunk_sizes,
    _example_audio,
    _in_chunks,
    _noise,
    _require,
)
from edgeaudio.testing.plugins import _registered

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



class Conformance(EveryTaskChecks, AudioChecks, TextChecks):
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
        return _in_chunks(stream, audio, rate, chunk)

    def _audio(self, task: Task, seconds: float | None = None) -> tuple[np.ndarray, int]:
        """The audio every check feeds, taken once (building the graphs may load a model);
        ``seconds``: seeded noise of that length instead."""
        if seconds not in self._examples:
            self._examples[seconds] = _example_audio(task) if seconds is None else _noise(task, seconds)
        return self._examples[seconds]


# -- helpers ------------------------------------------------------------------------------------
