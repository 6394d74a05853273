"""Side-by-side benchmark of one bundle on every backend x precision, each in a fresh process.

Timings on shared machines are noisy, so the report leads with ratios measured in one process,
taking turns, in process CPU time (what else runs on the machine stays out of them): the runtime
against the bare backend it wraps (``overhead_clip``, ``overhead_stream``: ``Session.process`` on
the whole signal and ``Stream.accept`` chunk by chunk, decoding included, over the same graph
calls on the same inputs replayed through the vendor's plain call on the same loaded graph,
``GraphRunner.bare_call``: the ``onnxruntime.InferenceSession``, the OpenVINO compiled model),
and every backend against torch eager. Each backend x precision runs in a process of its own, so its peak RSS is its own.
"""

from __future__ import annotations

import importlib
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np

from edgeaudio import registry
from edgeaudio.bundle import Bundle, load_bundle
from edgeaudio.errors import BackendUnavailable, UsageError
from edgeaudio.runtime import PROBE_PROMPT, load, probe_signal, stream_steps
from edgeaudio.task import InputKind


@dataclass
class BenchRow:
    """One backend x precision. ``chunk_ms``: the streamed chunk (by default the task's smallest,
    one graph block), or the clip for tasks run on whole clips; ``p50_ms``/``p99_ms``: per chunk,
    or per clip; ``clip_ms``: the median ``Session.process`` (or ``generate``) call on the whole
    signal; ``overhead_*``: the runtime's time over the bare backend's on the same graph calls
    (None where the backend has no bare call, or the task does not stream)."""

    backend: str
    precision: str
    load_s: float = 0.0
    chunk_ms: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    rtf: float = 0.0
    clip_ms: float = 0.0
    overhead_clip: float | None = None
    overhead_stream: float | None = None
    peak_rss_mb: float = 0.0
    parity_max_abs: float | None = None
    speedup_vs_torch: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Recorder:
    """While active, records the feeds of every graph call a session makes, in order: the calls
    the bare backend replays. Graphs bind no arrays meanwhile (``LoadedGraph.bind``: a bound call
    bypasses ``run``), so every call is a plain one, with the same feeds, and each is seen."""

    def __init__(self, session):
        names = [spec["name"] for spec in session.bundle.manifest["graphs"]]
        self.graphs = {name: session.runner.graph(name) for name in names}
        self.calls: list[tuple[str, dict[str, np.ndarray]]] = []

    def __enter__(self) -> "_Recorder":
        self.calls = []
        for name, graph in self.graphs.items():
            graph.run = partial(self._run, name, graph.runner.run)  # shadows LoadedGraph.run
            graph.bind = _no_binding
        return self

    def _run(self, name: str, run: Callable, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append((name, {key: np.array(value) for key, value in feeds.items()}))
        return run(feeds)

    def __exit__(self, *exc) -> None:
        for graph in self.graphs.values():
            del graph.run, graph.bind


def _no_binding(*args: Any) -> None:
    return None


def _bare_calls(session) -> dict[str, Callable] | None:
    """Each of the session's loaded graphs through its vendor runtime's plain call (the same
    session or compiled model, ``GraphRunner.bare_call``), or None where a backend has none."""
    calls = {}
    for spec in session.bundle.manifest["graphs"]:
        call = session.runner.graph(spec["name"]).runner.bare_call()
        if call is None:
            return None
        calls[spec["name"]] = call
    return calls


def _replay(bare: dict[str, Callable], calls: list[tuple[str, dict[str, np.ndarray]]]) -> float:
    """CPU seconds of the recorded calls through the bare backend."""
    start = time.process_time()
    for name, feeds in calls:
        bare[name](feeds)
    return time.process_time() - start


def _timed(call: Callable[[], Any]) -> tuple[float, float]:
    """Wall and CPU seconds of ``call()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def _stream_pass(session, audio: np.ndarray, chunk: int, recorder: _Recorder) -> list[int]:
    """One fresh Stream over ``audio`` in ``chunk``-sample chunks, the flush last, while
    ``recorder`` records; how many graph calls each step made."""
    made = []
    for step in stream_steps(session.stream(), audio, chunk):
        before = len(recorder.calls)
        step()
        made.append(len(recorder.calls) - before)
    return made


def _stream_round(session, audio: np.ndarray, chunk: int, bare, calls, made: list[int]) -> tuple[list[float], float, float]:
    """A fresh Stream over ``audio``, each ``accept`` followed by the bare backend running the
    graph calls that accept made in the recorded pass, so both meet the machine (and its caches)
    in the same state: each accept's wall seconds (its latency), and the CPU seconds of the
    runtime's steps and of the bare calls."""
    times, ours, theirs, done = [], 0.0, 0.0, 0
    steps = stream_steps(session.stream(), audio, chunk)
    for index, step in enumerate(steps):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        ours += time.process_time() - cpu
        if index < len(steps) - 1:  # the flush is no chunk's latency
            times.append(time.perf_counter() - wall)
        if bare:
            theirs += _replay(bare, calls[done : done + made[index]])
        done += made[index]
    return times, ours, theirs


def bench_one(
    bundle: str, backend: str, precision: str, audio: np.ndarray | None, seconds: float, chunk_ms: float | None,
    threads: int | None, warmup: int, rounds: int, validation: Any = None, plugins: Sequence[tuple[str, str]] = (),
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One row of the report and the raw outputs of the whole signal (for parity); run in a
    fresh process by ``run_bench``. ``plugins``: (name, module) of in-process plugins to register."""
    for name, module in plugins:
        if registry.get_plugin_manager().get_plugin(name) is None:
            registry.register(importlib.import_module(module), name)
    row = BenchRow(backend, precision)
    try:
        session = load(bundle, backend=backend, precision=precision, threads=threads)
    except BackendUnavailable as exc:
        row.error = str(exc)
        return asdict(row), {}
    task, row.load_s = session.task, session.load_seconds
    text = task.input_kind is InputKind.TEXT
    if audio is None and not text:
        audio = probe_signal(task.channels, task.sample_rate, seconds)
    if text:
        whole = partial(session.generate, PROBE_PROMPT, seconds=seconds, seed=0)
        raw_whole = partial(task.generate, session.runner, PROBE_PROMPT, seconds=seconds, seed=0)
    else:
        seconds = audio.shape[1] / task.sample_rate
        whole = partial(session.process, audio, task.sample_rate)
        raw_whole = partial(session.process_raw, audio, task.sample_rate)
    recorder = _Recorder(session)
    with recorder:
        raw = raw_whole()
    clip_calls = recorder.calls
    for _ in range(warmup):
        whole()
    streams = not text and session.streaming
    if streams:
        chunk = _chunk_samples(session, chunk_ms)
        with recorder:
            made = _stream_pass(session, audio, chunk, recorder)
        stream_calls = recorder.calls
    row.peak_rss_mb = _peak_rss_mb()
    bare = _bare_calls(session)
    # The runtime and the bare backend take turns (whole clips round by round, streams chunk by
    # chunk); ratios are of process CPU time, so other programs on the machine stay out of them
    # (latencies are wall-clock).
    clip_times, clip_cpu, clip_bare, chunk_times, stream_cpu, stream_bare = [], [], [], [], [], []
    for _ in range(rounds):
        wall, cpu = _timed(whole)
        clip_times.append(wall)
        clip_cpu.append(cpu)
        if bare:
            clip_bare.append(_replay(bare, clip_calls))
        if streams:
            times, ours, theirs = _stream_round(session, audio, chunk, bare, stream_calls, made)
            chunk_times += times
            stream_cpu.append(ours)
            stream_bare.append(theirs)
    row.clip_ms = 1000 * float(np.median(clip_times))
    row.overhead_clip = float(np.median(clip_cpu) / np.median(clip_bare)) if clip_bare else None
    if streams:
        row.chunk_ms = 1000 * chunk / task.sample_rate
        row.p50_ms, row.p99_ms = (1000 * float(np.percentile(chunk_times, q)) for q in (50, 99))
        row.rtf = float(np.sum(chunk_times)) / rounds / seconds
        row.overhead_stream = float(np.median(stream_cpu) / np.median(stream_bare)) if bare else None
    else:
        row.chunk_ms = 1000 * seconds
        row.p50_ms, row.p99_ms = (1000 * float(np.percentile(clip_times, q)) for q in (50, 99))
        row.rtf = row.p50_ms / 1000 / seconds
    if validation is not None:
        row.metrics = {name: float(value) for name, value in task.evaluate(session.runner, validation).items()}
    return asdict(row), {name: np.asarray(value) for name, value in raw.items()}


def _max_abs(reference: dict[str, Any], outputs: dict[str, Any]) -> float | None:
    """Largest difference over the numeric outputs both runs produced with the same shape."""
    errors = [
        float(np.max(np.abs(np.asarray(outputs[k], np.float64) - np.asarray(v, np.float64))))
        for k, v in reference.items()
        if k in outputs and np.asarray(v).dtype.kind in "fiu" and np.shape(outputs[k]) == np.shape(v) and np.size(v)
    ]
    return max(errors) if errors else None


def run_bench(
    bundle: str | Path | Bundle,
    backends: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    seconds: float = 10.0,
    chunk_ms: float | None = None,
    threads: int | None = None,
    validation: Any = None,
    warmup: int = 3,
    rounds: int = 5,
    audio: np.ndarray | None = None,
    isolate: bool = True,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Benchmark every (backend, precision) artifact of ``bundle`` (a path, or a bundle already
    opened and verified); torch first as the baseline.

    ``audio``: the signal [channels, samples] at the task's rate (default ``seconds`` of
    ``runtime.probe_signal``); ``chunk_ms``: the streamed chunk (default one graph block, the task's
    smallest); ``rounds``: interleaved timing rounds after ``warmup`` calls; ``isolate``: each
    row in a fresh process (rows of a bundle whose task was registered in this process as an
    object, not a module, run here, and the report says their memory is not isolated)."""
    loaded = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    pairs = list(loaded.artifacts())
    pairs.sort(key=lambda pair: pair[0] != "torch")
    if backends:
        pairs = [pair for pair in pairs if pair[0] in backends or pair[0] == "torch"]
    if precisions:
        pairs = [pair for pair in pairs if pair[1] in precisions or pair[0] == "torch"]
    plugins = _plugin_modules()
    isolated = isolate and plugins is not None
    rows: list[dict[str, Any]] = []
    raws: list[dict[str, np.ndarray]] = []
    for backend, precision in pairs:
        log(f"bench {backend}/{precision}")
        job = partial(bench_one, str(loaded.root), backend, precision, audio, seconds, chunk_ms, threads, warmup, rounds,
                      validation, plugins or ())
        row, raw = _in_fresh_process(job) if isolated else job()
        rows.append(row)
        raws.append(raw)
    # parity against torch, else the first fp32 row (never against a lower precision)
    ok = [i for i, row in enumerate(rows) if not row["error"]]
    first = next((i for i in ok if rows[i]["backend"] == "torch"), None)
    first = first if first is not None else next((i for i in ok if rows[i]["precision"] == "fp32"), ok[0] if ok else None)
    for i in ok:
        if i != first:
            rows[i]["parity_max_abs"] = _max_abs(raws[first], raws[i])
    torch_row = next((r for r in rows if r["backend"] == "torch" and not r["error"]), None)
    for row in rows:
        if torch_row and not row["error"] and row["clip_ms"] > 0:
            row["speedup_vs_torch"] = torch_row["clip_ms"] / row["clip_ms"]
    return {
        "bundle": str(loaded.root),
        "task": loaded.task_name,
        "bundle_size_mb": loaded.size_bytes() / 1e6,
        "audio_seconds": audio.shape[1] / loaded.manifest["audio"]["sample_rate"] if audio is not None else seconds,
        "threads": threads or os.cpu_count(),
        "peak_rss_isolated": isolated,
        "rows": rows,
    }


def _in_fresh_process(job: Callable[[], Any]) -> Any:
    """``job()`` in a new interpreter (spawned, not forked: no threads or memory of this one)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(job).result()


def _plugin_modules() -> list[tuple[str, str]] | None:
    """(name, module) of the plugins registered in this process rather than through an entry
    point, for a fresh process to register too; None if one is an object it could not import."""
    from importlib.metadata import entry_points

    installed = {ep.name for ep in entry_points(group=registry.ENTRY_POINT_GROUP)}
    found = []
    for name, plugin in registry.get_plugin_manager().list_name_plugin():
        if name in installed:
            continue
        if not isinstance(plugin, ModuleType):
            return None
        found.append((name, plugin.__name__))
    return found


def _chunk_samples(session, chunk_ms: float | None) -> int:
    """``chunk_ms`` of audio rounded to whole streaming blocks (at least one); None: one block."""
    try:
        block = session.runner.streaming_graph().streaming.block
    except UsageError:
        block = 1
    if chunk_ms is None:
        return block
    wanted = int(session.task.sample_rate * chunk_ms / 1000)
    return max(block, (wanted // block) * block)
