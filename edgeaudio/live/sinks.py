"""Where results go: JSON lines (stdout or a file), UDP datagrams, a WAV file, the speaker.

A sink takes the list ``Stream.accept`` returns (one decoded result per processed block; a task
may decode a block into a list of items, e.g. one per frame) and hands it on at once, so a live
run's output is never held back behind the next chunk. ``close`` flushes and releases; the live
loop always calls it, also after Ctrl-C or a lost device, and calls ``abort`` instead when the run
failed. Files are written beside their target under a hidden name (``edgeaudio.staging``) and
renamed onto it by ``close``, so a failed run leaves no partial file and never touches an existing
one; ``check_outputs`` refuses an output that is one of the run's inputs, and ``check_finite``
refuses NaN or infinite results before any sink sees them.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterator

import numpy as np

from edgeaudio.audio.buffers import RingBuffer, StreamResampler
from edgeaudio import registry
from edgeaudio.errors import DeviceUnavailable, ModelOutputError, UsageError, require
from edgeaudio.staging import PendingFile
from edgeaudio.task import ResultKind, Task

MAX_DATAGRAM = 65507  # the largest UDP payload over IPv4


class Sink:
    """Base of the sinks. ``summary()`` is one line for the user about what was written, or None."""

    underflows = 0  # output blocks the device played before audio was ready (speaker only)

    def write(self, results: list[Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release; safe to call more than once."""

    def abort(self) -> None:
        """Release after a failed run, keeping nothing it would have written (file sinks discard
        their partial file); by default the same as ``close``."""
        self.close()

    def summary(self) -> str | None:
        return None


def check_finite(results: list[Any], where: str = "") -> None:
    """Refuse results holding NaN or infinity anywhere (numbers, arrays, nested in dicts and
    lists): JSON would carry a bare NaN and a WAV garbage, with exit code 0."""
    bad = _non_finite(results)
    if bad is not None:
        raise ModelOutputError(
            f"the model produced {bad}{where}; nothing more was written and partial files were removed",
            hint="check the input's level and the options (e.g. a guidance or gain far outside the defaults)")


def write_results(sinks: list[Sink], results: list[Any], where: str = "") -> None:
    """``results`` to every sink, once ``check_finite`` has passed them; nothing when empty."""
    if results:
        check_finite(results, where)
        for sink in sinks:
            sink.write(results)


def close_sinks(sinks: list[Sink], failed: bool) -> None:
    """Close every sink, or after a failure abort every one, so that no partial file is left."""
    for sink in sinks:
        sink.abort() if failed else sink.close()


def _non_finite(value: Any) -> str | None:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return next((bad for bad in map(_non_finite, value) if bad is not None), None)
    if isinstance(value, (float, np.floating)) or (isinstance(value, np.ndarray) and value.dtype.kind in "fc"):
        finite = np.isfinite(value)
        if not np.all(finite):
            return "NaN" if np.any(np.isnan(value)) else "infinite values"
    return None


def check_outputs(outputs: dict[str, str | None], inputs: dict[str, str | None]) -> None:
    """Refuse a run whose output paths (by option) resolve to one of its inputs or to each other:
    writing would destroy the input (``-o`` equal to ``--input``), or two sinks would fight."""
    seen: dict[Path, str] = {}
    for option, path in inputs.items():
        if path and Path(path).exists():
            seen[Path(path).resolve()] = option
    for option, path in outputs.items():
        if not path:
            continue
        target = Path(path).resolve()
        for known, name in seen.items():
            if known.is_dir() and target.is_relative_to(known):
                raise UsageError(f"{option} {path} is inside {name} ({known}); writing it would change that",
                                 hint=f"write the results outside {known}")
            if target == known or (known.is_file() and target.exists() and target.samefile(known)):
                raise UsageError(f"{option} {path} is the same file as {name}; writing it would destroy that file",
                                 hint=f"write the results to another file than {name}")
        seen[target] = option


def result_items(results: list[Any]) -> list[Any]:
    """The user-facing items in a list of decoded results: one per frame, event or waveform."""
    return [item for result in results for item in (result if isinstance(result, list) else [result])]


def to_json(item: Any) -> str:
    return json.dumps(item, default=plain_json)


def plain_json(value: Any) -> Any:
    """numpy scalars and arrays that decoders leave in results, as JSON numbers and lists."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def is_waveform_task(task: Task) -> bool:
    """Whether the task's results are audio (its declared ``result_kind``)."""
    return task.result_kind is ResultKind.WAVEFORM


@dataclass(frozen=True)
class ResultFormat:
    """``--format NAME``: a plugin's way of writing results to stdout or ``--output`` instead of
    JSON lines, for tasks whose results are of ``result_kind``. ``open(path_or_None, task)``."""

    name: str
    help: str
    result_kind: ResultKind
    open: Callable[[str | None, Task], Sink]


@dataclass(frozen=True)
class SinkOption:
    """``--NAME VALUE``: an extra sink a plugin adds to ``run`` for tasks whose results are of
    ``result_kind`` (e.g. a plot of the results). ``open(value, task)``."""

    name: str
    help: str
    result_kind: ResultKind
    open: Callable[[str, Task], Sink]
    metavar: str = "PATH"


def plugin_sinks(task: Task) -> tuple[dict[str, ResultFormat], dict[str, SinkOption]]:
    """The result formats and sink options plugins registered that fit ``task``'s results, by
    name; the first registration of a name wins."""
    formats: dict[str, ResultFormat] = {}
    options: dict[str, SinkOption] = {}
    for item in registry.collect("register_sinks", registry.instance_check(ResultFormat, SinkOption)):
        if item.result_kind is not task.result_kind:
            continue
        if isinstance(item, ResultFormat):
            formats.setdefault(item.name, item)
        elif isinstance(item, SinkOption):
            options.setdefault(item.name, item)
    return formats, options


class TextLinesSink(Sink):
    """Text lines to ``path`` or to stdout, flushed after every write for live use; subclasses
    turn results into lines (``lines``) and name what a line is (``noun``)."""

    noun = "line"

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.lines = 0
        self._pending = PendingFile(self.path) if self.path else None
        self._out: IO[str] = open(self._pending.path, "w", encoding="utf-8") if self._pending else sys.stdout

    def lines_of(self, results: list[Any]) -> Iterator[str]:
        raise NotImplementedError

    def write(self, results: list[Any]) -> None:
        for line in self.lines_of(results):
            self._out.write(line + "\n")
            self.lines += 1
        self._out.flush()

    def close(self) -> None:
        if self._pending and not self._out.closed:
            self._out.close()
            self._pending.commit()

    def abort(self) -> None:
        if self._pending and not self._out.closed:
            self._out.close()
            self._pending.discard()

    def summary(self) -> str | None:
        return f"wrote {self.lines} {self.noun}(s) to {self.path}" if self.path else None


class JsonLinesSink(TextLinesSink):
    """One JSON object per line, to ``path`` or to stdout."""

    noun = "result line"

    def lines_of(self, results: list[Any]) -> Iterator[str]:
        return (to_json(item) for item in result_items(results))


class UdpSink(Sink):
    """One JSON datagram per result item to ``host:port``: a dashboard or robot listens, nothing blocks."""

    def __init__(self, address: str):
        host, port = parse_address(address)
        self.address = address
        try:
            family, kind, proto, _, target = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        except socket.gaierror as exc:
            hint = "use an IP address or a known host name"
            raise UsageError(f"cannot resolve UDP host '{host}' ({exc})", hint=hint) from exc
        self._target = target
        self._socket = socket.socket(family, kind, proto)
        self.datagrams = 0

    def write(self, results: list[Any]) -> None:
        for item in result_items(results):
            payload = to_json(item).encode()
            if len(payload) > MAX_DATAGRAM:
                raise UsageError(
                    f"a result of {len(payload)} bytes does not fit one UDP datagram ({MAX_DATAGRAM} at most)",
                    hint="send waveform results to a file with --output instead",
                )
            self._socket.sendto(payload, self._target)
            self.datagrams += 1

    def close(self) -> None:
        self._socket.close()

    def summary(self) -> str | None:
        return f"sent {self.datagrams} datagram(s) to {self.address}"


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) -> (host, port)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"'{address}' is not host:port", hint="e.g. --udp 127.0.0.1:9000")
    return host.strip("[]"), int(port)


def _waveform(task: Task, results: list[Any]) -> np.ndarray | None:
    """The audio in ``results`` as float32 [samples, channels] (soundfile's and PortAudio's order)."""
    audio = task.results_to_audio(results)
    if audio is None:
        return None
    audio = np.asarray(audio, dtype=np.float32)
    return (audio[None, :] if audio.ndim == 1 else audio).T


def _require_waveform_task(task: Task, what: str) -> None:
    if not is_waveform_task(task):
        raise UsageError(
            f"task '{task.name}' produces no audio, so it cannot go to {what}",
            hint="write its results as JSON lines (--output results.jsonl) or send them with --udp",
        )


class WavSink(Sink):
    """Waveform results appended to a 32-bit float WAV as they come; the header is final on close."""

    def __init__(self, path: str | Path, task: Task):
        _require_waveform_task(task, "a WAV file")
        self.path, self.task = Path(path), task
        self.samples = 0
        self._file = None

    def write(self, results: list[Any]) -> None:
        audio = _waveform(self.task, results)
        if audio is None or not len(audio):
            return
        if self._file is None:
            sf = require("soundfile")
            self._pending = PendingFile(self.path)
            self._file = sf.SoundFile(str(self._pending.path), "w", self.task.sample_rate, audio.shape[1],
                                      subtype="FLOAT", format="WAV")
        self._file.write(audio)
        self.samples += len(audio)

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
            self._pending.commit()

    def abort(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
            self._pending.discard()

    def summary(self) -> str | None:
        return f"wrote {self.samples / self.task.sample_rate:.1f} s of audio to {self.path}"


class SpeakerSink(Sink):
    """Waveform results played on an output device: mic -> model -> speaker for enhancement.

    The device runs at its own default rate (hardware outputs rarely run at a model's 16 kHz) and
    soxr converts. Like capture, playback runs from a ring buffer in PortAudio's callback, so the
    worker never waits for the speaker and time spent playing is not mistaken for processing.
    Audio arrives in input-sized blocks with some jitter, so playback starts with
    ``prefill_seconds`` of silence queued. The callback finding too little audio counts in
    ``underflows`` (a click); audio that did not fit the ring counts in ``dropped_samples``.
    """

    def __init__(
        self, task: Task, device: int | str | None = None, prefill_seconds: float = 0.1, buffer_seconds: float = 2.0
    ):
        _require_waveform_task(task, "the speaker")
        self.task, self._device = task, device
        self._prefill, self._buffer = prefill_seconds, buffer_seconds
        self._stream = None
        self._closing = False
        self.played_samples = 0
        sd = require("sounddevice")
        try:  # before any audio: a missing speaker is said at once, not after the first block
            self._rate = int(sd.query_devices(self._device, "output")["default_samplerate"])
        except (sd.PortAudioError, ValueError) as exc:
            raise DeviceUnavailable(f"no audio output device to play on ({exc})",
                                    hint="check `edgeaudio devices --live`, or write a WAV with --output out.wav") from exc

    def write(self, results: list[Any]) -> None:
        audio = _waveform(self.task, results)
        if audio is None or not len(audio):
            return
        if self._stream is None:
            self._open(audio.shape[1])
        self._ring.write(self._resample(audio).T, time.monotonic())

    def _open(self, channels: int) -> None:
        sd = require("sounddevice")
        self._resample = StreamResampler(self.task.sample_rate, self._rate, channels)
        self._ring = RingBuffer(round(self._rate * self._buffer), channels)
        self._ring.write(np.zeros((round(self._rate * self._prefill), channels), np.float32), time.monotonic())
        self._stream = sd.OutputStream(
            device=self._device, samplerate=self._rate, channels=channels, dtype="float32", callback=self._callback
        )
        self._stream.start()

    def _callback(self, outdata, frames, time_info, status) -> None:
        block = self._ring.take(frames)
        outdata[: len(block)] = block
        outdata[len(block) :] = 0
        self.played_samples += len(block)
        self.underflows += len(block) < frames and not self._closing

    @property
    def dropped_samples(self) -> int:
        return self._ring.dropped if self._stream is not None else 0

    def close(self) -> None:
        """Play out what is queued (the filter's tail too), then release the device."""
        if self._stream is None or self._stream.closed:
            return
        self._ring.write(self._resample.flush().T, time.monotonic())
        self._closing = True
        deadline = time.monotonic() + len(self._ring) / self._rate + 1.0
        while len(self._ring) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stream.stop()
        self._stream.close()

    def summary(self) -> str | None:
        if self._stream is None:
            return "played nothing on the speaker"
        dropped = f"; {self.dropped_samples} sample(s) did not fit the buffer" if self.dropped_samples else ""
        return f"played {self.played_samples / self._rate:.1f} s on the speaker{dropped}"
