"""The live loop: audio from a source through a Stream to the sinks, with the numbers a live user needs.

The PortAudio callback thread (or a file, or a paced scene) produces; this loop is the worker that
runs the model and hands every result to the sinks as soon as it exists. It measures end-to-end
latency (a chunk's capture moment to its results leaving the sinks), the real-time factor, and the
samples the source lost. When processing falls behind a real-time source it says so on stderr,
with the measured real-time factor, rather than letting audio vanish unnoticed.

However the run ends (input exhausted, ``seconds`` reached, Ctrl-C or SIGTERM, the device lost) the
stream's last partial block is processed and every sink is flushed and closed; the summary says how
it ended. A run that fails instead (an error in the model, NaN in its results) aborts the sinks, so
no partial file is left. The input is watched for what makes results meaningless (clipping,
overload, input shorter than the model needs: ``edgeaudio.audio.checks``), said once each.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, Callable, Iterator

import numpy as np

from edgeaudio.audio.checks import InputCheck
from edgeaudio.live.sinks import Sink, close_sinks, result_items, write_results
from edgeaudio.live.sources import Source
from edgeaudio.errors import DeviceLost
from edgeaudio.runtime import Stream

WINDOW_S = 1.0  # falling behind is judged per second: one slow chunk (first inference, a GC pause) is not


def run_live(
    source: Source,
    stream: Stream,
    sinks: list[Sink],
    seconds: float | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``stream`` on ``source`` into ``sinks`` until the input ends, ``seconds`` of audio, Ctrl-C
    or device loss; close the source and the sinks; return the summary.

    Summary keys: ``ended`` (end, seconds, interrupted, device_lost), ``error`` (the device-loss
    message or None), ``audio_seconds``, ``wall_seconds``, ``results``, ``rtf`` (model only),
    ``processing_rtf`` (model and sinks), ``latency_ms`` (p50, p95, max, count; None without
    results), ``fell_behind``, the source's ``SourceStats`` fields and ``output_underflows``.
    """
    loop = _Loop(source, stream, sinks, log or _to_stderr)
    ended, error, failed = "end", None, True
    try:
        try:
            stream.session.warm_up(getattr(stream, "every", None))  # a windowed stream: its own window
            with _ctrl_c_stops(loop.stop):
                ended = loop.consume(seconds)
        except DeviceLost as exc:
            ended, error = "device_lost", str(exc)
        except KeyboardInterrupt:
            ended = "interrupted"
        finally:
            source.close()
        loop.deliver(stream.flush(), loop.last_capture)
        if loop.pace is not None:
            loop.pace.check()
        for warning in loop.check.finish():
            loop.log(warning)
        failed = False
    finally:
        close_sinks(sinks, failed)
    return loop.summary(ended, error)


class _Loop:
    """State of one live run: what was delivered, how long it took, and how late it was."""

    def __init__(self, source: Source, stream: Stream, sinks: list[Sink], log: Callable[[str], None]):
        self.source, self.stream, self.sinks = source, stream, sinks
        self.stop = threading.Event()
        self.pace = _Pace(source, log) if source.realtime else None
        self.log = log
        task = stream.session.task
        block = stream.block / task.sample_rate if isinstance(stream, Stream) else 0.0
        self.check = InputCheck(source.sample_rate, max(task.min_input_seconds, block), source.description)
        self.latencies: list[float] = []
        self.results = 0
        self.busy = 0.0
        self.started = self.last_capture = time.monotonic()

    def consume(self, seconds: float | None) -> str:
        limit = None if seconds is None else round(seconds * self.source.sample_rate)
        for chunk, captured in self.source:
            if limit is not None:
                chunk = chunk[:, : limit - self.stream.samples_in]
            self.last_capture = captured
            for warning in self.check.update(chunk):
                self.log(warning)
            begin = time.monotonic()
            self.deliver(self.stream.accept(chunk), captured)
            spent = time.monotonic() - begin
            self.busy += spent
            if self.pace is not None:
                self.pace.add(chunk.shape[1] / self.source.sample_rate, spent)
            if limit is not None and self.stream.samples_in >= limit:
                return "seconds"
            if self.stop.is_set():
                return "interrupted"
        return "end"

    def deliver(self, results: list[Any], captured: float) -> None:
        if not results:
            return
        write_results(self.sinks, results, f" after {self.stream.samples_in / self.source.sample_rate:.2f} s of input")
        self.latencies.append(time.monotonic() - captured)
        self.results += len(result_items(results))

    def summary(self, ended: str, error: str | None) -> dict[str, Any]:
        audio = self.stream.samples_in / self.source.sample_rate
        return {
            "source": self.source.description,
            "ended": ended,
            "error": error,
            "audio_seconds": round(audio, 3),
            "wall_seconds": round(time.monotonic() - self.started, 3),
            "results": self.results,
            "rtf": round(self.stream.real_time_factor(), 4),
            "processing_rtf": round(self.busy / audio, 4) if audio else 0.0,
            "latency_ms": _latency_ms(self.latencies),
            "fell_behind": bool(self.pace and self.pace.fell_behind),
            **asdict(self.source.stats()),
            "output_underflows": sum(sink.underflows for sink in self.sinks),
        }


class _Pace:
    """Tells the user, once per window, when processing cannot keep up with a real-time source.

    A window is behind when it took longer to process than the audio it held (RTF > 1), or when
    the source dropped samples during it (the ring buffer absorbed a backlog until it could not).
    """

    def __init__(self, source: Source, log: Callable[[str], None]):
        self.source, self.log = source, log
        self.fell_behind = False
        self._dropped = 0
        self._reset()

    def _reset(self) -> None:
        self._audio = self._busy = 0.0
        self._since = time.monotonic()

    def add(self, audio_seconds: float, busy_seconds: float) -> None:
        self._audio += audio_seconds
        self._busy += busy_seconds
        if self._audio >= WINDOW_S or time.monotonic() - self._since >= WINDOW_S:
            self.check()

    def check(self) -> None:
        dropped = self.source.stats().dropped_samples
        new, self._dropped = dropped - self._dropped, dropped
        rtf = self._busy / self._audio if self._audio else 0.0
        if rtf > 1.0 or new > 0:
            self.fell_behind = True
            self.log(
                f"warning: inference is falling behind real time: RTF {rtf:.2f} over the last "
                f"{self._audio:.1f} s of audio; {new} sample(s) dropped at capture ({dropped} in all)"
            )
        self._reset()


def _latency_ms(latencies: list[float]) -> dict[str, float] | None:
    if not latencies:
        return None
    ms = np.asarray(latencies) * 1000
    return {
        "p50": round(float(np.percentile(ms, 50)), 2),
        "p95": round(float(np.percentile(ms, 95)), 2),
        "max": round(float(ms.max()), 2),
        "count": len(ms),
    }


@contextmanager
def _ctrl_c_stops(stop: threading.Event) -> Iterator[None]:
    """While the loop runs, a first Ctrl-C (or SIGTERM, as a service manager stops a run) asks it to
    stop between chunks; a second interrupts at once.

    Stopping between chunks means no result is half-written and the last block still comes out.
    Python lets only the main thread set signal handlers; elsewhere Ctrl-C arrives as
    KeyboardInterrupt, which ``run_live`` treats as the same request.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_ctrl_c(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, on_ctrl_c) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
