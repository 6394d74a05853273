"""Captioning data: clips composed from the event library with reference captions written from
their structure, and readers for the Clotho and AudioCaps CSV layouts.

Composing a clip (plugins/shared/mixtures.py) and writing its captions (plugins/shared/captions.py)
are shared with the plugins that generate audio from such sentences; this module re-exports the
names it held before they moved there.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeaudio.errors import UsageError
from edgeaudio.plugins.shared.captions import BACKGROUND, EVENT_KEYWORDS, caption_words, write_captions
from edgeaudio.plugins.shared.mixtures import Event, Scene, compose_scene

__all__ = [
    "BACKGROUND", "CLIP_SECONDS", "EVENT_KEYWORDS", "SAMPLE_RATE", "CaptionedClip", "CaptionedFile", "Event", "Scene",
    "caption_words", "load_captioned_files", "read_audiocaps", "read_clotho", "synthesize_set", "write_captions",
]  # fmt: skip

SAMPLE_RATE = 16000
CLIP_SECONDS = 10.0


@dataclass
class CaptionedClip:
    """Audio [samples] at 16 kHz with its reference captions and (for synthesized clips) labels."""

    audio: np.ndarray
    captions: list[str]
    labels: list[str] = field(default_factory=list)


def synthesize_set(
    library, count: int, seed: int, seconds: float = CLIP_SECONDS, captions: int = 5, augment: bool = False, first: int = 0
) -> list[CaptionedClip]:
    """Clips ``first .. first + count - 1``, each from its own generator seeded by (seed, index):
    reproducible, and the same clip whatever ``count`` is (so a set can be made in slices)."""
    clips = []
    for index in range(first, first + count):
        rng = np.random.default_rng([seed, index])
        audio, scene = compose_scene(library, rng, seconds, augment)
        clips.append(CaptionedClip(audio, write_captions(scene, rng, captions), scene.labels))
    return clips


# -- real captioned data ----------------------------------------------------------------------------


@dataclass
class CaptionedFile:
    """An audio file on disk with its reference captions (Clotho, AudioCaps)."""

    path: Path
    captions: list[str]


def read_clotho(captions_csv: str | Path, audio_dir: str | Path) -> list[CaptionedFile]:
    """Clotho's ``clotho_captions_<split>.csv``: ``file_name, caption_1 .. caption_5``."""
    rows = _read_csv(captions_csv, ["file_name", "caption_1"])
    audio_dir = Path(audio_dir)
    files = [
        CaptionedFile(audio_dir / row["file_name"],
                      [row[k].strip() for k in sorted(row) if k.startswith("caption_") and row[k] and row[k].strip()])
        for row in rows
    ]
    for line, item in enumerate(files, start=2):  # line 1 is the header
        if not item.captions:
            raise UsageError(f"{captions_csv} line {line}: {item.path.name} has no caption")
    return files


def read_audiocaps(captions_csv: str | Path, audio_dir: str | Path, pattern: str = "{youtube_id}_{start_time}.wav") -> list[CaptionedFile]:
    """AudioCaps' ``<split>.csv``: ``audiocap_id, youtube_id, start_time, caption``, one row per
    caption (val/test have five rows per clip). Rows of one (youtube_id, start_time) are grouped
    into one clip; ``pattern`` names the audio file the downloader wrote for it."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for row in _read_csv(captions_csv, ["audiocap_id", "youtube_id", "start_time", "caption"]):
        grouped.setdefault((row["youtube_id"], row["start_time"]), []).append(row["caption"].strip())
    audio_dir = Path(audio_dir)
    return [
        CaptionedFile(audio_dir / pattern.format(youtube_id=yid, start_time=start), captions)
        for (yid, start), captions in grouped.items()
    ]


def _read_csv(path: str | Path, required: Sequence[str]) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no captions file at {path}")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise UsageError(f"{path} lacks column(s) {', '.join(missing)}", hint=f"columns found: {reader.fieldnames}")
        return list(reader)


def load_captioned_files(files: list[CaptionedFile], seconds: float | None = None) -> list[CaptionedClip]:
    """Decode files at 16 kHz mono (cut or zero-padded to ``seconds`` when given); missing files
    are an error naming the first one, so a half-downloaded dataset is noticed."""
    from edgeaudio.audio import read_audio

    missing = [f.path for f in files if not f.path.is_file()]
    if missing:
        raise UsageError(f"{len(missing)} audio file(s) missing, e.g. {missing[0]}", hint="check audio_dir and the file pattern")
    clips = []
    for item in files:
        audio = read_audio(item.path, sample_rate=SAMPLE_RATE)[0].mean(axis=0)
        if seconds:
            audio = np.pad(audio, (0, max(0, int(seconds * SAMPLE_RATE) - len(audio))))[: int(seconds * SAMPLE_RATE)]
        clips.append(CaptionedClip(audio.astype(np.float32), item.captions))
    return clips
