"""Event libraries: folders of labelled clips that synthesised training data draws from.

Layout: one sub-folder per class, any number of clips in each, at any sample rate, as WAV, FLAC or
OGG. Clips cut from one longer recording carry its name before a double underscore
(``dog_bark_07__2.wav``); the train/test split keeps such a group together so a held-out recording
never leaks into training through a sibling clip.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgeaudio.audio.files import resample
from edgeaudio.errors import UsageError, require

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga")
GROUP_SEPARATOR = "__"


@dataclass(frozen=True)
class Clip:
    """One labelled clip on disk; ``recording`` names the source it was cut from."""

    path: Path
    label: str

    @property
    def recording(self) -> str:
        return self.path.stem.split(GROUP_SEPARATOR)[0]


class EventLibrary:
    """Labelled clips, decoded on first use and resampled to one rate, mono.

    Only file headers are read when the library is opened, so opening a large library is quick and
    worker processes each decode just the clips they draw.
    """

    def __init__(self, root: Path, sample_rate: int, classes: list[str], clips: list[Clip]):
        self.root = Path(root)
        self.sample_rate = int(sample_rate)
        self.classes = list(classes)
        self._clips = {label: sorted((c for c in clips if c.label == label), key=lambda c: c.path) for label in classes}

    @classmethod
    def from_folder(cls, path: str | Path, sample_rate: int = 24000) -> EventLibrary:
        """Open a library folder; raise UsageError naming an empty folder or a class without clips."""
        root = Path(path)
        if not root.is_dir():
            raise UsageError(
                f"event library {root} is not a folder", hint="pass a folder with one sub-folder per class"
            )
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise UsageError(
                f"event library {root} has no class folders",
                hint="put each class's clips in its own sub-folder, e.g. dog/bark1.wav",
            )
        clips = []
        for class_dir in class_dirs:
            readable = [Clip(f, class_dir.name) for f in sorted(class_dir.iterdir()) if is_readable_audio(f)]
            if not readable:
                raise UsageError(
                    f"class '{class_dir.name}' in event library {root} has no readable audio clip",
                    hint=f"add {', '.join(AUDIO_SUFFIXES)} files to {class_dir} or remove the folder",
                )
            clips.extend(readable)
        return cls(root, sample_rate, [d.name for d in class_dirs], clips)

    def clips(self, label: str) -> list[Clip]:
        """The clips of one class (possibly none in a split that held all of them out)."""
        if label not in self._clips:
            raise UsageError(
                f"event library {self.root} has no class '{label}'", hint=f"classes: {', '.join(self.classes)}"
            )
        return list(self._clips[label])

    def __len__(self) -> int:
        return sum(len(c) for c in self._clips.values())

    def load(self, clip: Clip) -> np.ndarray:
        """Decode a clip as float32 mono samples at the library's rate (cached per process)."""
        return _decode(str(clip.path), self.sample_rate)

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple[EventLibrary, EventLibrary]:
        """Split by recording into (train, test), the same for the same files and seed on any machine.

        Each class holds out ``test_fraction`` of its recordings (at least one when it has two or
        more). Both halves keep the full class list so class indices agree between them.
        """
        if not 0.0 < test_fraction < 1.0:
            raise UsageError(f"test_fraction must be between 0 and 1, got {test_fraction}")
        train, test = [], []
        for label in self.classes:
            held_out = _held_out_recordings(self._clips[label], label, test_fraction, seed)
            for clip in self._clips[label]:
                (test if clip.recording in held_out else train).append(clip)
        return (
            EventLibrary(self.root, self.sample_rate, self.classes, train),
            EventLibrary(self.root, self.sample_rate, self.classes, test),
        )


def is_readable_audio(path: Path) -> bool:
    """True for an audio file whose header libsndfile accepts and which holds samples."""
    if not path.is_file() or path.suffix.lower() not in AUDIO_SUFFIXES:
        return False
    sf = require("soundfile")
    try:
        return sf.info(str(path)).frames > 0
    except Exception:  # libsndfile raises its own error types for corrupt or unknown files
        return False


def _held_out_recordings(clips: list[Clip], label: str, test_fraction: float, seed: int) -> set[str]:
    """Pick a class's held-out recordings with a generator seeded by (seed, class name).

    ``zlib.crc32`` instead of ``hash`` because Python salts string hashes per process.
    """
    recordings = sorted({c.recording for c in clips})
    if len(recordings) < 2:
        return set()
    n_test = min(len(recordings) - 1, max(1, round(test_fraction * len(recordings))))
    rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
    return {recordings[i] for i in rng.permutation(len(recordings))[:n_test]}


@lru_cache(maxsize=1024)
def _decode(path: str, sample_rate: int) -> np.ndarray:
    """Read, mono-mix and resample one file; cached because scenes reuse the same clips often."""
    sf = require("soundfile")
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = data.mean(axis=1, keepdims=True).T
    audio = resample(mono, rate, sample_rate)[0]
    audio.setflags(write=False)
    return audio
