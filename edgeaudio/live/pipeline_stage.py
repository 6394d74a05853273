"""One pipeline stage: the audio it reads (channels, windows), its bounded queue and drop policy,
its worker thread running the model, its sinks, and its numbers (see ``pipeline`` for the whole)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeaudio.errors import EdgeAudioError, UsageError
from edgeaudio.live.loop import WINDOW_S, _latency_ms
from edgeaudio.live.pipeline_spec import NEVER, SinkSpec, StageSpec
from edgeaudio.live.sinks import (JsonLinesSink, Sink, SpeakerSink, UdpSink, WavSink, check_finite, plugin_sinks,
                                  result_items)
from edgeaudio.runtime import DEFAULT_WINDOW_S
from edgeaudio.task import InputKind, Task

if TYPE_CHECKING:
    from edgeaudio.live.pipeline import _Run
    from edgeaudio.runtime import Session


@dataclass
class StageItem:
    audio: np.ndarray  # [channels, samples] at the stage's rate
    offset: int  # where audio[:, 0] sits on the stage's input clock, in samples
    captured: float  # time.monotonic() when the last sample that produced it was captured


class StageQueue:
    """A stage's inbox, bounded in samples of audio (a single item larger than the bound still
    fits an empty queue). ``close``: no more items; ``get`` drains what is left, then gives None."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.peak = 0
        self._items: deque[StageItem] = deque()
        self._queued = 0
        self._closed = False
        self._changed = threading.Condition()

    def put(self, item: StageItem, wait: bool, abort: threading.Event) -> tuple[bool, float]:
        """Queue ``item``, waiting for room when ``wait``; return whether it was queued and how
        long the caller waited. Refused: the queue is full and ``wait`` is off, closed, or the
        run is being aborted."""
        size = item.audio.shape[1]
        started = None
        with self._changed:
            while not self._closed and self._queued and self._queued + size > self.capacity:
                if not wait or abort.is_set():
                    return False, seconds_since(started)
                started = started or time.monotonic()
                self._changed.wait(0.1)
            if self._closed:
                return False, seconds_since(started)
            self._items.append(item)
            self._queued += size
            self.peak = max(self.peak, self._queued)
            self._changed.notify_all()
        return True, seconds_since(started)

    def get(self) -> StageItem | None:
        with self._changed:
            while not self._items and not self._closed:
                self._changed.wait()
            if not self._items:
                return None
            item = self._items.popleft()
            self._queued -= item.audio.shape[1]
            self._changed.notify_all()
            return item

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()


def seconds_since(started: float | None) -> float:
    return time.monotonic() - started if started is not None else 0.0


class Stage:
    """One stage for one run: input selection and windows (on its producer's thread), queue,
    worker thread, model stream, sinks, and its numbers."""

    def __init__(self, spec: StageSpec, session: Session, run: _Run):
        task = session.task
        self.spec, self.session, self.task, self.run = spec, session, task, run
        self.name, self.rate = spec.name, task.sample_rate
        self.clip = task.input_kind is InputKind.CLIP
        self.policy = spec.policy(task)
        self.every = spec.every or DEFAULT_WINDOW_S
        self.window = max(1, round(self.every * self.rate))
        if not run.source.realtime:  # no clock to keep: read a file no further ahead than each stage needs
            self.queue = StageQueue(1)
        elif self.clip:
            self.queue = StageQueue(self.window * max(1, math.floor(spec.queue / self.every + 1e-9)))  # whole windows
        else:
            self.queue = StageQueue(max(1, round(spec.queue * self.rate)))
        self.readers: list[Stage] = []
        self.sinks: list[Sink] = []
        self.to_stream = False
        self.error: BaseException | None = None
        # producer side
        self._offered = 0
        self._parts: list[np.ndarray] = []
        self._parts_len = 0
        self._window_start = 0
        self.drops = self.dropped_samples = 0
        self.waited = 0.0
        self._warned_at = -WINDOW_S
        # worker side
        self.results = self.restarts = 0
        self.latencies: list[float] = []
        self.busy = self.model_seconds = 0.0
        self.processed = 0

    def open_sinks(self) -> None:
        for sink in self.spec.default_sinks(self.task):
            if sink.kind == "json":
                self.to_stream = True
            else:
                self.sinks.append(open_stage_sink(sink, self.task))

    # -- producer side: the capture thread, or the worker of the stage this one reads -------------
    def offer(self, audio: np.ndarray, captured: float) -> None:
        """The next audio [channels, samples] of this stage's source, at the stage's rate."""
        audio = self._select(audio)
        if self.clip:
            self._parts.append(audio)
            self._parts_len += audio.shape[1]
            while self._parts_len >= self.window:
                joined = np.concatenate(self._parts, axis=1)
                self._parts, self._parts_len = [joined[:, self.window :]], joined.shape[1] - self.window
                self._put(StageItem(joined[:, : self.window], self._window_start, captured))
                self._window_start += self.window
        else:
            self._put(StageItem(audio, self._offered, captured))
        self._offered += audio.shape[1]

    def finish(self) -> None:
        """End of this stage's input: the last partial window goes in too, then the queue closes."""
        if self.clip and self._parts_len:
            self._put(StageItem(np.concatenate(self._parts, axis=1), self._window_start, self.run.last_capture), last=True)
        self.queue.close()

    def _select(self, audio: np.ndarray) -> np.ndarray:
        ref = self.spec.input
        audio = audio[None, :] if audio.ndim == 1 else audio
        if ref.channels is not None:
            if max(ref.channels) >= audio.shape[0]:
                raise UsageError(f"stage '{self.name}' reads channel {max(ref.channels)} of '{ref.source}', "
                                 f"which delivered {audio.shape[0]} channel(s)",
                                 hint="a waveform task's output has as many channels as it takes")
            audio = audio[list(ref.channels)]
        if ref.beam:
            audio = audio.mean(axis=0, keepdims=True)
        return np.ascontiguousarray(audio, dtype=np.float32)

    def _put(self, item: StageItem, last: bool = False) -> None:
        realtime = self.run.source.realtime
        wait = self.policy == NEVER or not realtime or last
        queued, waited = self.queue.put(item, wait, self.run.abort)
        self.waited += waited
        if self.run.abort.is_set() or not realtime:
            return
        size = item.audio.shape[1]
        unit = "window" if self.clip else "chunk"
        if not queued:
            self.drops += 1
            self.dropped_samples += size
            self._warn(f"skipped the {size / self.rate:.2f} s {unit} at {item.offset / self.rate:.1f} s "
                       f"({self.drops} {unit}(s), {self.dropped_samples / self.rate:.1f} s skipped in all)")
        elif waited:
            self._warn(f"its queue is full ({self.spec.queue:g} s of audio), so its input waits for it "
                       f"({self.waited:.2f} s in all); a live device loses samples meanwhile")

    def _warn(self, what: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WINDOW_S:
            self._warned_at = now
            self.run.log(f"warning: stage '{self.name}' is falling behind real time: {what}")

    # -- worker side ------------------------------------------------------------------------------
    def start(self) -> None:
        self._new_stream(0)
        self.thread = threading.Thread(target=self._work, name=f"edgeaudio-stage-{self.name}", daemon=True)
        self.thread.start()

    def warm_up(self) -> None:
        self.session.warm_up(self.every)

    def _work(self) -> None:
        try:
            while (item := self.queue.get()) is not None:
                begin = time.monotonic()
                self._take(item)
                self.busy += time.monotonic() - begin
            begin = time.monotonic()
            self._end_stream()
            self.busy += time.monotonic() - begin
        except BaseException as exc:  # reported by the run on the caller's thread
            if isinstance(exc, EdgeAudioError):  # the same error, saying which stage it stopped
                exc.args = (f"stage '{self.name}': {exc}",)
            self.error = exc
            self.run.abort.set()
            self.queue.close()
        finally:
            for reader in self.readers:
                reader.finish()

    def _new_stream(self, offset: int) -> None:
        self.stream = self.session.stream(self.every)
        self._segment, self._fed, self._next = offset, 0, offset
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        least = 0 if self.spec.chunk is None else round(self.spec.chunk * self.rate)
        self._least = max(self.stream.block, least)  # audio per model call: whole blocks, at least ``chunk``
        self._captured = self.run.started

    def _take(self, item: StageItem) -> None:
        size = item.audio.shape[1]
        self._captured = item.captured
        if self.clip:
            results = self.stream.accept(item.audio)
            if size < self.window:  # the last, partial window
                results += self.stream.flush()
            for result in results:  # the window's place on the capture clock, skipped windows included
                result.update(start_s=round(item.offset / self.rate, 3), end_s=round((item.offset + size) / self.rate, 3))
            self.processed += size
            self._deliver(results, item.offset + size)
            return
        if item.offset != self._next:  # audio was skipped: this stream ends, a new one starts after the gap
            self._end_stream()
            self.restarts += 1
            self._new_stream(item.offset)
        self._pending.append(item.audio)
        self._pending_len += size
        self._next = item.offset + size
        if self._pending_len >= self._least:
            usable = self._pending_len // self.stream.block * self.stream.block
            self._feed(usable)

    def _feed(self, samples: int) -> None:
        joined = np.concatenate(self._pending, axis=1)
        self._pending, self._pending_len = [joined[:, samples:]], joined.shape[1] - samples
        results = self.stream.accept(joined[:, :samples])
        self._fed += samples
        self._deliver(results, self._segment + self._fed)

    def _end_stream(self) -> None:
        """The rest of the input and the stream's flush (a lagging graph's last samples)."""
        if self.clip:
            self.model_seconds += self.stream.compute_seconds
            return
        whole = self._pending_len // self.stream.block * self.stream.block
        if whole:
            self._feed(whole)
        if self._pending_len:  # less than a block: the stream keeps it for its flush
            self._feed(self._pending_len)
        self._deliver(self.stream.flush(), self._segment + self._fed)
        self.model_seconds += self.stream.compute_seconds
        self.processed += self.stream.samples_in

    def _deliver(self, results: list[Any], end: int) -> None:
        """Results out: audio on to the stages reading this one first, then the sinks."""
        if not results:
            return
        check_finite(results, f" after {end / self.rate:.2f} s of the stage's input")
        if self.readers:
            audio = self.task.results_to_audio(results)
            if audio is not None and np.size(audio):
                audio = np.asarray(audio, np.float32)
                for reader in self.readers:
                    waited = reader.waited
                    reader.offer(audio, self._captured)
                    self.busy -= reader.waited - waited  # time blocked on a reader is the reader's, not work
        for sink in self.sinks:
            sink.write(results)
        items = result_items(results)
        if self.to_stream:
            self.run.stream.emit(self.name, round(end / self.rate, 3), items)
        self.latencies.append(time.monotonic() - self._captured)
        self.results += len(items)

    def summary(self) -> dict[str, Any]:
        audio = self.processed / self.rate
        processing_rtf = self.busy / audio if audio else 0.0
        realtime = self.run.source.realtime
        return {
            "task": self.task.name,
            "backend": f"{self.session.backend}/{self.session.precision}",
            "input": self.spec.input.text,
            "drop": self.policy,
            **({"every": self.every} if self.clip else {"restarts": self.restarts}),
            "results": self.results,
            "audio_seconds": round(audio, 3),
            "rtf": round(self.model_seconds / audio, 4) if audio else 0.0,
            "processing_rtf": round(processing_rtf, 4),
            "latency_ms": _latency_ms(self.latencies),
            "drops": self.drops,
            "dropped_seconds": round(self.dropped_samples / self.rate, 3),
            "waited_seconds": round(self.waited, 3),
            "max_backlog_seconds": round(self.queue.peak / self.rate, 3),
            "fell_behind": bool(realtime and (self.drops or self.waited > 0 or processing_rtf > 1)),
            "output_underflows": sum(sink.underflows for sink in self.sinks),
        }


def open_stage_sink(sink: SinkSpec, task: Task) -> Sink:
    if sink.kind == "jsonl":
        return JsonLinesSink(sink.value)
    if sink.kind == "wav":
        return WavSink(sink.value, task)
    if sink.kind == "speaker":
        return SpeakerSink(task, device=None if sink.value is True else sink.value)
    if sink.kind == "udp":
        return UdpSink(sink.value)
    formats, options = plugin_sinks(task)
    return formats[sink.kind].open(sink.value, task) if sink.kind in formats else options[sink.kind].open(sink.value, task)


# --- one run -------------------------------------------------------------------------------------
