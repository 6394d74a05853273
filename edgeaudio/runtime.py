"""Session (whole clips) and Stream (chunked, stateful audio) over any backend.

A streaming graph takes audio [batch, channels, samples] in multiples of its ``block`` plus its
state inputs, and returns frames plus the next state. Offline processing is one call from zero
state on the clip padded to a whole block; streaming is many calls carrying the state, with the
last partial block padded the same way, so the two agree to the graph's tolerance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from edgeaudio.backends.base import GraphRunner, backends
from edgeaudio.bundle import Bundle, load_bundle
from edgeaudio.errors import BackendUnavailable, BundleError, UsageError
from edgeaudio.task import Runner, StatePair, Streaming, Task, TensorSpec
from edgeaudio.tasks import get_task

FALLBACK_ORDER = ("openvino", "onnxruntime", "tensorrt", "torch")
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
        feeds = dict(state)
        feeds[streaming.audio_input] = np.ascontiguousarray(audio[None, :, :], dtype=np.float32)
        out = self.run(feeds)
        next_state = {pair.input: out[pair.output] for pair in self.state}
        frames = {name: value for name, value in out.items() if name not in {p.output for p in self.state}}
        return frames, next_state

    def run_offline(self, audio: np.ndarray, latency: int = 0) -> dict[str, np.ndarray]:
        """A whole clip from zero state, followed by ``latency`` samples of silence so that a
        graph whose output lags its input lets every input sample out; the frames are cut to
        those the clip accounts for (``frames_for``), which is what a flushed Stream gives."""
        streaming = self._require_streaming()
        padded = pad_to_block(np.pad(audio, ((0, 0), (0, latency))), streaming.block)
        frames, _ = self.step(padded, self.initial_state())
        return self.cut(frames, 0, self.frames_for(audio.shape[1] + latency))

    def frames_for(self, samples: int) -> int:
        """Output frames that ``samples`` input samples account for (a partial block counts)."""
        streaming = self._require_streaming()
        return -(-samples * streaming.frames_per_block // streaming.block)

    def cut(self, frames: dict[str, np.ndarray], first: int, limit: int) -> dict[str, np.ndarray]:
        """``frames`` starting at output frame ``first``, without those at or after ``limit``."""
        axes = self._require_streaming().time_axes
        keep = max(limit - first, 0)
        return {name: np.take(value, range(min(keep, value.shape[axes.get(name, 1)])), axis=axes.get(name, 1))
                for name, value in frames.items()}  # fmt: skip


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

    def stream(self, every: float | None = None) -> "Stream | WindowedStream":
        """A Stream for streaming tasks; for the others (captioning) a WindowedStream that runs
        the whole-clip pipeline on every ``every`` seconds (default 5) of audio."""
        if self.streaming:
            return Stream(self)
        return WindowedStream(self, every or DEFAULT_WINDOW_S)


@dataclass
class Stream:
    """Chunked, stateful processing. ``accept`` any number of samples; results come per block.

    ``outputs()`` concatenates every raw frame produced so far, equal to ``Session.process_raw``
    on the same audio once ``flush()`` has run.
    """

    session: Session
    _buffer: np.ndarray | None = None
    _state: dict[str, np.ndarray] = field(default_factory=dict)
    _frames: dict[str, list[np.ndarray]] = field(default_factory=dict)
    _frame_index: int = 0
    samples_in: int = 0
    compute_seconds: float = 0.0

    def __post_init__(self):
        self.graph = self.session.runner.streaming_graph()
        self.block = self.graph.streaming.block
        self._state = self.graph.initial_state()
        self._buffer = np.zeros((self.session.task.channels, 0), dtype=np.float32)
        self._decode = self.session.task.decoder()

    def accept(self, chunk: np.ndarray, sample_rate: int | None = None) -> list[Any]:
        """Add audio [channels, samples]; run every whole block; return the new decoded results."""
        task = self.session.task
        if self._buffer is None:
            raise UsageError("this stream was flushed (end of input); open a new one with session.stream()")
        chunk = task.prepare_audio(chunk, task.sample_rate if sample_rate is None else sample_rate)
        self.samples_in += chunk.shape[1]
        self._buffer = np.concatenate([self._buffer, chunk], axis=1)
        usable = (self._buffer.shape[1] // self.block) * self.block
        if usable == 0:
            return []
        ready, self._buffer = self._buffer[:, :usable], self._buffer[:, usable:]
        return self._run(ready)

    def flush(self) -> list[Any]:
        """End of input: run the last partial block plus ``task.latency`` samples of silence, so
        every input sample comes out of a lagging graph, keeping only the frames the input
        accounts for. A flushed stream is finished: later flushes return nothing."""
        latency = self.session.task.latency
        if self._buffer is None or (self._buffer.shape[1] == 0 and latency == 0):
            return []
        ready = pad_to_block(np.pad(self._buffer, ((0, 0), (0, latency))), self.block)
        self._buffer = None
        return self._run(ready, limit=self.graph.frames_for(self.samples_in + latency))

    def _run(self, audio: np.ndarray, limit: int | None = None) -> list[Any]:
        start = time.perf_counter()
        frames, self._state = self.graph.step(audio, self._state)
        self.compute_seconds += time.perf_counter() - start
        if limit is not None:
            frames = self.graph.cut(frames, self._frame_index, limit)
        axes = self.graph.streaming.time_axes
        for name, value in frames.items():
            self._frames.setdefault(name, []).append(value)
        first = self._frame_index
        self._frame_index += next(iter(frames.values())).shape[axes.get(next(iter(frames)), 1)]
        return [self._decode(frames, start_frame=first)]

    def outputs(self) -> dict[str, np.ndarray]:
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


def choose_backend(bundle: Bundle, backend: str, precision: str) -> tuple[Any, str, str]:
    """Pick (backend class, precision, reason) for ``bundle`` on this host."""
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
    skipped = []
    for name in order:
        cls = registered.get(name)
        if cls is None:
            continue
        if not any(b == cls.artifact for b, _ in artifacts):
            skipped.append(f"{name}: not in bundle")
            continue
        ok, why = cls.available()
        if not ok:
            skipped.append(f"{name}: {why}")
            continue
        chosen = _pick_precision(bundle, cls.artifact, precision, artifacts)
        note = f"; skipped {'; '.join(skipped)}" if skipped else ""
        return cls, chosen, f"{name}/{chosen}: first usable backend for {host_reason}{note}"
    raise BackendUnavailable(
        f"no installed backend can run this bundle ({'; '.join(skipped) or 'no backends registered'})",
        hint="see `edgeaudio doctor`",
    )


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
) -> Session:
    """Load a bundle (directory or ``.eab``) and pick a backend; ``session.reason`` says why.
    ``task``: the task object the bundle was just made for, reused when it is configured as the
    bundle records (else the installed plugin's task is built from the manifest)."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    if task is None or not _made_for(bundle, task):
        task = task_for_bundle(bundle)
    cls, chosen_precision, reason = choose_backend(bundle, backend, precision)
    options: dict[str, Any] = {"threads": threads} if threads else {}
    if device:
        options["device"] = device
    start = time.perf_counter()
    runner = BundleRunner(bundle, task, cls(options), chosen_precision)
    runner.load_all()
    seconds = time.perf_counter() - start
    return Session(task, bundle, runner, cls.name, chosen_precision, reason, seconds)


def _made_for(bundle: Bundle, task: Task) -> bool:
    import json

    info, recorded = bundle.manifest["task"], bundle.manifest.get("provenance", {}).get("config")
    return (info["name"] == task.name and str(info["version"]) == str(task.version)
            and json.dumps(recorded, sort_keys=True) == json.dumps(task.config, sort_keys=True))


def task_for_bundle(bundle: Bundle) -> Task:
    """The installed task plugin for the bundle, configured as it was exported, version-checked."""
    info = bundle.manifest["task"]
    task = get_task(info["name"], bundle.manifest.get("provenance", {}).get("config"))
    if str(task.version) != str(info["version"]):
        raise BundleError(
            f"bundle was exported by task '{task.name}' version {info['version']}, installed is {task.version}",
            hint="re-export the bundle with the installed plugin, or install the matching plugin version",
        )
    return task
