"""Build the built-in event library from real recordings that Debian packages ship.

    python -m edgeaudio.events.build_library --out DIR [--edition N] [--install]

Each class draws on several distinct recordings (recipe.py), so a split by recording still leaves
held-out sounds the model never heard. Clips are cut where the sound is, kept between 0.3 and 4 s,
loudness-normalised (cutting.py), and written as DIR/<class>/<recording>__<n>.wav at 24 kHz mono.
DIR/SOURCES.json records, per clip, the package, its version, the licence (debian.py) and the
source file. A file whose licence cannot be established is left out. Which recipe an edition cuts,
and where each edition lives in the cache, is editions.py's.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import sys
import time
import zlib
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgeaudio.errors import EdgeAudioError, UsageError, report, require
from edgeaudio.events.cutting import MIN_CLIP, SAMPLE_RATE, cut_events, normalise, read_all
from edgeaudio.events.cutting import read as _read
from edgeaudio.events.debian import apt_install as _apt_install
from edgeaudio.events.debian import dep5_stanzas as _dep5_stanzas
from edgeaudio.events.debian import file_licence as _licence
from edgeaudio.events.debian import installed_version as _installed_version
from edgeaudio.events.debian import licence_from_text as _licence_from_text
from edgeaudio.events.editions import (
    EDITION_1,
    EDITIONS,
    LATEST_EDITION,
    builtin_dir,
    check_edition,
    edition_of,
    is_built,
    training_edition,
)
from edgeaudio.events.library import Clip, is_readable_audio
from edgeaudio.events.recipe import ADDED_IN_EDITION_3, RECIPE, SEED, Source
from edgeaudio.events.recordings import Recording, first_copy, opensfx_recordings, short_name, slug, typing_recordings

# What other modules import from here: the build, and (re-exported) the editions, the recipe and the
# cutting it is made of, under the names they had when all of it lived in this module.
__all__ = [
    "ADDED_IN_EDITION_3", "EDITIONS", "EDITION_1", "LATEST_EDITION", "MIN_CLIP", "RECIPE", "SAMPLE_RATE", "Recording",
    "Source", "build", "builtin_dir", "check_edition", "cut_events", "edition_of", "ensure_builtin", "is_built", "main",
    "normalise", "training_edition",
    "_apt_install", "_cut_again", "_dep5_stanzas", "_installed_version", "_licence", "_licence_from_text", "_read",
    "_recordings",
]  # fmt: skip

CLIPS_PER_RECORDING = 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgeaudio.events.build_library", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write the library into")
    parser.add_argument("--edition", type=int, default=LATEST_EDITION, help="recipe edition (default: %(default)s)")
    parser.add_argument("--install", action="store_true", help="apt-get install the source packages first")
    args = parser.parse_args(argv)
    try:
        build(args.out, install=args.install, edition=check_edition(args.edition))
    except EdgeAudioError as exc:
        return report(exc)
    return 0


NO_BUILD_ENV = "EDGEAUDIO_NO_LIBRARY_BUILD"


def ensure_builtin(install: bool = False, progress: bool = True, edition: int = LATEST_EDITION) -> Path:
    """The folder of an edition of the built-in library, built into the cache on first use,
    unless ``EDGEAUDIO_NO_LIBRARY_BUILD=1`` forbids building it (CI proves that way that export
    needs no library: the tasks' shipped sets stand in for it)."""
    folder = builtin_dir(edition)
    if not is_built(folder):
        if os.environ.get(NO_BUILD_ENV, "") not in ("", "0"):
            raise UsageError(f"event library edition {edition} is not built in {folder}, and {NO_BUILD_ENV} forbids building it",
                             hint=f"unset {NO_BUILD_ENV} to build it (from its Debian packages)")
        build(folder, install=install, progress=progress, edition=edition)
    return folder


def build(out: Path, install: bool = False, progress: bool = True, edition: int = LATEST_EDITION) -> dict:
    """Build an edition of the library into ``out`` and return the SOURCES.json content."""
    started = time.monotonic()
    listed = json.loads(EDITION_1.read_text()) if check_edition(edition) == 1 else None
    if listed:
        packages = sorted(listed["packages"])
    else:
        recipe, seconds_per_class, clips_per_class = EDITIONS[edition]
        packages = sorted({s.package for sources in recipe.values() for s in sources})
    if install:
        _apt_install([p for p in packages if not _installed_version(p)])
    versions = {p: _installed_version(p) for p in packages}
    missing = [p for p, version in versions.items() if not version]
    if missing:
        raise UsageError(
            f"event library edition {edition} needs Debian packages that are not installed: {' '.join(missing)}",
            hint=f"python -m edgeaudio.events.build_library --edition {edition} --out {out} --install (as root), "
            "or apt-get install --no-install-recommends them",
        )
    _prepare_out(out)
    if listed:
        clips = _cut_again(out, listed["clips"], progress)
    else:
        clips = []
        for label in tqdm(sorted(recipe), desc="classes", unit="class", disable=not progress):
            clips.extend(_build_class(out, label, recipe[label], seconds_per_class, clips_per_class))
    for clip in clips:
        clip["version"] = versions[clip["package"]]
    manifest = {
        "generator": f"python -m edgeaudio.events.build_library --edition {edition}",
        "edition": edition,
        "sample_rate": SAMPLE_RATE,
        "packages": {
            p: {
                "version": versions[p],
                "copyright": f"/usr/share/doc/{p}/copyright",
                "licences": sorted({c["licence"] for c in clips if c["package"] == p}),
            }
            for p in packages
        },
        "clips": clips,
    }
    (out / "SOURCES.json").write_text(json.dumps(manifest, indent=1) + "\n")
    _print_summary(out, clips, time.monotonic() - started)
    return manifest


def _prepare_out(out: Path) -> None:
    """Use an empty folder, or replace a previous build (recognised by its SOURCES.json)."""
    if out.is_dir() and any(out.iterdir()):
        if not is_built(out):
            raise UsageError(f"{out} is not empty and holds no previous library build", hint="pick an empty folder")
        for label in RECIPE:
            shutil.rmtree(out / label, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _build_class(
    out: Path, label: str, sources: list[Source], seconds_per_class: float, clips_per_class: int
) -> list[dict]:
    """Cut and write one class: recordings in a seeded shuffled order, first clips of each first.

    Taking one clip per recording before a second from any keeps the class as varied as the size
    budget allows. Of byte-identical files (games ship copies of one sound) only the first counts.
    """
    sf = require("soundfile")
    seen: set[str] = set()
    recordings = [r for source in sources for r in _recordings(source, seen)]
    rng = np.random.default_rng([SEED, zlib.crc32(label.encode())])
    chosen = [recordings[i] for i in rng.permutation(len(recordings))[:clips_per_class]]
    cuts = {r.name: cut_events(r.audio, SAMPLE_RATE)[:CLIPS_PER_RECORDING] for r in chosen}
    written, seconds = [], 0.0
    for round_ in range(CLIPS_PER_RECORDING):
        for recording in chosen:
            if round_ >= len(cuts[recording.name]) or len(written) >= clips_per_class:
                continue
            start, stop = cuts[recording.name][round_]
            if seconds + (stop - start) / SAMPLE_RATE > seconds_per_class:
                continue
            clip = normalise(recording.audio[start:stop])
            path = out / label / f"{recording.name}__{round_}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), clip, SAMPLE_RATE, subtype="PCM_16")
            seconds += len(clip) / SAMPLE_RATE
            written.append(_describe(path.relative_to(out), label, recording, start, len(clip)))
    return written


def _cut_again(out: Path, listed: list[dict], progress: bool) -> list[dict]:
    """Write the clips a manifest lists: each from its source file (an OpenSFX entry, a typing key
    set), resampled to SAMPLE_RATE, cut at its start and duration, and normalised."""
    sf = require("soundfile")
    decoded: dict[str, np.ndarray] = {}
    for clip in tqdm(listed, desc="clips", unit="clip", disable=not progress):
        recording = Clip(Path(clip["file"]), clip["class"]).recording
        if recording not in decoded:
            decoded[recording] = _listed_recording(clip, recording).audio
        start = round(clip["start_s"] * SAMPLE_RATE)
        piece = decoded[recording][start : start + round(clip["duration_s"] * SAMPLE_RATE)]
        path = out / clip["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), normalise(piece), SAMPLE_RATE, subtype="PCM_16")
    return [dict(clip) for clip in listed]


def _listed_recording(clip: dict, name: str) -> Recording:
    source = clip["source"]
    if clip.get("entry"):
        title = clip["entry"].split('"')[1] if clip["entry"].startswith('"') else clip["entry"]
        found = opensfx_recordings(Source(clip["package"], source, "opensfx", entries=(title,)))
    elif isinstance(source, list):
        keys = Source(clip["package"], str(Path(source[0]).parent / "*.wav"), "keystrokes")
        found = [r for r in _recordings(keys) if r.name == name]
    else:
        found = [Recording(name, clip["package"], clip["licence"], source, partial(_read, Path(source)))]
    if not found:
        raise UsageError(f"cannot find the recording of {clip['file']} in {source}",
                         hint=f"install {clip['package']} version {clip.get('version', '')}".strip())
    return found[0]


def _describe(path: Path, label: str, recording: Recording, start: int, length: int) -> dict:
    entry = {
        "file": str(path),
        "class": label,
        "package": recording.package,
        "licence": recording.licence,
        "source": recording.source,
        "start_s": round(start / SAMPLE_RATE, 3),
        "duration_s": round(length / SAMPLE_RATE, 3),
    }
    if recording.entry:
        entry["entry"] = recording.entry
    return entry


def _recordings(source: Source, seen: set[str] | None = None) -> list[Recording]:
    """The source's recordings; ``seen``: content hashes of files taken already, to skip copies."""
    if source.kind == "opensfx":
        return opensfx_recordings(source)
    files = [
        Path(f) for f in sorted(glob.glob(source.pattern))
        if not (source.exclude and re.search(source.exclude, Path(f).name))
    ]
    if seen is not None:
        files = [f for f in files if first_copy(f, seen)]
    licensed = [(f, _licence(source.package, f)) for f in files if is_readable_audio(f)]
    licensed = [(f, lic) for f, lic in licensed if lic]
    if source.kind == "keystrokes":
        return typing_recordings(source, licensed)
    groups: dict[str, list[tuple[Path, str]]] = {}
    for path, licence in licensed:
        match = re.match(source.group, path.stem) if source.group else None
        groups.setdefault(match.group(0) if match else path.stem, []).append((path, licence))
    recordings = []
    for key, members in groups.items():
        name = slug(f"{short_name(source.package)}_{members[0][0].parent.name}_{key}")
        paths = [path for path, _ in members]
        licence = " AND ".join(sorted({lic for _, lic in members}))
        described = str(paths[0]) if len(paths) == 1 else [str(p) for p in paths]
        recordings.append(Recording(name, source.package, licence, described, partial(read_all, paths, source.loop)))
    return recordings


def _print_summary(out: Path, clips: list[dict], seconds: float) -> None:
    print(f"{'class':<12} {'clips':>5} {'recordings':>10} {'seconds':>8}  packages")
    for label in sorted({c["class"] for c in clips}):
        mine = [c for c in clips if c["class"] == label]
        recordings = {Clip(Path(c["file"]), label).recording for c in mine}
        packages = ", ".join(sorted({c["package"] for c in mine}))
        total = sum(c["duration_s"] for c in mine)
        print(f"{label:<12} {len(mine):>5} {len(recordings):>10} {total:>8.1f}  {packages}")
    size = sum(f.stat().st_size for f in out.rglob("*.wav")) / 1e6
    print(f"{len(clips)} clips, {size:.1f} MB in {out}, built in {seconds:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
