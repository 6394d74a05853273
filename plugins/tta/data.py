"""Text-to-audio data: clips composed from the event library, cut to the generator's length, and
the captions written from their structure as prompts (both from plugins/shared); plus the prompts
the evaluation asks for.

A training example is a 5 s clip composed from the event library's training recordings (1-4
classes, order, overlaps, repetitions, far sources; speed and spectral-tilt augmentation) with its
five reference captions, any of which may serve as the prompt. Single-class clips are drawn more
often than for captioning (half of all clips), because one prompted class is what a user asks for
most. Held-out prompts and the judge's real clips come from recordings the generator never saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeaudio.plugins.shared.captions import PHRASES, write_captions
from edgeaudio.plugins.shared.mixtures import compose_scene

SAMPLE_RATE = 16000
CLIP_SECONDS = 5.0
CLASS_COUNTS = (0.5, 0.3, 0.15, 0.05)


@dataclass
class PromptedClip:
    audio: np.ndarray  # [samples] at 16 kHz
    prompts: list[str]
    labels: list[str]


def class_counts(single: float = CLASS_COUNTS[0]) -> tuple[float, ...]:
    """Probabilities of 1-4 classes per clip with ``single`` for one class; the rest keep their
    proportions (0.5 gives CLASS_COUNTS)."""
    if not 0.0 <= single <= 1.0:
        from edgeaudio.errors import UsageError

        raise UsageError(f"the share of one-class clips must lie in [0, 1], got {single}")
    rest = 1.0 - CLASS_COUNTS[0]
    return (single,) + tuple(p * (1.0 - single) / rest for p in CLASS_COUNTS[1:])


def compose_set(library, count: int, seed: int, first: int = 0, augment: bool = True,
                single: float = CLASS_COUNTS[0]) -> list[PromptedClip]:  # fmt: skip
    """Clips ``first .. first + count - 1``, each from its own generator seeded by (seed, index);
    ``single``: the share of clips with one class."""
    counts = class_counts(single)
    clips = []
    for index in range(first, first + count):
        rng = np.random.default_rng([seed, index])
        audio, scene = compose_scene(library, rng, CLIP_SECONDS, augment, class_counts=counts)
        clips.append(PromptedClip(audio, write_captions(scene, rng, 5), scene.labels))
    return clips


def single_event_prompts(classes: list[str], per_class: int) -> list[tuple[str, str]]:
    """(prompt, class) pairs: each class's clause and noun phrasings in turn ("a horn honks",
    "the sound of a car horn"), ``per_class`` of them per class, in a fixed order."""
    pairs = []
    for label in classes:
        nouns, clauses = PHRASES[label]
        phrasings = [clause for clause in clauses] + [f"the sound of {noun}" for noun in nouns]
        pairs += [(phrasings[i % len(phrasings)], label) for i in range(per_class)]
    return pairs


def two_event_prompts(classes: list[str], count: int, seed: int) -> list[tuple[str, tuple[str, str]]]:
    """``count`` prompts naming two classes in order ("a horn honks, then someone types")."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        first, second = (str(c) for c in rng.choice(classes, size=2, replace=False))
        a, b = PHRASES[first][1][0], PHRASES[second][1][0]
        pairs.append((f"{a}, then {b}", (first, second)))
    return pairs
