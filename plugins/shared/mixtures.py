"""Composed clips: mono mixtures of event-library classes, with the structure they were composed from.

A composed clip is a mono mixture of 1-4 event classes over a quiet noise bed. Foreground classes
follow one another ("then") or overlap ("while"); a class may repeat ("twice", "three times"); a
further class may sit far away (quieter, reverberant: "in the background"). The returned ``Scene``
records which classes, how many times, when and how far, which is what captions.py writes
captions from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Event:
    """One class in a scene: its occurrences' onsets and lengths (seconds) and whether it is far."""

    label: str
    onsets: list[float]
    lengths: list[float]
    far: bool = False

    @property
    def count(self) -> int:
        return len(self.onsets)


@dataclass
class Scene:
    """``mode``: "sequence" (foreground classes one after another) or "overlap"."""

    mode: str
    events: list[Event] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.events]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


CLASS_COUNTS = (0.3, 0.35, 0.25, 0.1)  # probabilities of 1, 2, 3 and 4 classes in a composed clip


def compose_scene(
    library, rng: np.random.Generator, seconds: float, augment: bool = False, class_counts=CLASS_COUNTS
) -> tuple[np.ndarray, Scene]:
    """One mono mixture ``seconds`` long and its structure. ``library`` is an EventLibrary at 16 kHz;
    ``class_counts``: the probabilities of 1, 2, 3 and 4 classes.

    ``augment`` (training): every drawn clip is replayed at a random speed (0.8-1.25x, pitch and
    length together) and tilted in spectrum, so a library of a few hundred recordings yields many
    more distinct sounds and the model learns the class rather than the recording."""
    rate = library.sample_rate
    total = int(seconds * rate)
    classes = [c for c in library.classes if library.clips(c)]
    n_classes = int(rng.choice([1, 2, 3, 4], p=list(class_counts)))
    chosen = [str(c) for c in rng.choice(classes, size=min(n_classes, len(classes)), replace=False)]
    far = [i > 0 and rng.random() < 0.3 for i in range(len(chosen))]
    foreground = [c for c, f in zip(chosen, far) if not f]
    scene = Scene(mode="sequence" if len(foreground) < 2 or rng.random() < 0.5 else "overlap")
    mix = np.zeros(total, np.float32)
    slot = seconds / len(foreground)
    cursor = float(rng.uniform(0.0, 0.5))
    anchor: tuple[float, float] | None = None
    for label in foreground:
        repeats = int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15]))
        clip = _draw(library, label, rng, augment)
        gap = float(rng.uniform(0.15, 0.5))
        budget = (slot if scene.mode == "sequence" else seconds * 0.8) / repeats - gap
        piece = clip[: max(int(0.3 * rate), min(len(clip), int(budget * rate)))]
        span = repeats * (len(piece) / rate + gap)
        if scene.mode == "overlap" and anchor is not None:  # start inside the first class's span
            start = float(rng.uniform(anchor[0], max(anchor[0], min(anchor[1] - 0.3, seconds - span))))
        elif scene.mode == "overlap":
            start = float(rng.uniform(0.0, max(0.0, seconds - span)))
        else:
            start = cursor
        event = Event(label, [], [])
        for r in range(repeats):
            onset = start + r * (len(piece) / rate + gap)
            if onset + 0.2 > seconds:
                break
            _add(mix, piece * _db(rng.uniform(-3, 3)), int(onset * rate))
            event.onsets.append(round(onset, 3))
            event.lengths.append(round(min(len(piece) / rate, seconds - onset), 3))
        cursor = start + span
        anchor = anchor or (start, start + span)
        if event.onsets:  # a short clip may have no room left for a later class
            scene.events.append(event)
    for label in [c for c, f in zip(chosen, far) if f]:
        clip = _draw(library, label, rng, augment)
        onset = float(rng.uniform(0.0, max(0.0, seconds - len(clip) / rate)))
        _add(mix, _reverberant(clip, rng, rate) * _db(rng.uniform(-16, -9)), int(onset * rate))
        scene.events.append(Event(label, [round(onset, 3)], [round(min(len(clip) / rate, seconds - onset), 3)], far=True))
    mix += _noise_bed(total, rng) * _db(rng.uniform(-55, -35))
    mix *= _db(rng.uniform(-6, 0)) / max(1e-6, float(np.max(np.abs(mix))))
    return mix.astype(np.float32), scene


def _draw(library, label: str, rng: np.random.Generator, augment: bool) -> np.ndarray:
    clips = library.clips(label)
    original = library.load(clips[rng.integers(len(clips))])
    if not augment:
        return original
    speed = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    clip = np.interp(np.arange(0, len(original) - 1, speed), np.arange(len(original)), original)
    tilt = rng.uniform(-0.9, 0.9)  # one-pole emphasis (> 0) or smoothing (< 0)
    clip = np.concatenate([clip[:1], clip[1:] - tilt * clip[:-1]]) if tilt > 0 else _smooth(clip, -tilt)
    level = np.sqrt(np.mean(original**2) / max(1e-12, float(np.mean(clip**2))))  # keep the clip's loudness
    return (clip * level).astype(np.float32)


def _smooth(clip: np.ndarray, amount: float) -> np.ndarray:
    from scipy.signal import lfilter

    return lfilter([1 - amount], [1, -amount], clip)


def _db(value: float) -> float:
    return float(10 ** (value / 20))


def _add(target: np.ndarray, part: np.ndarray, offset: int) -> None:
    end = min(len(target), offset + len(part))
    if end > offset:
        target[offset:end] += part[: end - offset]


def _reverberant(clip: np.ndarray, rng: np.random.Generator, rate: int) -> np.ndarray:
    """A far source: the clip through exponentially decaying noise (a diffuse room tail) with a
    weak direct path, so distance is heard as level and reverberation together."""
    from scipy.signal import fftconvolve  # here, not at the top: the runtime imports this module but never composes

    rt60 = rng.uniform(0.4, 1.0)
    t = np.arange(int(rt60 * rate)) / rate
    tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    tail[0] = 3.0 * np.sqrt(np.sum(tail**2)) / 10
    wet = fftconvolve(clip, tail)[: len(clip) + len(t) // 2]
    return (wet / max(1e-9, np.sqrt(np.mean(wet**2))) * np.sqrt(np.mean(clip**2))).astype(np.float32)


def _noise_bed(samples: int, rng: np.random.Generator) -> np.ndarray:
    """Ambience: noise with a random spectral tilt between white and brown (room tone, hiss, rumble)."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    freqs = np.maximum(np.fft.rfftfreq(samples), 1.0 / samples)
    noise = np.fft.irfft(spectrum * freqs ** (-rng.uniform(0.0, 1.0)), n=samples)
    return (noise / max(1e-9, float(np.max(np.abs(noise))))).astype(np.float32)
