"""Session (whole clips) and Stream (chunked, stateful audio) over any backend.

A streaming graph takes audio [batch, channels, samples] in multiples of its ``block`` plus its
state inputs, and returns frames plus the next state. Offline processing is one call from zero
state on the clip padded to a whole block; streaming is many calls carrying the state, with the
last partial block padded the same way, so the two agree to the graph's tolerance.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgeaudio.backends.base import GraphRunner, backends
from edgeaudio.bound_block import BoundBlock
from edgeaudio.bundle import Bundle, load_bundle
from edgeaudio.errors import BackendUnavailable, BundleError, EdgeAudioError, UsageError
from edgeaudio.staging import write_atomically
from edgeaudio.task import InputKind, Runner, StatePair, Streaming, Task, TensorSpec
from edgeaudio.tasks import get_task

FALLBACK_ORDER = ("openvino", "onnxruntime", "tensorrt", "torch")
REFERENCE_BACKEND = "torch"  # eager framework code: chosen automatically only when nothing else runs the bundle
PROBE_PROMPT = "a horn honks twice, then someone types"  # what text-to-audio bundles generate when timed
PRECISION_ORDER = ("int8", "fp16", "fp32")
DEFAULT_WINDOW_S = 5.0  # window of a WindowedStream when the caller names none
BATCH_AXIS = "batch"  # the dynamic axis of that name is the batch axis, wherever it sits


class LoadedGraph:
    """A graph of the bundle loaded on one backend, with its specs from the manifest."""

    def __init__(self, spec: Mapping[str, Any], runner: GraphRunner):
        self.name: str = spec["name"]
        self.inputs = [TensorSpec.from_json(t) for t in spec["inputs"]]
        self.outputs = [TensorSpec.from_json(t) for t in spec["outputs"]]
        self.state = [StatePair(p["input"], p["output"]) for p in spec.get("state", [])]
        self.streaming = Streaming.from_json(spec["streaming"]) if spec.get("streaming") else None
        self.runner = runner
        self._state_outputs = frozenset(pair.output for pair in self.state)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner.run(feeds)

    def initial_state(self) -> dict[str, np.ndarray]:
        by_name = {t.name: t for t in self.inputs}
        state = {}
        for pair in self.state:
            spec = by_name[pair.input]
            shape = [1 if dim == BATCH_AXIS else dim for dim in spec.shape]
            if any(isinstance(dim, str) for dim in shape):
                raise BundleError(f"state input '{pair.input}' has a dynamic axis besides batch: {spec.shape}")
            state[pair.input] = np.zeros(shape, dtype=np.dtype(spec.dtype))
        return state

    def _require_streaming(self) -> Streaming:
        if self.streaming is None:
            raise UsageError(f"graph '{self.name}' is not a streaming graph")
        return self.streaming

    def step(self, audio: np.ndarray, state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Run whole blocks of ``audio`` [channels, samples] from ``state``; return frames and next state."""
        streaming = self._require_streaming()
        out = self.run({**state, streaming.audio_input: np.ascontiguousarray(audio[None], dtype=np.float32)})
        next_state = {pair.input: out[pair.output] for pair in self.state}
        frames = {name: value for name, value in out.items() if name not in self._state_outputs}
        return frames, next_state

    def bind(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> Callable[[], None] | None:
        """A call of this graph reading ``inputs`` and writing ``outputs`` in place
        (``GraphRunner.bind``), or None where the backend binds no arrays: then ``run``."""
        return self.runner.bind(inputs, outputs)

    def bind_block(self, channels: int, frames: Mapping[str, np.ndarray],
                   state: Mapping[str, np.ndarray]) -> BoundBlock | None:
        """In-place one-block calls shaped as one block's ``frames`` and ``state`` came out of
        ``step`` (``BoundBlock``), or None where the backend binds no arrays."""
        return BoundBlock.create(self, channels, frames, state)

    def run_offline(self, audio: np.ndarray, latency: int = 0, max_samples: int | None = None) -> dict[str, np.ndarray]:
        """A whole clip from zero state, followed by ``latency`` samples of silence so that a
        graph whose output lags its input lets every input sample out; the frames are cut to
        those the clip accounts for (``frames_for``), which is what a flushed Stream gives.
        ``max_samples``: at most that many samples (rounded down to whole blocks) per graph call,
        the state carried from call to call, for a graph whose working memory grows with the
        length of a call; the output is a flushed Stream's all the same."""
        streaming = self._require_streaming()
        # the clip is copied only where silence follows it
        padded = pad_to_block(np.pad(audio, ((0, 0), (0, latency))) if latency else audio, streaming.block)
        if max_samples is None or padded.shape[1] <= max_samples:
            frames, _ = self.step(padded, self.initial_state())
        else:
            size = max(max_samples // streaming.block, 1) * streaming.block
            state, parts = self.initial_state(), {}
            for start in range(0, padded.shape[1], size):
                out, state = self.step(padded[:, start : start + size], state)
                for name, value in out.items():
                    parts.setdefault(name, []).append(value)
            frames = {name: np.concatenate(values, axis=streaming.time_axes.get(name, 1)) for name, values in parts.items()}
        return self.cut(frames, 0, self.frames_for(audio.shape[1] + latency))

    def frames_for(self, samples: int) -> int:
        """Output frames that ``samples`` input samples account for (a partial block counts)."""
        streaming = self._require_streaming()
        return -(-samples * streaming.frames_per_block // streaming.block)

    def cut(self, frames: dict[str, np.ndarray], first: int, limit: int) -> dict[str, np.ndarray]:
        """``frames`` starting at output frame ``first``, without those at or after ``limit``."""
        axes = self._require_streaming().time_axes
        keep = max(limit - first, 0)
        return {name: _head(value, axes.get(name, 1), keep) for name, value in frames.items()}


def _head(value: np.ndarray, axis: int, count: int) -> np.ndarray:
    """The first ``count`` entries of ``value`` along ``axis``: a view, no copy."""
    index = [slice(None)] * value.ndim
    index[axis] = slice(0, count)
    return value[tuple(index)]


def pad_to_block(audio: np.ndarray, block: int) -> np.ndarray:
    remainder = (-audio.shape[1]) % block
    if remainder == 0:
        return audio
    return np.pad(audio, ((0, 0), (0, remainder)))


class BundleRunner(Runner):
    """Graphs of one bundle on one backend at one precision, loaded lazily."""

    def __init__(self, bundle: Bundle, task: Task, backend, precision: str):
        self.bundle, self.task, self.backend, self.precision = bundle, task, backend, precision
        # a backend that runs framework modules (torch) gets them from the task, never the task itself
        if task is not None:
            backend.options.setdefault("modules", task.reference_module)
        self._graphs: dict[str, LoadedGraph] = {}

    def graph(self, name: str) -> LoadedGraph:
        if name not in self._graphs:
            spec = self.bundle.graph(name)
            artifact = _find_artifact(spec, self.backend.artifact, self.precision)
            self._graphs[name] = LoadedGraph(spec, self.backend.load_graph(self.bundle, spec, artifact))
        return self._graphs[name]

    def streaming_graph(self) -> LoadedGraph:
        for spec in self.bundle.manifest["graphs"]:
            if spec.get("streaming"):
                return self.graph(spec["name"])
        raise UsageError(f"task '{self.task.name}' has no streaming graph; use Session.process on whole clips")

    def load_all(self) -> None:
        for spec in self.bundle.manifest["graphs"]:
            self.graph(spec["name"])


def _find_artifact(spec: Mapping[str, Any], backend: str, precision: str) -> Mapping[str, Any]:
    for artifact in spec["artifacts"]:
        if artifact["backend"] == backend and artifact["precision"] == precision:
            return artifact
    have = [f"{a['backend']}/{a['precision']}" for a in spec["artifacts"]]
    raise BundleError(
        f"graph '{spec['name']}' has no {backend}/{precision} artifact (has: {', '.join(have)})",
        hint="export for this backend and precision, or pick one the bundle has",
    )


@dataclass
class Session:
    """A bundle loaded on a backend. ``process`` runs whole clips; ``stream`` opens a Stream."""

    task: Task
    bundle: Bundle
    runner: BundleRunner
    backend: str
    precision: str
    reason: str
    load_seconds: float = 0.0

    @property
    def sample_rate(self) -> int:
        return self.task.sample_rate

    def process_raw(self, audio: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        return self.task.process(self.runner, self.task.prepare_audio(audio, sample_rate))

    def process(self, audio: np.ndarray, sample_rate: int) -> Any:
        """Decoded results for a whole clip shaped [channels, samples] (or [samples] when mono)."""
        return self.task.decoder()(self.process_raw(audio, sample_rate))

    def generate(self, prompt: str, **options: Any) -> Any:
        """Decoded results generated from a text prompt (tasks whose ``inputs`` is "text")."""
        if not isinstance(prompt, str):
            raise UsageError(f"task '{self.task.name}' needs a text prompt, got {type(prompt).__name__}")
        return self.task.decode_generation(prompt, self.task.generate(self.runner, prompt, **options), **options)

    @property
    def streaming(self) -> bool:
        """Whether the bundle has a streaming graph (stateful, chunk by chunk)."""
        return any(spec.get("streaming") for spec in self.bundle.manifest["graphs"])

    def stream(self, every: float | None = None, keep_outputs: bool = False) -> "Stream | WindowedStream":
        """A Stream for streaming tasks; for the others (captioning) a WindowedStream that runs
        the whole-clip pipeline on every ``every`` seconds (default 5) of audio.
        ``keep_outputs``: the Stream also keeps every raw output for ``outputs()`` (for tests;
        memory then grows with the input)."""
        if self.streaming:
            return Stream(self, keep_outputs)
        return WindowedStream(self, every or DEFAULT_WINDOW_S)

    def warm_up(self, every: float | None = None) -> None:
        """One block of silence through a throwaway stream (``every`` as for ``stream``), before a
        live run starts: the first inference and decode pay for lazy imports and allocations (0.4 s
        for SELD's decoder), which on the first live chunk would be a latency spike and a backlog."""
        scratch = self.stream(every)
        scratch.accept(np.zeros((self.task.channels, scratch.block), np.float32))


@dataclass
class Stream:
    """Chunked, stateful processing. ``accept`` any number of samples; results come per block.

    Memory stays flat however long it runs: a stream holds its graph state, less than one block
    of audio and what its decoder carries. Opened with ``keep_outputs=True`` it also keeps every
    raw frame, and ``outputs()`` concatenates them, equal to ``Session.process_raw`` on the same
    audio once ``flush()`` has run. Where the backend binds arrays (ONNX Runtime on the CPU), every
    call of one block after the first runs in place (``BoundBlock``), its outputs those of a plain
    call to the bit.
    """

    session: Session
    keep_outputs: bool = False
    samples_in: int = 0
    compute_seconds: float = 0.0

    def __post_init__(self):
        self.graph = self.session.runner.streaming_graph()
        self.block = self.graph.streaming.block
        self._state = self.graph.initial_state()
        # audio short of a whole block waits here; copied, since a caller may reuse its chunk
        self._pending = np.zeros((self.session.task.channels, self.block), dtype=np.float32)
        self._filled = 0
        self._finished = False
        self._frames: dict[str, list[np.ndarray]] = {}
        self._frame_index = 0
        self._decode = self.session.task.decoder()
        # the output whose length along its time axis counts the frames a call made
        self._counted = next(t.name for t in self.graph.outputs if t.name not in self.graph._state_outputs)
        self._counted_axis = self.graph.streaming.time_axes.get(self._counted, 1)
        # whole blocks run in place (BoundBlock) once a first one has run plainly, where the backend binds
        self._bound: BoundBlock | None = None
        self._bind = True

    def accept(self, chunk: np.ndarray, sample_rate: int | None = None) -> list[Any]:
        """Add audio [channels, samples]; run every whole block; return the new decoded results."""
        task = self.session.task
        if self._finished:
            raise UsageError("this stream was flushed (end of input); open a new one with session.stream()")
        bound = self._bound
        if (bound is not None and not self._filled and type(chunk) is np.ndarray and chunk.dtype == np.float32
                and chunk.shape == bound.audio.shape):
            # one whole block, live capture's usual chunk: copied where the bound graph reads it,
            # and checked there (a task whose checks return other audio takes the path below)
            np.copyto(bound.audio, chunk)
            if task.prepare_audio(bound.audio, task.sample_rate if sample_rate is None else sample_rate) is bound.audio:
                self.samples_in += self.block
                return self._run_bound()
        # one contiguous float32 copy of a strided chunk (a slice of a longer recording, or a
        # transposed capture), made before the checks: they then read it in place, and so does the graph
        chunk = np.asarray(chunk, dtype=np.float32, order="C")
        chunk = task.prepare_audio(chunk, task.sample_rate if sample_rate is None else sample_rate)
        count, filled = chunk.shape[1], self._filled
        self.samples_in += count
        usable = (filled + count) // self.block * self.block
        if usable == 0:
            self._pending[:, filled : filled + count] = chunk
            self._filled += count
            return []
        taken = usable - filled
        ready = chunk[:, :taken] if filled == 0 else np.concatenate([self._pending[:, :filled], chunk[:, :taken]], axis=1)
        self._filled = count - taken
        if self._filled:
            self._pending[:, : self._filled] = chunk[:, taken:]
        return self._run(ready)

    def flush(self) -> list[Any]:
        """End of input: run the last partial block plus ``task.latency`` samples of silence, so
        every input sample comes out of a lagging graph, keeping only the frames the input
        accounts for. A flushed stream is finished: later flushes return nothing."""
        latency = self.session.task.latency
        if self._finished or (self._filled == 0 and latency == 0):
            return []
        ready = pad_to_block(np.pad(self._pending[:, : self._filled], ((0, 0), (0, latency))), self.block)
        self._finished = True
        return self._run(ready, limit=self.graph.frames_for(self.samples_in + latency))

    def _run(self, audio: np.ndarray, limit: int | None = None) -> list[Any]:
        one_block = limit is None and audio.shape[1] == self.block
        if one_block and self._bound is not None:
            np.copyto(self._bound.audio, audio)
            return self._run_bound()
        start = time.perf_counter()
        frames, state = self.graph.step(audio, self._state)
        self.compute_seconds += time.perf_counter() - start
        if one_block and self._bind:
            self._bind = False
            self._bound = self.graph.bind_block(audio.shape[0], frames, state)
        self._state = state
        if limit is not None:
            frames = self.graph.cut(frames, self._frame_index, limit)
        return self._deliver(frames)

    def _run_bound(self) -> list[Any]:
        """The block in the bound audio, in place."""
        start = time.perf_counter()
        frames, self._state = self._bound(self._state)
        self.compute_seconds += time.perf_counter() - start
        return self._deliver(frames)

    def _deliver(self, frames: dict[str, np.ndarray]) -> list[Any]:
        if self.keep_outputs:
            for name, value in frames.items():
                self._frames.setdefault(name, []).append(value)
        first = self._frame_index
        self._frame_index += frames[self._counted].shape[self._counted_axis]
        return [self._decode(frames, start_frame=first)]

    def outputs(self) -> dict[str, np.ndarray]:
        """Every raw frame so far, concatenated (a stream opened with ``keep_outputs=True``)."""
        if not self.keep_outputs:
            raise UsageError("this stream keeps no raw outputs",
                             hint="open it with session.stream(keep_outputs=True) to collect them")
        axes = self.graph.streaming.time_axes
        return {name: np.concatenate(parts, axis=axes.get(name, 1)) for name, parts in self._frames.items()}

    def real_time_factor(self) -> float:
        seconds = self.samples_in / self.session.task.sample_rate
        return self.compute_seconds / seconds if seconds else 0.0


@dataclass
class WindowedStream:
    """Live use of a task without a streaming graph: one whole-clip result per window.

    ``accept`` buffers audio and, for every full window of ``every`` seconds, runs
    ``Task.process`` and returns ``{"start_s", "end_s", **result}``; ``flush`` runs the remainder.
    Same interface as Stream, so the live loop, sinks and stats work unchanged.
    """

    session: Session
    every: float = DEFAULT_WINDOW_S
    samples_in: int = 0
    compute_seconds: float = 0.0

    def __post_init__(self):
        if self.every <= 0:
            raise UsageError(f"the window must be positive, got {self.every} s")
        self.block = max(1, int(round(self.every * self.session.task.sample_rate)))
        self._buffer = np.zeros((self.session.task.channels, 0), dtype=np.float32)
        self._start = 0

    def accept(self, chunk: np.ndarray, sample_rate: int | None = None) -> list[Any]:
        task = self.session.task
        chunk = task.prepare_audio(chunk, task.sample_rate if sample_rate is None else sample_rate)
        self.samples_in += chunk.shape[1]
        self._buffer = np.concatenate([self._buffer, chunk], axis=1)
        results = []
        while self._buffer.shape[1] >= self.block:
            window, self._buffer = self._buffer[:, : self.block], self._buffer[:, self.block :]
            results.append(self._run(window))
        return results

    def flush(self) -> list[Any]:
        if self._buffer.shape[1] == 0:
            return []
        window, self._buffer = self._buffer, self._buffer[:, :0]
        return [self._run(window)]

    def _run(self, window: np.ndarray) -> dict[str, Any]:
        task, rate = self.session.task, self.session.task.sample_rate
        started = time.perf_counter()
        result = task.decode(task.process(self.session.runner, window))
        self.compute_seconds += time.perf_counter() - started
        span = {"start_s": round(self._start / rate, 3), "end_s": round((self._start + window.shape[1]) / rate, 3)}
        self._start += window.shape[1]
        return {**span, **result} if isinstance(result, dict) else {**span, "result": result}

    def real_time_factor(self) -> float:
        seconds = self.samples_in / self.session.task.sample_rate
        return self.compute_seconds / seconds if seconds else 0.0


def choose_backend(
    bundle: Bundle, backend: str, precision: str, task: Task | None = None, options: Mapping[str, Any] | None = None,
) -> tuple[Any, str, str]:
    """Pick (backend class, precision, reason) for ``bundle`` on this host.

    ``backend="auto"``: every installed backend x precision the bundle holds (what passed the
    accuracy gate; ``precision`` narrows it) is timed briefly on the bundle itself the first time
    on a host (``measure_candidates``: ``task`` runs its own pipeline on a probe signal, with
    ``options`` such as threads), the fastest is chosen, and the choice is kept in the edgeaudio
    cache under the host's fingerprint; the reason quotes the measured times. The torch reference
    is only a last resort. Without ``task`` (or with one candidate) the host profile's order decides."""
    registered = backends()
    artifacts = bundle.artifacts()
    if backend != "auto":
        if backend not in registered:
            raise UsageError(f"unknown backend '{backend}'; known: {', '.join(sorted(registered))}")
        cls = registered[backend]
        ok, why = cls.available()
        if not ok:
            raise BackendUnavailable(f"backend '{backend}' cannot run here: {why}", hint="see `edgeaudio doctor`")
        return cls, _pick_precision(bundle, cls.artifact, precision, artifacts), f"backend '{backend}' requested"
    order, host_reason = _host_order()
    skipped, usable = [], []
    for name in order:
        cls = registered.get(name)
        if cls is None:
            continue
        if not any(b == cls.artifact for b, _ in artifacts):
            skipped.append(f"{name}: not in bundle")
            continue
        if name == REFERENCE_BACKEND and usable:
            continue  # never imported on the run path when another backend runs the bundle
        ok, why = cls.available()
        if not ok:
            skipped.append(f"{name}: {why}")
            continue
        usable.append(cls)
    if usable:
        note = f"; skipped {'; '.join(skipped)}" if skipped else ""
        candidates = [(cls, p) for cls in usable if cls.name != REFERENCE_BACKEND
                      for p in ([precision] if precision != "auto" else PRECISION_ORDER) if (cls.artifact, p) in artifacts]
        if task is None or len(candidates) < 2:
            cls = next((c for c, _ in candidates), usable[0])
            chosen = _pick_precision(bundle, cls.artifact, precision, artifacts)
            return cls, chosen, f"{cls.name}/{chosen}: first usable backend for {host_reason}{note}"
        cls, chosen, why = _measured_choice(bundle, task, candidates, dict(options or {}), host_reason)
        return cls, chosen, f"{cls.name}/{chosen}: {why}{note}"
    kept = sorted({b for b, _ in artifacts})
    missing = [reason for reason in skipped if not reason.endswith(": not in bundle")]
    raise BackendUnavailable(
        f"no backend installed here runs this bundle: it was exported for {bundle.manifest.get('target', 'another target')} "
        f"with {', '.join(kept) or 'no'} artifacts only ({'; '.join(missing) or 'none of them is registered'})",
        hint=f"install what the reason names, or export for this host: edgeaudio export {bundle.task_name} "
             f"--target {_host_profile_name()}",
    )


def probe_signal(channels: int, sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Deterministic test audio, tones plus noise [channels, samples]: what backends are timed on."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = 0.2 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 0.5 * t))
    return (tone[None, :] + 0.05 * rng.standard_normal((channels, t.size))).astype(np.float32)


def measure_candidates(bundle: Bundle, task: Task, candidates, options: Mapping[str, Any],
                       rounds: int = 3) -> tuple[list[dict[str, Any]], str]:
    """Milliseconds the task's own work takes on each (backend class, precision), decoding
    included (the work: ``_probe``), and that work in words. All candidates are loaded and warmed
    up first, then timed in ``rounds`` interleaved rounds (a busy moment on the machine hits them
    all), the median kept. A candidate that fails to load or run is reported, not timed."""
    rows, probes, what = [], [], ""
    for cls, precision in candidates:
        row: dict[str, Any] = {"backend": cls.name, "precision": precision}
        rows.append(row)
        try:
            runner = BundleRunner(bundle, task, cls(dict(options)), precision)
            runner.load_all()
            probe, what = _probe(Session(task, bundle, runner, cls.name, precision, "measuring"))
            probe()
            probes.append((row, probe, []))
        except Exception as exc:  # a backend's own load or run error, or a task that cannot be probed
            row["error"] = f"{type(exc).__name__}: {_first_line(exc)}"
    for _ in range(rounds):
        for row, probe, times in probes:
            start = time.perf_counter()
            probe()
            times.append(time.perf_counter() - start)
    for row, _, times in probes:
        row["ms"] = round(1000 * float(np.median(times)), 3)
    return rows, what


def stream_steps(stream: "Stream | WindowedStream", audio: np.ndarray, chunk: int) -> list[Callable[[], list[Any]]]:
    """``audio`` into ``stream`` in ``chunk``-sample pieces, then the flush, as one call per step
    (to run, time or count each): ``for step in stream_steps(...): step()``."""
    from functools import partial

    pieces = [partial(stream.accept, audio[:, offset : offset + chunk]) for offset in range(0, audio.shape[1], chunk)]
    return [*pieces, stream.flush]


def _probe(session: Session):
    """The work a backend is timed on, and its description: a streaming task's Stream over 1 s of
    probe audio in one-block chunks (live use), a clip task's ``Session.process`` on 3 s, a text
    task's ``generate`` of 1 s."""
    task = session.task
    if task.input_kind is InputKind.TEXT:
        return (lambda: session.generate(PROBE_PROMPT, seconds=1.0, seed=0)), "1 s generated"
    if session.streaming:
        audio = probe_signal(task.channels, task.sample_rate, 1.0)
        block = session.runner.streaming_graph().streaming.block

        def stream():
            for step in stream_steps(session.stream(), audio, block):
                step()

        return stream, f"1 s streamed in {1000 * block / task.sample_rate:.0f} ms blocks"
    audio = probe_signal(task.channels, task.sample_rate, 3.0)
    return (lambda: session.process(audio, task.sample_rate)), "a 3 s clip"


def _measured_choice(bundle: Bundle, task: Task, candidates, options: dict[str, Any], host_reason: str) -> tuple[Any, str, str]:
    """The fastest candidate by ``measure_candidates``, measured once per host and bundle and
    kept in the cache; and why, with the measurements, in words."""
    import datetime
    import json

    from edgeaudio.bundle import MANIFEST, sha256_file
    from edgeaudio.cache import cache_root

    host = _host_fingerprint(options, [cls for cls, _ in candidates])
    names = [f"{cls.name}/{p}" for cls, p in candidates]
    key = hashlib.sha256(json.dumps([host, sha256_file(bundle.root / MANIFEST), names], sort_keys=True).encode()).hexdigest()[:24]
    path = cache_root() / "backend-choice" / f"{key}.json"
    record = json.loads(path.read_text()) if path.is_file() else None
    if record is None:
        when = datetime.datetime.now().isoformat(timespec="minutes")
        measured, what = measure_candidates(bundle, task, candidates, options)
        record = {"host": host, "bundle": str(bundle.root), "measured_at": when, "probe": what, "measured": measured}
        write_atomically(path, lambda spare: spare.write_text(json.dumps(record, indent=1) + "\n"))
        source = f"measured now, kept in {path}"
    else:
        source = f"as measured on this host {record['measured_at']} ({path})"
    timed = sorted((row for row in record["measured"] if "ms" in row), key=lambda row: row["ms"])
    if not timed:  # nothing could be timed: the host profile's order decides, and the load says why
        failed = "; ".join(f"{row['backend']}/{row['precision']}: {row['error']}" for row in record["measured"])
        return candidates[0][0], candidates[0][1], f"first usable backend for {host_reason}; none could be timed ({failed})"
    best = timed[0]
    cls = next(cls for cls, p in candidates if cls.name == best["backend"] and p == best["precision"])
    numbers = ", ".join(f"{row['backend']}/{row['precision']} {row['ms']:.3g} ms" for row in timed)
    failed = [f"{row['backend']}/{row['precision']} failed ({row['error']})" for row in record["measured"] if "ms" not in row]
    return cls, best["precision"], (f"fastest of the usable backends for {host_reason}, {record['probe']}: {numbers}"
                                    + (f"; {'; '.join(failed)}" if failed else "") + f"; {source}")


def _host_fingerprint(options: Mapping[str, Any], classes) -> dict[str, Any]:
    """What makes a measurement hold on a machine: CPU, cores, system, the backends' versions
    and devices (their ``available()`` lines) and the options they run with."""
    import platform

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"system": f"{platform.system()} {platform.release()} {platform.machine()}", "cpu": cpu, "cores": cores,
            "backends": {cls.name: cls.available()[1] for cls in dict.fromkeys(classes)},
            "options": {k: v for k, v in sorted(options.items()) if isinstance(v, (int, float, str))}}


def _host_profile_name() -> str:
    from edgeaudio.profiles import this_host

    return this_host()[0].name


def _host_order() -> tuple[list[str], str]:
    from edgeaudio.profiles import this_host

    profile, reason = this_host()
    order = list(profile.backends) + [b for b in FALLBACK_ORDER if b not in profile.backends]
    return order, f"host profile {profile.name} ({reason})"


def _pick_precision(bundle: Bundle, artifact_backend: str, precision: str, artifacts) -> str:
    have = [p for b, p in artifacts if b == artifact_backend]
    if precision != "auto":
        if precision not in have:
            raise BundleError(
                f"bundle has no {artifact_backend}/{precision} (has {', '.join(have) or 'nothing'} for it)",
                hint="export with that precision or choose another",
            )
        return precision
    default = bundle.manifest.get("default_precision", {}).get(artifact_backend)
    if default in have:
        return default
    return next(p for p in PRECISION_ORDER if p in have)


def load(
    bundle: str | Bundle,
    backend: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
    device: str | None = None,
    task: Task | None = None,
    trust: Sequence[str | Path] | None = None,
) -> Session:
    """Load a bundle (directory or ``.eab``) and pick a backend; ``session.reason`` says why.
    ``task``: the task object the bundle was just made for, reused when it is configured as the
    bundle records (else the installed plugin's task is built from the manifest). ``trust``:
    public key files the bundle must be signed by, besides the environment's trust setting
    (``edgeaudio.signing``)."""
    if not isinstance(bundle, Bundle):
        from edgeaudio.signing import trust_setting

        bundle = load_bundle(bundle, trust=trust_setting(trust) if trust else None)
    if task is None or not made_for(bundle.manifest, task):
        task = task_for_bundle(bundle)
    options: dict[str, Any] = {"threads": threads} if threads else {}
    if device:
        options["device"] = device
    cls, chosen_precision, reason = choose_backend(bundle, backend, precision, task, options)
    start = time.perf_counter()
    runner = BundleRunner(bundle, task, cls(options), chosen_precision)
    try:
        runner.load_all()
    except (EdgeAudioError, KeyboardInterrupt):
        raise
    except Exception as exc:  # the backend's own error on a graph file
        raise BundleError(f"bundle {bundle.root}: {cls.name} cannot load its {chosen_precision} graphs "
                          f"({type(exc).__name__}: {_first_line(exc)})", hint=_MISMATCH_HINT) from exc
    seconds = time.perf_counter() - start
    session = Session(task, bundle, runner, cls.name, chosen_precision, reason, seconds)
    _self_check(session)
    return session


def made_for(manifest: Mapping[str, Any], task: Task) -> bool:
    """Whether a bundle's manifest records ``task``: its name, version and config."""
    import json

    info, recorded = manifest.get("task", {}), manifest.get("provenance", {}).get("config")
    return (info.get("name") == task.name and str(info.get("version")) == str(task.version)
            and json.dumps(recorded, sort_keys=True) == json.dumps(task.config, sort_keys=True))


def task_for_bundle(bundle: Bundle) -> Task:
    """The installed task plugin for the bundle, configured as it was exported, version-checked,
    and agreeing with the bundle on sample rate and channels."""
    info = bundle.manifest["task"]
    try:
        task = get_task(info["name"], bundle.manifest.get("provenance", {}).get("config"))
    except (EdgeAudioError, KeyboardInterrupt):
        raise
    except Exception as exc:  # the task's own code, on a config the manifest carries
        raise BundleError(f"bundle {bundle.root}: its recorded config does not fit task '{info['name']}' "
                          f"({type(exc).__name__}: {exc})", hint=_MISMATCH_HINT) from exc
    if str(task.version) != str(info["version"]):
        raise BundleError(
            f"bundle was exported by task '{task.name}' version {info['version']}, installed is {task.version}",
            hint="re-export the bundle with the installed plugin, or install the matching plugin version",
        )
    audio = bundle.manifest["audio"]
    if (audio["sample_rate"], audio["channels"]) != (task.sample_rate, task.channels):
        raise BundleError(f"bundle {bundle.root} says {audio['sample_rate']} Hz, {audio['channels']} channel(s); "
                          f"task '{task.name}' as configured there takes {task.sample_rate} Hz, {task.channels}",
                          hint=_MISMATCH_HINT)
    return task


_MISMATCH_HINT = ("re-export the bundle (an edited manifest no longer matches its graphs or task); if `edgeaudio "
                  "export` made it as it is, this is a bug: rerun with --debug and report it")


def _self_check(session: Session) -> None:
    """Run one short silence through the bundle's graphs and the task's decode, so a bundle whose
    manifest does not fit its graphs or its task (an edited streaming block, a changed config) is
    refused at load with a message instead of failing mid-run. Tasks that generate from text are
    not run here: one generation costs as much as a real one."""
    task = session.task
    if task.input_kind is InputKind.TEXT:
        return
    try:
        if session.streaming:
            stream = session.stream()
            stream.accept(np.zeros((task.channels, stream.block), np.float32))
            stream.flush()
        else:
            seconds = max(task.min_input_seconds, 0.1)
            task.decode(task.process(session.runner, np.zeros((task.channels, round(seconds * task.sample_rate)), np.float32)))
    except (EdgeAudioError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise BundleError(f"bundle {session.bundle.root} does not run as its manifest describes: "
                          f"{type(exc).__name__}: {_first_line(exc)}", hint=_MISMATCH_HINT) from exc


def _first_line(exc: BaseException) -> str:
    """The first line of a runtime's message (OpenVINO's run to dozens of lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else repr(exc)
