"""Buffers between a capture callback and the code that consumes it: a resampler that keeps its
filter state across blocks, and a ring buffer that counts what it had to drop."""

from __future__ import annotations

import threading

import numpy as np

from edgeaudio.errors import require


class StreamResampler:
    """soxr's streaming resampler from [samples, channels] blocks to [channels, samples] chunks.

    Streaming keeps the filter's state across blocks, so chunk borders leave no clicks and the
    total length is exact; at equal rates it only transposes.
    """

    def __init__(self, rate_in: int, rate_out: int, channels: int):
        self._channels = channels
        self._stream = None
        if rate_in != rate_out:
            soxr = require("soxr")
            self._stream = soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality="HQ")

    def __call__(self, frames: np.ndarray, last: bool = False) -> np.ndarray:
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        if self._stream is not None:
            frames = self._stream.resample_chunk(frames, last=last)
        return np.ascontiguousarray(frames.T)

    def flush(self) -> np.ndarray:
        """The samples still inside the filter at the end of the input."""
        return self(np.zeros((0, self._channels), np.float32), last=True)


# --- microphone ----------------------------------------------------------------------------------


class RingBuffer:
    """Bounded FIFO of frames between an audio callback thread and the worker.

    A callback must never wait on the worker, so when the ring is full the newest frames are
    dropped and counted in ``dropped``. ``read`` (capture side) drains everything there is, so the
    time of the last write is the capture time of the last frame read; ``take`` (playback side)
    hands a callback what it asks for, or less, without waiting.
    """

    def __init__(self, frames: int, channels: int):
        self._data = np.zeros((frames, channels), np.float32)
        self._start = 0
        self._size = 0
        self._ready = threading.Condition()
        self.dropped = 0
        self.last_write = 0.0

    def __len__(self) -> int:
        return self._size

    def write(self, block: np.ndarray, when: float) -> None:
        capacity = len(self._data)
        with self._ready:
            take = min(len(block), capacity - self._size)
            end = (self._start + self._size) % capacity
            first = min(take, capacity - end)
            self._data[end : end + first] = block[:first]
            self._data[: take - first] = block[first:take]
            self._size += take
            self.dropped += len(block) - take
            self.last_write = when
            self._ready.notify()

    def take(self, frames: int) -> np.ndarray:
        """Up to ``frames`` of the oldest frames, at once."""
        with self._ready:
            count = min(frames, self._size)
            out = np.take(self._data, range(self._start, self._start + count), axis=0, mode="wrap")
            self._start = (self._start + count) % len(self._data)
            self._size -= count
            return out

    def read(self, min_frames: int, timeout: float) -> tuple[np.ndarray, float] | None:
        """All buffered frames once there are ``min_frames``; after ``timeout``, whatever there is."""
        with self._ready:
            self._ready.wait_for(lambda: self._size >= min_frames, timeout)
            if self._size == 0:
                return None
            return self.take(self._size), self.last_write
