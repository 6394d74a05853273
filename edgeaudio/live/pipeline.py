"""Pipelines: one capture fanned out to several models, each at its own pace, into one result stream.

The capture runs on the caller's thread: it reads the source once and offers every chunk to the
stages that read the capture. Each stage has its own worker thread behind a queue bounded in
seconds of audio, so a slow model never holds up a fast one; a stage that returns a waveform
offers it to the stages reading it the same way. When a stage's queue is full its drop policy
decides, and nothing is lost silently:

- ``never``: the producer waits for room. The stage loses nothing; a live capture that waits
  loses samples at its ring buffer instead, counted there, and the stage reports that it fell
  behind.
- ``skip``: the newest window (whole-clip tasks) or chunk (streaming tasks) is dropped and
  counted; a streaming stage that skips ends its stream and starts a fresh one after the gap.

Every drop and wait is warned about on stderr as it happens (at most once a second per stage,
with the running count) and counted in the summary. From a file read at full speed there is no
real time to keep: every stage waits for room, nothing is dropped, and each stage's results
equal those of the stage run alone on the same input.

Timestamps are on the capture's sample clock: a result's ``time_s`` is the end of the audio it
accounts for, in seconds since the capture began (samples a live capture lost are not on it).
A waveform task's output is aligned with its input, so stages reading it share that clock.

A stage whose model fails, or whose results hold NaN or infinity (``check_finite``, before any
reader or sink sees them), stops the run: the capture stops, the other stages finish what they
hold, and then every sink and the result stream are aborted, so no partial file is left. Ctrl-C
and a lost device end the run normally, keeping every result so far.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from edgeaudio.errors import DeviceLost
from edgeaudio.live.loop import WINDOW_S, _ctrl_c_stops, _to_stderr
from edgeaudio.live.pipeline_spec import CAPTURE, PipelineSpec, capture_rate, check_tasks
from edgeaudio.live.pipeline_stage import Stage
from edgeaudio.live.sinks import JsonLinesSink, close_sinks
from edgeaudio.live.sources import Chunk, Source, SourceStats, open_source, plugin_source_kind

if TYPE_CHECKING:
    from edgeaudio.profiles import ArrayProfile
    from edgeaudio.runtime import Session

Log = Callable[[str], None]
OnResult = Callable[[str, float, Any], None]


class Pipeline:
    """The loaded stages of a checked spec and the capture they share. ``run`` it on a file, a
    simulated array or the live array, as often as you like; ``edgeaudio.api.pipeline`` builds one
    from a spec file."""

    def __init__(self, spec: PipelineSpec, sessions: Mapping[str, Session], array: ArrayProfile, force: bool = False):
        tasks = {name: session.task for name, session in sessions.items()}
        check_tasks(spec, tasks, array, force)
        self.spec, self.sessions, self.array, self.force = spec, dict(sessions), array, force
        self.sample_rate = capture_rate(spec, tasks)
        self.channels = array.num_mics

    def open_source(
        self,
        input_spec: str | os.PathLike | None = None,
        device_index: int | None = None,
        chunk_ms: float = 100.0,
        realtime: bool = False,
        log: Log = lambda message: None,
    ) -> Source:
        """The capture ``input_spec`` names, as ``edgeaudio run`` opens it (a file, ``mic`` or
        nothing for the live array, ``PREFIX:...`` for a plugin's source), delivering the array's
        mics at the capture's rate. ``realtime`` plays a file at the pace of a device, so that
        the drop policies apply as they would live."""
        input_spec = None if input_spec is None else str(input_spec)
        is_file = input_spec not in (None, "mic") and plugin_source_kind(input_spec) is None
        capture = _Capture(f"{self.spec.name} (pipeline)", self.sample_rate, self.channels, self.array.name,
                           self._classes())
        source = open_source(input_spec, None if is_file else self.array, capture, device_index=device_index,
                             chunk_ms=chunk_ms, log=log, force=self.force)
        return RealTimeSource(source) if realtime and not source.realtime else source

    def _classes(self) -> tuple[str, ...]:
        """What the stages reading the capture detect, for a source that makes audio of it."""
        found: list[str] = []
        for stage in self.spec.readers(CAPTURE):
            found += [name for name in self.sessions[stage.name].task.classes if name not in found]
        return tuple(found)

    def run(
        self,
        source: str | os.PathLike | Source | None = None,
        seconds: float | None = None,
        output: str | None = None,
        on_result: OnResult | None = None,
        device_index: int | None = None,
        chunk_ms: float = 100.0,
        realtime: bool = False,
        log: Log | None = None,
    ) -> dict[str, Any]:
        """Run every stage on one capture until the input ends, ``seconds`` of audio, Ctrl-C or
        device loss; close the source and every sink; return the summary.

        ``source``: a Source, or what ``open_source`` takes (a file, ``mic``, ``sim:...``).
        Results of the stages whose sinks include ``json`` go to ``on_result(stage, time_s,
        result)`` when given, else as JSON lines ``{"stage", "time_s", "result"}`` to ``output``
        or stdout. The summary has the capture's numbers, the run's CPU time and peak RSS, and,
        under ``stages``, each stage's results, real-time factor, latency from capture to result
        (ms), drops, waits and whether it fell behind.
        """
        log = log or _to_stderr
        if not isinstance(source, Source):
            source = self.open_source(source, device_index, chunk_ms, realtime, log)
        try:
            stream: ResultStream = CallbackResults(on_result) if on_result else JsonResultLines(output)
            run = _Run(self, source, stream, log)
        except BaseException:
            source.close()
            raise
        return run.go(seconds)


@dataclass(frozen=True)
class _Capture:
    """What ``open_source`` needs to know of the model it feeds: here, the pipeline's capture."""

    name: str
    sample_rate: int
    channels: int
    array: str | None
    classes: tuple[str, ...]


class RealTimeSource(Source):
    """Another source (a file) delivered at the pace of a device: each chunk at the moment its last
    sample would have been captured. A consumer more than ``buffer_seconds`` late loses chunks,
    counted in ``dropped_samples``, as a device's ring buffer would lose them."""

    realtime = True

    def __init__(self, inner: Source, buffer_seconds: float = 2.0):
        super().__init__(inner.sample_rate, inner.channels, f"{inner.description}, played in real time")
        self.inner, self.buffer_seconds = inner, buffer_seconds
        self.notes = inner.notes
        self._dropped = 0

    def _chunks(self) -> Iterator[Chunk]:
        start, position = time.monotonic(), 0
        for chunk, _ in self.inner:
            position += chunk.shape[1]
            due = start + position / self.sample_rate
            late = time.monotonic() - due
            if late < 0:
                time.sleep(-late)
            elif late > self.buffer_seconds:
                self._dropped += chunk.shape[1]
                continue
            yield chunk, due

    def stats(self) -> SourceStats:
        return SourceStats(delivered_samples=self._delivered, dropped_samples=self._dropped)

    def close(self) -> None:
        self.inner.close()


# --- the result stream ---------------------------------------------------------------------------


class ResultStream:
    """The pipeline's one stream of results, written by every stage's worker as results exist;
    a lock keeps each result whole."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def emit(self, stage: str, time_s: float, items: list[Any]) -> None:
        with self._lock:
            for item in items:
                self.write(stage, time_s, item)
            self.counts[stage] = self.counts.get(stage, 0) + len(items)

    def write(self, stage: str, time_s: float, item: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release; safe to call more than once."""

    def abort(self) -> None:
        """Release after a failed run, keeping nothing it would have written; by default ``close``."""
        self.close()

    def summary(self) -> str | None:
        return None


class JsonResultLines(ResultStream):
    """``{"stage", "time_s", "result"}`` per line, to ``path`` or stdout, flushed per result."""

    def __init__(self, path: str | None = None):
        super().__init__()
        self._lines = JsonLinesSink(path)

    def write(self, stage: str, time_s: float, item: Any) -> None:
        self._lines.write([{"stage": stage, "time_s": time_s, "result": item}])

    def close(self) -> None:
        self._lines.close()

    def abort(self) -> None:
        self._lines.abort()

    def summary(self) -> str | None:
        return self._lines.summary()


class CallbackResults(ResultStream):
    """Each result to ``on_result(stage, time_s, result)``, on the stage's worker thread, one
    call at a time (a slow callback holds up every stage that writes to the stream)."""

    def __init__(self, on_result: OnResult):
        super().__init__()
        self._on_result = on_result

    def write(self, stage: str, time_s: float, item: Any) -> None:
        self._on_result(stage, time_s, item)


# --- stages --------------------------------------------------------------------------------------


class _Run:
    """The capture loop on the caller's thread, the stages' workers, and the summary."""

    def __init__(self, pipeline: Pipeline, source: Source, stream: ResultStream, log: Log):
        self.pipeline, self.source, self.stream, self.log = pipeline, source, stream, log
        self.abort = threading.Event()  # a stage failed: stop feeding anything
        self.started = self.last_capture = time.monotonic()
        self.stages = {spec.name: Stage(spec, pipeline.sessions[spec.name], self) for spec in pipeline.spec.stages}
        for stage in self.stages.values():
            stage.readers = [self.stages[reader.name] for reader in pipeline.spec.readers(stage.name)]
        try:
            for stage in self.stages.values():
                stage.open_sinks()
        except BaseException:
            self._close_sinks(failed=True)
            raise

    def go(self, seconds: float | None) -> dict[str, Any]:
        ended, error, delivered = "end", None, 0
        rate = self.pipeline.sample_rate
        limit = None if seconds is None else round(seconds * rate)
        capture_readers = [self.stages[spec.name] for spec in self.pipeline.spec.readers(CAPTURE)]
        stop = threading.Event()
        lost = _CaptureLosses(self.source, self.log)
        running = False
        try:
            for stage in self.stages.values():
                stage.warm_up()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            self.started = time.monotonic()
            for stage in self.stages.values():
                stage.start()
            running = True
            try:
                with _ctrl_c_stops(stop):
                    for chunk, captured in self.source:
                        if limit is not None:
                            chunk = chunk[:, : limit - delivered]
                        delivered += chunk.shape[1]
                        self.last_capture = captured
                        for stage in capture_readers:
                            stage.offer(chunk, captured)
                        lost.check()
                        if limit is not None and delivered >= limit:
                            ended = "seconds"
                            break
                        if stop.is_set():
                            ended = "interrupted"
                            break
                        if self.abort.is_set():
                            break
            except DeviceLost as exc:
                ended, error = "device_lost", str(exc)
            except KeyboardInterrupt:
                ended = "interrupted"
        except BaseException:
            self.abort.set()  # stages stop taking audio; what they hold is still finished below
            raise
        finally:
            self.source.close()
            if running:
                for stage in capture_readers:
                    stage.finish()
                for stage in self.stages.values():
                    stage.thread.join()
            self._close_sinks(failed=self.abort.is_set())
        lost.check(final=True)
        failed = next((stage.error for stage in self.stages.values() if stage.error is not None), None)
        if failed is not None:
            raise failed
        for line in filter(None, [self.stream.summary()] + [s.summary() for st in self.stages.values() for s in st.sinks]):
            self.log(line)
        return self._summary(ended, error, delivered / rate, usage)

    def _close_sinks(self, failed: bool) -> None:
        """Close every sink and the result stream; after a failure abort them instead, so that no
        partial file is left behind."""
        for stage in self.stages.values():
            close_sinks(stage.sinks, failed)
        self.stream.abort() if failed else self.stream.close()

    def _summary(self, ended: str, error: str | None, audio: float, usage) -> dict[str, Any]:
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
        stages = {name: stage.summary() for name, stage in self.stages.items()}
        capture = asdict(self.source.stats())
        return {
            "pipeline": self.pipeline.spec.name,
            "source": self.source.description,
            "ended": ended,
            "error": error,
            "audio_seconds": round(audio, 3),
            "wall_seconds": round(time.monotonic() - self.started, 3),
            "cpu_seconds": round(cpu, 3),
            "peak_rss_mb": round(after.ru_maxrss / 1024, 1),  # Linux reports kilobytes
            "capture": capture,
            "drops": sum(stage["drops"] for stage in stages.values()),
            "fell_behind": capture["dropped_samples"] > 0 or any(stage["fell_behind"] for stage in stages.values()),
            "stages": stages,
        }


class _CaptureLosses:
    """Says on stderr, at most once a second, when a live capture loses samples at its buffer."""

    def __init__(self, source: Source, log: Log):
        self.source, self.log = source, log
        self._seen = 0
        self._at = time.monotonic()

    def check(self, final: bool = False) -> None:
        if time.monotonic() - self._at < WINDOW_S and not final:
            return
        self._at = time.monotonic()
        dropped = self.source.stats().dropped_samples
        if dropped > self._seen:
            self.log(f"warning: the capture lost {dropped - self._seen} sample(s) ({dropped} in all): "
                     "a stage with drop: never is behind, or the machine is overloaded")
            self._seen = dropped
