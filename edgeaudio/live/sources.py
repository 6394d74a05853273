"""Where live audio comes from: a microphone array, a file streamed chunk by chunk, or a source a
plugin registers (``register_sources``; e.g. a simulated array scene, ``sim:...``).

Every source yields ``(chunk, captured)``: float32 [channels, samples] already at the model's rate
and in the model's channel order, and the ``time.monotonic()`` moment its last sample was captured
(read, for a file; due, for a simulated scene). The live loop measures end-to-end latency from that
moment, the same way for every source. Sources count what they lose (``stats()``) instead of hiding
it: a model that cannot keep up shows as dropped samples, never as silently missing audio.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from edgeaudio import registry
from edgeaudio.audio.buffers import RingBuffer, StreamResampler
from edgeaudio.errors import AudioInputError, DeviceLost, DeviceUnavailable, UsageError, require

if TYPE_CHECKING:
    from edgeaudio.profiles import ArrayProfile
    from edgeaudio.task import Task

Chunk = tuple[np.ndarray, float]

POLL_S = 0.1  # how often a waiting consumer looks for a lost device
STARTUP_TIMEOUT_S = 5.0  # PulseAudio can take ~2 s to deliver the first block of an idle sink
STALL_TIMEOUT_S = 2.0  # a running device that sends nothing for this long is gone
CLOSE_TIMEOUT_S = 3.0  # PortAudio may never return from closing a stream whose device is gone
_LOST_HINT = "check the cable, the driver or the sound server (`edgeaudio devices --live`), then run again"


@dataclass
class SourceStats:
    """Samples delivered and lost, per channel at the model's rate, plus PortAudio's own flags.

    ``dropped_samples``: captured but thrown away because the consumer fell behind and the ring
    buffer was full. ``input_overflows``/``input_underflows``: blocks PortAudio flagged because
    the device's own buffer overflowed or ran dry.
    """

    delivered_samples: int = 0
    dropped_samples: int = 0
    input_overflows: int = 0
    input_underflows: int = 0


class Source:
    """What every source has: rate, channel count, a description, notes for the user, and stats.

    ``realtime`` sources deliver audio at the pace of a clock, so processing slower than that
    loses audio; the live loop only warns about falling behind for them.
    """

    realtime = False

    def __init__(self, sample_rate: int, channels: int, description: str):
        self.sample_rate = sample_rate
        self.channels = channels
        self.description = description
        self.notes: list[str] = []
        self._delivered = 0

    def __iter__(self) -> Iterator[Chunk]:
        for chunk, captured in self._chunks():
            self._delivered += chunk.shape[1]
            yield chunk, captured

    def _chunks(self) -> Iterator[Chunk]:
        raise NotImplementedError

    def stats(self) -> SourceStats:
        return SourceStats(delivered_samples=self._delivered)

    def close(self) -> None:
        """Release the device or file; safe to call more than once."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class MicrophoneSource(Source):
    """A microphone array through PortAudio, as the model wants it.

    The device is opened at its native rate and capture channel count (what the profile says the
    hardware delivers), the profile's ``channel_map`` picks the raw mics in the order of its
    positions, and soxr resamples to the model's rate. PortAudio converts the device's sample
    format to float32 itself. The PortAudio callback only copies into a ring buffer; channel
    picking and resampling happen in the consumer, so a slow model costs counted drops, never a
    broken audio thread.
    """

    realtime = True

    def __init__(
        self,
        profile: ArrayProfile,
        model_rate: int,
        model_channels: int,
        device_index: int | None = None,
        block_ms: float = 20.0,
        buffer_seconds: float = 2.0,
    ):
        _check_array_fits(profile, model_channels)
        sd = require("sounddevice")
        device = _find_input_device(sd, profile, device_index)
        super().__init__(model_rate, model_channels, f"microphone '{device['name']}' as array {profile.name}")
        self.profile = profile
        self.device_name = str(device["name"])
        self._block = max(1, round(profile.native_rate * block_ms / 1000))
        self._ring = RingBuffer(max(self._block, round(profile.native_rate * buffer_seconds)), profile.capture_channels)
        self._resample = StreamResampler(profile.native_rate, model_rate, model_channels)
        self._overflows = self._underflows = 0
        self._finished = self._closing = False
        try:
            self._stream = sd.InputStream(
                device=device["index"],
                samplerate=profile.native_rate,
                channels=profile.capture_channels,
                dtype="float32",
                blocksize=self._block,
                callback=self._callback,
                finished_callback=self._on_finished,
            )
        except (sd.PortAudioError, ValueError) as exc:
            raise DeviceUnavailable(
                f"cannot open '{self.device_name}' for {profile.capture_channels} channels "
                f"at {profile.native_rate} Hz ({exc})",
                hint="check `edgeaudio devices --live` and that no other program holds the device",
            ) from exc
        latency_ms = self._stream.latency * 1000
        self.description += f" (PortAudio input latency {latency_ms:.0f} ms, not in the measured latency)"

    def _callback(self, indata, frames, time_info, status) -> None:
        self._overflows += bool(status.input_overflow)
        self._underflows += bool(status.input_underflow)
        self._ring.write(indata, time.monotonic())

    def _on_finished(self) -> None:
        self._finished = not self._closing

    def _chunks(self) -> Iterator[Chunk]:
        try:
            self._stream.start()
        except Exception as exc:  # sounddevice.PortAudioError; the module is imported lazily
            raise DeviceLost(f"input device '{self.device_name}' did not start ({exc})", hint=_LOST_HINT) from exc
        started = time.monotonic()
        while True:
            got = self._ring.read(self._block, POLL_S)
            if got is not None:
                frames, captured = got
                chunk = self._resample(frames[:, list(self.profile.channel_map)])
                if chunk.shape[1]:
                    yield chunk, captured
                continue
            reason = self._lost_reason(started)
            if reason:
                tail = self._resample.flush()
                if tail.shape[1]:
                    yield tail, self._ring.last_write
                seconds = time.monotonic() - started
                raise DeviceLost(f"input device '{self.device_name}' {reason} after {seconds:.1f} s", hint=_LOST_HINT)

    def _lost_reason(self, started: float) -> str | None:
        """Why the device counts as gone, or None. A device that delivered audio and then went
        quiet has stopped, whether PortAudio reported the end of the stream or (as it may when
        the sound server dies) just stopped calling back; one that never started says so."""
        if self._finished:
            return "stopped delivering audio (unplugged, or its sound server went away)"
        last = self._ring.last_write
        waited = time.monotonic() - (last or started)
        if last and waited > STALL_TIMEOUT_S:
            return f"stopped delivering audio (nothing for {waited:.1f} s)"
        if not last and waited > STARTUP_TIMEOUT_S:
            return f"sent no audio for {waited:.1f} s after opening"
        return None

    def stats(self) -> SourceStats:
        return SourceStats(
            delivered_samples=self._delivered,
            dropped_samples=round(self._ring.dropped * self.sample_rate / self.profile.native_rate),
            input_overflows=self._overflows,
            input_underflows=self._underflows,
        )

    def close(self) -> None:
        """Close the PortAudio stream without letting a dead device hang the caller.

        After the sound server or the USB device has gone away, PortAudio's close can block
        forever waiting for the host API; it then runs on a daemon thread that is abandoned after
        ``CLOSE_TIMEOUT_S`` so every result is still flushed and the program can exit.
        """
        self._closing = True
        closer = threading.Thread(target=self._stream.close, kwargs={"ignore_errors": True}, daemon=True)
        closer.start()
        closer.join(CLOSE_TIMEOUT_S)


def _check_array_fits(profile: ArrayProfile, model_channels: int) -> None:
    if profile.num_mics != model_channels:
        raise AudioInputError(
            f"array {profile.name} has {profile.num_mics} mic(s) but the model expects {model_channels}",
            hint="pick the array the model was trained for (--device), or a bundle trained for this array",
        )


def _find_input_device(sd, profile: ArrayProfile, device_index: int | None) -> dict:
    """The PortAudio device to capture from: ``device_index``, else one matching the profile.

    Among matches, PortAudio's default input comes first: for a pattern as wide as the mono
    profile's, the default input is what the user means.
    """
    from edgeaudio.profiles import query_live_devices

    devices = query_live_devices()
    if device_index is not None:
        device = next((d for d in devices if d["index"] == device_index), None)
        if device is None:
            raise DeviceUnavailable(f"PortAudio has no device {device_index}", hint="see `edgeaudio devices --live`")
        if device["max_input_channels"] < profile.capture_channels:
            raise AudioInputError(
                f"device {device_index} '{device['name']}' has {device['max_input_channels']} input channel(s); "
                f"array {profile.name} captures {profile.capture_channels}",
                hint="pick the array's device, or the array profile that fits this device",
            )
        return device
    default_input = sd.default.device[0]
    matches = sorted((d for d in devices if profile.matches(d)), key=lambda d: d["index"] != default_input)
    if not matches:
        seen = ", ".join(f"{d['index']}: {d['name']} ({d['max_input_channels']} in)" for d in devices) or "none"
        raise DeviceUnavailable(
            f"no input device looks like array {profile.name} (name matching '{profile.portaudio_pattern}' "
            f"with at least {profile.capture_channels} inputs); PortAudio sees: {seen}",
            hint="plug the array in and check `edgeaudio devices --live`, or choose a device with --device-index",
        )
    return matches[0]


# --- file ----------------------------------------------------------------------------------------


class FileSource(Source):
    """An audio file read block by block and resampled on the fly: memory stays at a few chunks.

    Chunks are exactly ``chunk_ms`` long at the model's rate (the last one may be shorter), so an
    hour-long recording streams like a live device would deliver it, only faster.
    """

    def __init__(self, path: str | Path, model_rate: int, chunk_ms: float = 100.0):
        self.path = Path(path)
        self._file = _open_sound_file(self.path)
        rate, channels = self._file.samplerate, self._file.channels
        self._pick: list[int] | None = None
        super().__init__(model_rate, channels, f"file {self.path.name}")
        self._chunk = max(1, round(model_rate * chunk_ms / 1000))
        self._read = max(1, round(rate * chunk_ms / 1000))
        self._resample = StreamResampler(rate, model_rate, channels)
        if rate != model_rate:
            self.notes.append(f"resampled {self.path.name} from {rate} Hz to {model_rate} Hz")
        from edgeaudio.audio.files import header_mismatch

        if header := header_mismatch(self.path):
            self.notes.append(header)

    def pick_channels(self, channel_map: list[int]) -> None:
        """Deliver only these channels of the file, in this order (a device capture's mics)."""
        self._pick = list(channel_map)
        self.channels = len(self._pick)
        self._resample = StreamResampler(self._file.samplerate, self.sample_rate, self.channels)

    def _chunks(self) -> Iterator[Chunk]:
        pending = np.zeros((self.channels, 0), np.float32)
        for block in self._file.blocks(self._read, dtype="float32", always_2d=True):
            if self._pick is not None:
                block = block[:, self._pick]
            pending = np.concatenate([pending, self._resample(block)], axis=1)
            while pending.shape[1] >= self._chunk:
                yield pending[:, : self._chunk], time.monotonic()
                pending = pending[:, self._chunk :]
        pending = np.concatenate([pending, self._resample.flush()], axis=1)
        for offset in range(0, pending.shape[1], self._chunk):
            yield pending[:, offset : offset + self._chunk], time.monotonic()

    def close(self) -> None:
        self._file.close()


def _open_sound_file(path: Path):
    """Open ``path`` for block reading with the same one-line errors as ``read_audio``."""
    sf = require("soundfile")
    if not path.is_file():
        raise AudioInputError(f"no audio file at {path}", hint="check the path given to --input")
    try:
        handle = sf.SoundFile(str(path))
    except Exception as exc:  # libsndfile reports corrupt headers as RuntimeError/LibsndfileError
        raise AudioInputError(f"cannot read {path.name} as audio ({exc})", hint="is it a WAV/FLAC/OGG file?") from exc
    if handle.frames == 0:
        handle.close()
        raise AudioInputError(f"{path.name} holds no samples", hint="check the recording")
    return handle


# --- sources that plugins bring ----------------------------------------------------------------


@dataclass(frozen=True)
class SourceRequest:
    """What a plugin's source is opened with: its ``--input`` text and the model's needs."""

    spec: str  # the whole --input value, e.g. "sim:seed=3,seconds=20"
    array: ArrayProfile  # the array the audio must come from (already checked against the model)
    sample_rate: int  # deliver chunks at this rate
    channels: int  # and with this many channels, in the model's order
    chunk_ms: float
    realtime: bool  # pace chunks like a device would
    classes: Sequence[str]  # what the model detects, for sources that can make audio of it


@dataclass(frozen=True)
class SourceKind:
    """A source a plugin registers: ``--input PREFIX:...`` opens it with ``open(SourceRequest)``."""

    prefix: str
    help: str
    open: Callable[[SourceRequest], Source]


def source_kinds() -> dict[str, SourceKind]:
    """Registered plugin sources by prefix; the first registration of a prefix wins."""
    kinds: dict[str, SourceKind] = {}
    for kind in registry.collect("register_sources", registry.instance_check(SourceKind)):
        kinds.setdefault(kind.prefix, kind)
    return kinds


def plugin_source_kind(input_spec: str | None) -> SourceKind | None:
    """The plugin source ``--input PREFIX:...`` names; None for a file path, ``mic`` or nothing."""
    if input_spec is None or ":" not in input_spec or Path(input_spec).exists():
        return None
    return source_kinds().get(input_spec.split(":", 1)[0])


# --- choosing a source ---------------------------------------------------------------------------


def open_source(
    input_spec: str | None,
    profile: ArrayProfile | str | None,
    task: Task,
    device_index: int | None = None,
    chunk_ms: float = 100.0,
    block_ms: float = 20.0,
    realtime: bool = True,
    log: Callable[[str], None] = lambda message: None,
    force: bool = False,
    declared: str | None | bool = False,
) -> Source:
    """The source ``input_spec`` names: ``None``/``"mic"`` (live), ``"PREFIX:..."`` for a source a
    plugin registered (``sim:...``), or a file path.

    ``profile`` is an ArrayProfile or a name (family names resolve to the connected variant); for
    live and plugin sources it defaults to the array the task was trained for, or the mono
    profile for a mono task. Choices and changes to the audio are reported through ``log``.
    A file's array is ``profile`` or the one its WAV comment names. Input from an array other
    than the model's is refused unless ``force``: the model's directions would be wrong.
    ``declared``: the array the file's header names, when the caller has read it already.
    """
    kind = plugin_source_kind(input_spec)
    if input_spec is not None and input_spec != "mic" and kind is None:
        from edgeaudio.audio.recording_array import file_channel_map

        source: Source = FileSource(input_spec, task.sample_rate, chunk_ms)
        try:
            channel_map = file_channel_map(source.path, source.channels, profile, task, force, log, declared)
        except Exception:
            source.close()
            raise
        if channel_map is not None:
            source.pick_channels(channel_map)
    else:
        array = _resolve_array(profile, task, log, force)
        if kind is None:
            source = MicrophoneSource(array, task.sample_rate, task.channels, device_index, block_ms)
        else:
            _check_array_fits(array, task.channels)
            source = kind.open(SourceRequest(input_spec, array, task.sample_rate, task.channels, chunk_ms, realtime,
                                             tuple(task.classes)))
    for message in source.notes:
        log(message)
    log(f"input: {source.description}")
    return source


def _resolve_array(
    profile: ArrayProfile | str | None, task: Task, log: Callable[[str], None], force: bool = False
) -> ArrayProfile:
    """The array profile for live or plugin-made input, saying which one was chosen and why."""
    from edgeaudio.profiles import get_array

    if profile is not None and not isinstance(profile, str):
        array = profile
    else:
        name = profile or task.array or ("mono" if task.channels == 1 else None)
        if name is None:
            raise UsageError(
                f"task '{task.name}' takes {task.channels} channels and names no array",
                hint="name the microphone array with --device (see `edgeaudio devices`)",
            )
        array, reason = get_array(name)
        log(f"array: {reason}")
    if task.array and array.name != task.array:
        if not force:
            raise AudioInputError(
                f"the input comes from {array.name} but this model was trained for {task.array}; its directions would be wrong",
                hint=f"run the model for {array.name} (edgeaudio run {task.name} --device {array.name}), or pass --force",
            )
        log(f"note: the model was trained for array {task.array}; directions are only right for that geometry (--force)")
    return array

