"""Readers for real recordings in the STARSS22/23 layout (Sony-TAu Realistic Spatial Soundscapes).

Layout::

    root/
      mic_dev/ or foa_dev/       dev-train-sony/, dev-test-sony/, dev-train-tau/, dev-test-tau/  *.wav
      metadata_dev/              the same split folders with one <stem>.csv per recording

Audio is 4-channel, 24 kHz. Metadata rows are ``frame, class, source_index, azimuth, elevation`` in
100 ms frames (STARSS22/23), or with a sixth ``distance`` column in centimetres (DCASE 2024). The CSV
parsing is :mod:`edgeaudio.plugins.seld.scenes.metadata`'s, so synthetic and real scenes share one reader.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

from edgeaudio.errors import UsageError
from edgeaudio.plugins.seld.scenes.metadata import EventRow, read_csv, write_csv

LabelSet = dict[int, list[tuple]]

#: The 13 STARSS22/23 sound classes, in the index order of the metadata's class column.
STARSS23_CLASSES = [
    "femaleSpeech", "maleSpeech", "clapping", "telephone", "laughter", "domesticSounds", "footsteps",
    "doorCupboard", "music", "musicInstrument", "waterTap", "bell", "knock",
]

#: MIC-format capsules of the Eigenmike-derived tetrahedral array as (azimuth, elevation) in degrees.
MIC_CAPSULES_AZ_EL_DEG = ((45.0, 35.0), (-45.0, -35.0), (135.0, -35.0), (-135.0, 35.0))
MIC_RADIUS_M = 0.042


def _capsule_positions() -> np.ndarray:
    az, el = np.radians(np.array(MIC_CAPSULES_AZ_EL_DEG)).T
    xyz = MIC_RADIUS_M * np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=1)
    xyz.setflags(write=False)
    return xyz


#: MIC capsule positions in metres, shape [4, 3] (x forward, y left, z up), read-only; channel order.
STARSS_MIC_POSITIONS_M = _capsule_positions()

#: The array profile of those capsules (devices/starss-mic.yaml): what a model trained on STARSS
#: audio is made for, exported and run with.
STARSS_ARRAY = "starss-mic"

FORMATS = ("mic", "foa")


def read_metadata_csv(path: str | Path) -> LabelSet:
    """Read a STARSS/DCASE metadata CSV into a label set of ``(class, az, el, source_index)``.

    Empty lines are skipped; a malformed row raises UsageError naming the file and line. A 2024
    distance column is accepted and dropped, since label sets carry directions only (read it with
    :func:`edgeaudio.plugins.seld.scenes.metadata.read_csv` when it is needed).
    """
    labels: LabelSet = defaultdict(list)
    for row in read_csv(path):
        labels[row.frame].append((row.class_index, float(row.azimuth), float(row.elevation), row.source_index))
    return dict(labels)


def write_metadata_csv(path: str | Path, labels: LabelSet) -> Path:
    """Write a label set as a five-column STARSS CSV, degrees rounded to integers as DCASE writes them.

    Events without a track id get the source index of their rank among the same class in that
    frame, so overlapping instances of one class stay distinct rows.
    """
    rows = []
    for frame, events in labels.items():
        ranks: dict[int, int] = defaultdict(int)
        for event in events:
            cls = int(event[0])
            source = int(event[3]) if len(event) > 3 else ranks[cls]
            ranks[cls] += 1
            rows.append(EventRow(int(frame), cls, source, round(float(event[1])), round(float(event[2]))))
    return write_csv(path, rows)


class StarssDataset:
    """The (audio, metadata) pairs of a STARSS22/23 development set, matched by file stem.

    ``splits`` picks split folders by exact name (``"dev-test-sony"``) or by prefix up to a dash
    (``"dev-test"`` = both test folders); None takes every split. Items load lazily, one recording
    at a time, because a full split does not fit comfortably in memory on edge-class machines.
    """

    classes = STARSS23_CLASSES

    def __init__(self, root: str | Path, format: str = "mic", splits: list[str] | None = None):
        if format not in FORMATS:
            raise UsageError(f"STARSS format must be one of {', '.join(FORMATS)}, got {format!r}")
        self.root = Path(root)
        self.format = format
        audio_root = self._layout_folder(f"{format}_dev")
        metadata_root = self._layout_folder("metadata_dev")
        split_dirs = _select_splits(audio_root, splits)
        self.pairs = [
            (wav, _metadata_for(wav, metadata_root / split.name))
            for split in split_dirs
            for wav in sorted(split.glob("*.wav"))
        ]
        if not self.pairs:
            raise UsageError(
                f"no .wav files in {', '.join(str(d) for d in split_dirs)}",
                hint="STARSS audio lies in <root>/mic_dev/<split>/*.wav (or foa_dev)",
            )

    def _layout_folder(self, name: str) -> Path:
        folder = self.root / name
        if not folder.is_dir():
            found = sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
            raise UsageError(
                f"{self.root} is not a STARSS22/23 root: expected the folder {name}/ "
                f"(found: {', '.join(found) or 'nothing'})",
                hint="expected <root>/{mic_dev|foa_dev}/<split>/*.wav and <root>/metadata_dev/<split>/*.csv",
            )
        return folder

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, LabelSet]:
        """Audio as float32 ``[channels, samples]``, its sample rate, and its label set."""
        audio_path, metadata_path = self.pairs[index]
        audio, sample_rate = sf.read(audio_path, dtype="float32", always_2d=True)
        return np.ascontiguousarray(audio.T), sample_rate, read_metadata_csv(metadata_path)


def _select_splits(audio_root: Path, splits: list[str] | None) -> list[Path]:
    available = sorted(p for p in audio_root.iterdir() if p.is_dir())
    if not available:
        raise UsageError(f"{audio_root} has no split folders, expected e.g. dev-train-sony, dev-test-tau")
    if splits is None:
        return available
    chosen = []
    for split in splits:
        matches = [p for p in available if p.name == split or p.name.startswith(split + "-")]
        if not matches:
            names = ", ".join(p.name for p in available)
            raise UsageError(f"no split {split!r} in {audio_root} (available: {names})")
        chosen += [p for p in matches if p not in chosen]
    return chosen


def _metadata_for(wav: Path, metadata_dir: Path) -> Path:
    csv_path = metadata_dir / f"{wav.stem}.csv"
    if not csv_path.is_file():
        raise UsageError(f"{wav} has no metadata: expected {csv_path}")
    return csv_path
