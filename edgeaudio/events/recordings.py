"""The recordings of a recipe's sources: one per file or group of takes, per named sound of
OpenTTD's OpenSFX catalogue, or per key set of typing assembled from single-key samples."""

from __future__ import annotations

import hashlib
import io
import re
import struct
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Callable

import numpy as np

from edgeaudio.events.cutting import SAMPLE_RATE, read
from edgeaudio.events.debian import licence_from_text
from edgeaudio.events.recipe import SEED, Source


@dataclass
class Recording:
    """One source recording and what SOURCES.json says about it; decoded (mono, 24 kHz) on first use.

    Decoding waits because a class may list far more recordings than its size budget takes.
    """

    name: str
    package: str
    licence: str
    source: str | list[str]
    decode: Callable[[], np.ndarray]
    entry: str | None = None

    @cached_property
    def audio(self) -> np.ndarray:
        return self.decode()


def first_copy(path: Path, seen: set[str]) -> bool:
    """True the first time a file's content is met; ``seen`` collects the content hashes."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest in seen:
        return False
    seen.add(digest)
    return True


def short_name(package: str) -> str:
    """Package name without the words that only say it holds sounds: 'yaru-theme-sound' -> 'yaru'."""
    words = [w for w in package.split("-") if w not in {"data", "sound", "sounds", "theme", "effects"}]
    return "-".join(words) or package


def slug(text: str) -> str:
    """Lower-case name safe for files, never containing the library's '__' group separator."""
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]+", "_", text.lower())).strip("_")


def opensfx_recordings(source: Source) -> list[Recording]:
    """Sounds from OpenTTD's catalogue: a table of (offset, size), then per sound a titled WAV.

    Each sound's description names its original recording and its own licence
    (CC0, CC-BY-3.0, CC-BY-SA-3.0); that licence is what SOURCES.json records.
    """
    blob = Path(source.pattern).read_bytes()
    count = (struct.unpack_from("<I", blob, 0)[0] & 0x7FFFFFFF) // 8
    recordings = []
    for i in range(count):
        offset, size = struct.unpack_from("<II", blob, 8 * i)
        offset &= 0x7FFFFFFF
        name_length = blob[offset]
        description = blob[offset + 1 : offset + 1 + name_length].rstrip(b"\0").decode("latin-1")
        title = description.split('"')[1] if description.startswith('"') else description
        licence = licence_from_text(description)
        if title not in source.entries or not licence:
            continue
        wav = io.BytesIO(blob[offset + 1 + name_length : offset + size])
        name = slug(f"opensfx_{title}")
        recordings.append(Recording(name, source.package, licence, source.pattern, partial(read, wav), description))
    return recordings


def typing_recordings(source: Source, licensed: list[tuple[Path, str]], n_sets: int = 6) -> list[Recording]:
    """Typing made of real single-key recordings (press ``XX-0.wav``, release ``XX-1.wav``).

    Keys are dealt into ``n_sets`` disjoint sets and each set types its own words, so a held-out
    set holds key sounds that training never heard.
    """
    by_key: dict[str, dict[str, Path]] = {}
    for path, _ in licensed:
        key, _, action = path.stem.partition("-")
        by_key.setdefault(key, {})[action] = path
    keys = sorted(k for k, actions in by_key.items() if {"0", "1"} <= set(actions))
    licence = sorted({lic for _, lic in licensed})
    recordings = []
    for s in range(n_sets):
        files = {k: (by_key[k]["0"], by_key[k]["1"]) for k in keys[s::n_sets]}
        sources = [str(f) for pair in files.values() for f in pair]
        typing = partial(_type_words, files, np.random.default_rng([SEED, s]))
        recordings.append(Recording(f"typing_keyset{s}", source.package, " AND ".join(licence), sources, typing))
    return recordings


def _type_words(files: dict[str, tuple[Path, Path]], rng: np.random.Generator) -> np.ndarray:
    """Eight words of 2-7 keystrokes at human typing pace, separated by pauses the cutter splits at."""
    sounds = {k: (read(press), read(release)) for k, (press, release) in files.items()}
    events = []
    t = 0.2
    for _ in range(8):
        for _ in range(int(rng.integers(2, 8))):
            press, release = sounds[list(sounds)[rng.integers(len(sounds))]]
            events += [(t, press), (t + rng.uniform(0.06, 0.12), release)]
            t += rng.uniform(0.12, 0.25)
        t += rng.uniform(0.6, 1.0)
    audio = np.zeros(int((t + 0.5) * SAMPLE_RATE))
    for start, sound in events:
        i = int(start * SAMPLE_RATE)
        audio[i : i + len(sound)] += sound[: len(audio) - i]
    return audio.astype(np.float32)
