"""The event library as the plugins that compose clips from it open it: at 16 kHz, split by recording."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeaudio.events import EventLibrary
from edgeaudio.plugins.shared.validation_sets import licence_summary

TEST_FRACTION = 0.2


def open_library(
    path: str | Path | None = None, held_out: bool | None = None, edition: int | None = None
) -> EventLibrary:
    """The event library at 16 kHz (default: the built-in one in ``edition``, the latest by default,
    built into the cache on first use); ``held_out`` True/False picks the test/train half of the
    seed-0 split by recording."""
    from edgeaudio.events.build_library import LATEST_EDITION, ensure_builtin

    if path is None:
        path = ensure_builtin(edition=edition or LATEST_EDITION)
    library = EventLibrary.from_folder(path, sample_rate=16000)
    if held_out is None:
        return library
    train, test = library.split(TEST_FRACTION, seed=0)
    return test if held_out else train


def library_packages(root: Path) -> dict[str, Any]:
    """Package, version and licences of the recordings the library was cut from (its
    SOURCES.json), so shipped weights say what they were derived from."""
    sources = Path(root) / "SOURCES.json"
    return json.loads(sources.read_text()).get("packages", {}) if sources.is_file() else {}


class NotingLibrary(EventLibrary):
    """A library that notes every clip drawn from it, so a data set made from it (the shipped
    validation sets) can record exactly which recordings, packages and licences it contains."""

    def __init__(self, library: EventLibrary):
        clips = [clip for label in library.classes for clip in library.clips(label)]
        super().__init__(library.root, library.sample_rate, library.classes, clips)
        self.drawn: set[Path] = set()

    def load(self, clip):
        self.drawn.add(clip.path)
        return super().load(clip)

    def sources(self) -> dict[str, Any]:
        """The drawn clips as the library's SOURCES.json records them (package, version, licence,
        source file), and per package its version and the licences of those clips."""
        listed = json.loads((self.root / "SOURCES.json").read_text())
        drawn = {path.relative_to(self.root).as_posix() for path in self.drawn}
        clips = [clip for clip in listed["clips"] if clip["file"] in drawn]
        return {"library": listed["generator"], "edition": listed.get("edition"), **licence_summary(clips), "clips": clips}
