"""Cutting recordings into the event library's clips, and levelling the clips.

Clips are cut where the sound is (energy above the recording's own loudest part minus 30 dB), kept
between MIN_CLIP and MAX_CLIP seconds, and loudness-normalised, at SAMPLE_RATE mono.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from edgeaudio.audio.files import resample
from edgeaudio.errors import require

SAMPLE_RATE = 24000
MIN_CLIP, MAX_CLIP = 0.3, 4.0
TARGET_RMS_DBFS, PEAK_DBFS = -20.0, -1.0


def read(path: Path | io.BytesIO, loop: float = 0.0) -> np.ndarray:
    """Mono at SAMPLE_RATE plus MIN_CLIP of silence, so a hit shorter than a clip still makes one.
    ``loop``: repeat a loop sample to at least this many seconds first."""
    sf = require("soundfile")
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = resample(data.mean(axis=1, keepdims=True).T, rate, SAMPLE_RATE)[0]
    if loop and len(mono):
        mono = np.tile(mono, int(np.ceil(loop * SAMPLE_RATE / len(mono))))
    return np.concatenate([mono, np.zeros(int(MIN_CLIP * SAMPLE_RATE), dtype=np.float32)])


def read_all(paths: list[Path], loop: float) -> np.ndarray:
    """The takes of one recording one after another, each followed by silence the cutter splits at."""
    return np.concatenate([read(path, loop) for path in paths])


def cut_events(
    audio: np.ndarray, rate: int, min_len: float = MIN_CLIP, max_len: float = MAX_CLIP
) -> list[tuple[int, int]]:
    """(start, stop) samples of the sound events in a recording, each ``min_len``-``max_len`` long.

    Frames louder than the recording's peak minus 30 dB are sound; gaps under 0.25 s do not split
    an event, so a word or a drum's decay stays whole. Regions get 10 ms before and 100 ms after
    for the attack and the tail; long regions (music, engines) are cut into consecutive pieces.
    """
    hop = int(0.01 * rate)
    n_frames = len(audio) // hop
    if n_frames == 0:
        return []
    power = np.mean(audio[: n_frames * hop].reshape(n_frames, hop).astype(np.float64) ** 2, axis=1)
    level = 10 * np.log10(power + 1e-12)
    active = level > max(level.max() - 30.0, -70.0)
    regions = _merge_runs(np.flatnonzero(active), max_gap=25)
    cuts = []
    for first, last in regions:
        start = max(0, first * hop - int(0.01 * rate))
        stop = min(len(audio), (last + 1) * hop + int(0.1 * rate))
        stop = min(len(audio), max(stop, start + int(min_len * rate)))
        for piece_start in range(start, stop, int(max_len * rate)):
            piece_stop = min(stop, piece_start + int(max_len * rate))
            if piece_stop - piece_start >= int(min_len * rate):
                cuts.append((piece_start, piece_stop))
    return cuts


def _merge_runs(indices: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
    """Group sorted frame indices into (first, last) runs, bridging gaps of up to ``max_gap`` frames."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and i - runs[-1][1] <= max_gap:
            runs[-1] = (runs[-1][0], int(i))
        else:
            runs.append((int(i), int(i)))
    return runs


def normalise(clip: np.ndarray) -> np.ndarray:
    """Loudness to TARGET_RMS_DBFS over the sounding part, peaks kept below PEAK_DBFS, soft edges."""
    clip = np.asarray(clip, dtype=np.float64)
    hop = int(0.01 * SAMPLE_RATE)
    frames = clip[: len(clip) // hop * hop].reshape(-1, hop)
    power = np.mean(frames**2, axis=1)
    loud = power[power > power.max() * 1e-3] if power.size else np.array([np.mean(clip**2)])
    gain = 10 ** (TARGET_RMS_DBFS / 20) / max(np.sqrt(np.mean(loud)), 1e-9)
    gain = min(gain, 10 ** (PEAK_DBFS / 20) / max(np.max(np.abs(clip)), 1e-9))
    fade_in, fade_out = int(0.005 * SAMPLE_RATE), int(0.03 * SAMPLE_RATE)
    envelope = np.ones(len(clip))
    envelope[:fade_in] = np.linspace(0.0, 1.0, fade_in)[: len(clip)]
    envelope[len(clip) - fade_out :] = np.linspace(1.0, 0.0, fade_out)[-len(clip) :]
    return (clip * gain * envelope).astype(np.float32)
