"""Build the built-in event library from real recordings that Debian packages ship.

    python -m edgeaudio.events.build_library --out DIR [--edition N] [--install]

Each class draws on several distinct recordings (sound themes, a drum kit, keyboard samples, game
Foley recorded from the real thing, voice-acted dialogue), so a split by recording still leaves
held-out sounds the model never heard. Clips are cut where the sound is (energy above the
recording's own loudest part minus 30 dB), kept between 0.3 and 4 s, loudness-normalised, and
written as DIR/<class>/<recording>__<n>.wav at 24 kHz mono. DIR/SOURCES.json records, per clip, the
package, its version, the licence (from the package's machine-readable copyright file, or stated
per sound where the package bundles sounds into one file) and the source file. A file whose
licence cannot be established is left out.

Editions: a model is evaluated on the held-out recordings of the edition it was trained on, so an
edition, once shipped weights depend on it, never changes. Edition 1 (233 clips of about 190
recordings) was cut by an early draft of RECIPE; ``edition1.json`` lists its clips (source, entry,
start, duration) and edition 1 is cut again from that list. Edition 2 is RECIPE plus game and
simulation packages with many more animal, machinery, vehicle, crash and crowd recordings; it drops
byte-identical copies and doubles the size budget per class. Edition 3 is edition 2 with real
horns (car horns, klaxons, a boat horn) in place of two whistles, and more machinery; its other
classes are edition 2's, clip for clip. Sidecars of shipped weights name their edition
(``library_edition``; none means 1).
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import hashlib
import io
import json
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache, partial
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from edgeaudio.audio.files import resample
from edgeaudio.errors import EdgeAudioError, UsageError, require
from edgeaudio.events.library import Clip, is_readable_audio

SAMPLE_RATE = 24000
MIN_CLIP, MAX_CLIP = 0.3, 4.0
CLIPS_PER_RECORDING = 4
TARGET_RMS_DBFS, PEAK_DBFS = -20.0, -1.0
SEED = 0

DRUMS = "/usr/share/hydrogen/data/drumkits"
OPENSFX = "/usr/share/games/openttd/baseset/opensfx/opensfx.cat"
WIDELANDS = "/usr/share/games/widelands/data/sound"
MEGAGLEST = "/usr/share/games/megaglest"
LINCITY = "/usr/share/games/lincity-ng/sounds"
TORCS = "/usr/share/games/torcs/data/sound"
HEDGEWARS = "/usr/share/games/hedgewars/Data/Sounds"
SCORCHED3D = "/usr/share/games/scorched3d/data/globalmods/apoc/data/wav/misc"
SIMUTRANS = "/usr/share/games/simutrans/pak/sound"
QABCS = "/usr/share/qabcs/abcs/all/noises"

# Licences of packages whose copyright file is not machine-readable, read by hand from that file.
STATED_LICENCES = {"fillets-ng-data-nl": "GPL-2"}


@dataclass(frozen=True)
class Source:
    """Where a class's recordings come from.

    kind "file": every file matching ``pattern`` (minus ``exclude``) is one recording.
    kind "opensfx": the named sounds of OpenTTD's OpenSFX catalogue, one recording each.
    kind "keystrokes": typing assembled from single-key samples, one recording per disjoint key set.

    ``group``: a regular expression whose match at the start of a file's name names its recording,
    for takes of one source in several files (``cow_ack1``, ``cow_die2`` -> ``cow``); they become
    one recording, so a split by recording never puts one take in training and another in the test.
    ``loop``: the files are loop samples (an engine at one speed); repeat each to this many seconds.
    """

    package: str
    pattern: str
    kind: str = "file"
    exclude: str = ""
    entries: tuple[str, ...] = ()
    group: str = ""
    loop: float = 0.0


RECIPE: dict[str, list[Source]] = {
    "alert": [
        Source("sound-theme-freedesktop", "/usr/share/sounds/freedesktop/stereo/*.oga",
               exclude="audio-|camera|screen-capture|trash|power-"),
        Source("yaru-theme-sound", "/usr/share/sounds/Yaru/stereo/*.oga", exclude="audio-volume|trash|power-"),
        Source("oxygen-sounds", "/usr/share/sounds/Oxygen-*.ogg", exclude="Window-|List-|Trash"),
        Source("deepin-sound-theme", "/usr/share/sounds/deepin/stereo/*.wav",
               exclude="screen-capture|camera|volume|trash|power|x-deepin"),
    ],
    "animal": [
        Source("openttd-opensfx", OPENSFX, "opensfx", entries=(
            "Sheep", "Cow", "Horse", "Tropical: Bird (1)", "Tropical: Bird (2)", "Tropical: Lion roar",
            "Tropical: Monkeys")),
        Source("etw-data", "/usr/share/games/etw/snd/dog.wav"),
    ],
    "crash": [
        Source("openttd-opensfx", OPENSFX, "opensfx", entries=(
            "Crash", "Explosion", "Road vehicle breakdown", "Train/ship breakdown", "Lumber mill: Crashing tree")),
        Source("heroes-sound-effects", "/usr/share/games/heroes/sfx/explo01.wav"),
        Source("moon-lander-data", "/usr/share/games/moon-lander/sounds/explosion2.wav"),
        Source("etw-data", "/usr/share/games/etw/snd/crash.wav"),
    ],
    "crowd": [
        Source("etw-data", "/usr/share/games/etw/crowd/*.wav"),
        Source("etw-data", "/usr/share/games/etw/snd/boou.wav"),
        Source("heroes-sound-effects", "/usr/share/games/heroes/sfx/foule*.wav"),
        Source("openttd-opensfx", OPENSFX, "opensfx", entries=("Applause", "Oooh sound")),
    ],
    "cymbal": [
        *(Source("hydrogen-data", f"{DRUMS}/GMRockKit/{kind}*.wav") for kind in ("Crash", "Splash", "Ride", "24Ride")),
        Source("hydrogen-data", f"{DRUMS}/GMRockKit/Bell-*.wav"),
        Source("hydrogen-data", f"{DRUMS}/TR808EmulationKit/808_Cymbal.flac"),
    ],
    "hihat": [
        Source("hydrogen-data", f"{DRUMS}/GMRockKit/Hat*.wav"),
        Source("hydrogen-data", f"{DRUMS}/TR808EmulationKit/808_Hat_*.flac"),
    ],
    "horn": [
        Source("openttd-opensfx", OPENSFX, "opensfx", entries=(
            "Factory Whistle", "Steam train station departure", "Ship horn", "Ferry horn",
            "Diesel/electric train station departure", "Modern car horn")),
        Source("heroes-sound-effects", "/usr/share/games/heroes/sfx/claxon.wav"),
        Source("moon-lander-data", "/usr/share/games/moon-lander/sounds/honk.wav"),
    ],
    "keyboard": [Source("bucklespring-data", "/usr/share/buckle/wav/*.wav", "keystrokes")],
    "kick_drum": [
        Source("hydrogen-data", f"{DRUMS}/GMRockKit/Kick-*.wav"),
        Source("hydrogen-data", f"{DRUMS}/TR808EmulationKit/808_Kick_*.flac"),
    ],
    "machinery": [
        Source("openttd-opensfx", OPENSFX, "opensfx", entries=(
            "Mining machinery", "Electric sparking", "Jackhammer", "Sawmill", "Lumber mill: Chainsaw",
            "Building bridge")),
    ],
    "music": [
        Source("pinball-data", "/usr/share/games/pinball/*/*.ogg"),
        Source("etw-data", "/usr/share/games/etw/music/*.wav"),
    ],
    "snare_drum": [
        Source("hydrogen-data", f"{DRUMS}/GMRockKit/Snare*.wav"),
        Source("hydrogen-data", f"{DRUMS}/TR808EmulationKit/808_Snare_*.flac"),
    ],
    "speech": [Source("fillets-ng-data-nl", "/usr/share/games/fillets-ng/sound/*/nl/*.ogg")],
    "vehicle": [
        Source("openttd-opensfx", OPENSFX, "opensfx", entries=(
            "Propeller plane start", "Early jet take off", "Helicopter", "Mach 1+ Jet take off",
            "Modern jet take off", "Toyland: Propeller plane take off", "Truck/old bus start, pull away",
            "Modern bus start", "Old bus start")),
        Source("etw-data", "/usr/share/games/etw/intro/engine.wav"),
    ],
}

_MEGAGLEST_UNITS = f"{MEGAGLEST}/techs/megapack/factions"
ADDED_IN_EDITION_2: dict[str, list[Source]] = {
    "animal": [
        Source("widelands-data", f"{WIDELANDS}/animals/*.ogg", group=r"[a-z]+\d?"),
        Source("widelands-data", f"{WIDELANDS}/farm/*.ogg", exclude="scythe", group=r"[a-z]+"),
        *(Source("megaglest-data", f"{MEGAGLEST}/tilesets/*/sounds/{animal}.*", group=r"[a-z]+")
          for animal in ("wolf", "chicken", "hawk", "rooster", "owl")),
        *(Source("megaglest-data", f"{MEGAGLEST}/techs/megapack/commondata/sounds/{animal}_*.wav", group=r"[a-z]+")
          for animal in ("cow", "pig")),
        Source("megaglest-data", f"{_MEGAGLEST_UNITS}/persian/units/sheep/sounds/sheep*.wav", group=r"[a-z]+"),
        Source("megaglest-data", f"{_MEGAGLEST_UNITS}/persian/units/elephant/sounds/ele*.wav", group=r"[a-z]+"),
        Source("megaglest-data", f"{_MEGAGLEST_UNITS}/indian/units/bull/sounds/bull_*.wav", group=r"[a-z]+"),
        Source("megaglest-data", f"{_MEGAGLEST_UNITS}/indian/units/beehive/sounds/bee*.wav", group=r"[a-z]+"),
    ],
    "crash": [
        Source("torcs-data", f"{TORCS}/*crash*.wav", group=r"[a-z]+"),
        Source("hedgewars-data", f"{HEDGEWARS}/explosion.ogg"),
        Source("lincity-ng-data", f"{LINCITY}/Raze*.wav", group=r"[A-Za-z]+"),
    ],
    "crowd": [Source("lincity-ng-data", f"{LINCITY}/SportsCroud*.wav", group=r"[A-Za-z]+")],
    "machinery": [
        Source("widelands-data", f"{WIDELANDS}/atlanteans/saw/*.ogg", group=r"[a-z]+"),
        Source("widelands-data", f"{WIDELANDS}/sawmill/*.ogg", group=r"[a-z]+"),
        Source("widelands-data", f"{WIDELANDS}/mill/*.ogg", group=r"[a-z]+"),
        Source("widelands-data", f"{WIDELANDS}/stonecutting/stonecutter.ogg"),
        Source("widelands-data", f"{WIDELANDS}/metal/furnace.ogg"),
        *(Source("lincity-ng-data", f"{LINCITY}/{site}*.wav", group=r"[A-Za-z]+")
          for site in ("CoalMine", "OreMine", "IndustryHigh", "IndustryLight", "Mill")),
        Source("hedgewars-data", f"{HEDGEWARS}/drillgun.ogg"),
        Source("hedgewars-data", f"{HEDGEWARS}/pickhammer.ogg"),
        Source("megaglest-data", f"{_MEGAGLEST_UNITS}/tech/units/battle_machine/sounds/machine_walk*.wav",
               group=r"[a-z_]+[a-z]"),
    ],
    "vehicle": [
        Source("torcs-data", f"{TORCS}/*.wav", loop=3.0, group=r"[a-z0-9]+",
               exclude="axle|backfire|boom|crash|gear_change|locked|out_of_road|road-ride|skid|turbo"),
        *(Source("lincity-ng-data", f"{LINCITY}/{traffic}*.wav", group=r"[A-Za-z]+")
          for traffic in ("RailTrain", "TraficHigh", "TraficLow")),
        Source("hedgewars-data", f"{HEDGEWARS}/plane.ogg"),
    ],
}

# Edition 3: real horns (car horns, klaxons, a boat horn) where edition 2 had two whistles among eight
# recordings, and more machinery. scorched3d's carhorn1/2 and carhorn4/5/6 are one horn each at
# other lengths (spectra correlate at 0.97-0.99), so one file of each is taken.
ADDED_IN_EDITION_3: dict[str, list[Source]] = {
    "horn": [
        Source("scorched3d-data", f"{SCORCHED3D}/carhorn[134].wav"),
        Source("trophy-data", "/usr/share/games/trophy/sounds/carhorn.wav"),
        Source("btanks-data", "/usr/share/games/btanks/data/sounds/klaxon*.ogg", group=r"klaxon"),
        Source("micropolis-data", "/usr/share/games/micropolis/res/sounds/honkhonk-*.wav", group=r"honkhonk"),
        Source("simutrans-pak64", f"{SIMUTRANS}/boat-horn.wav"),
        Source("qabcs-data", f"{QABCS}/horn.ogg"),
    ],
    "machinery": [
        Source("simutrans-pak64", f"{SIMUTRANS}/buzzsaw.wav"),
        Source("simutrans-pak64", f"{SIMUTRANS}/jackhammer.wav"),
        Source("simutrans-pak64", f"{SIMUTRANS}/tree-cutting.wav"),
        Source("scorched3d-data", f"{SCORCHED3D}/factoryloop1.wav"),
        Source("qabcs-data", f"{QABCS}/excavator.ogg"),
    ],
}
# A factory whistle and a steam train's whistle are not horns: edition 3 leaves them out.
REMOVED_IN_EDITION_3 = {"horn": ("Factory Whistle", "Steam train station departure")}


def _edition(
    recipe: dict[str, list[Source]], added: dict[str, list[Source]], removed: dict[str, tuple[str, ...]] | None = None
) -> dict[str, list[Source]]:
    """A recipe plus the sources an edition adds, minus the OpenSFX entries it drops."""
    dropped = removed or {}
    return {
        label: [
            *(replace(s, entries=tuple(e for e in s.entries if e not in dropped.get(label, ()))) for s in sources),
            *added.get(label, []),
        ]
        for label, sources in recipe.items()
    }


EDITION_1 = Path(__file__).with_name("edition1.json")
_RECIPE_2 = _edition(RECIPE, ADDED_IN_EDITION_2)
# edition -> (recipe, seconds per class, clips per class); edition 1 is cut again from EDITION_1
EDITIONS: dict[int, tuple[dict[str, list[Source]], float, int] | None] = {
    1: None,
    2: (_RECIPE_2, 120.0, 96),
    3: (_edition(_RECIPE_2, ADDED_IN_EDITION_3, REMOVED_IN_EDITION_3), 120.0, 96),
}
LATEST_EDITION = max(EDITIONS)


def check_edition(edition: int) -> int:
    if edition not in EDITIONS:
        raise UsageError(
            f"no event library edition {edition}", hint=f"editions: {', '.join(map(str, EDITIONS))}"
        )
    return int(edition)


def training_edition(library: str | Path | None) -> int | None:
    """The edition a training run draws from: the latest built-in one by default, the edition
    whose cache folder ``library`` names, or None for a library folder of the user's own."""
    if not library:
        return LATEST_EDITION
    folder = Path(library).expanduser().resolve()
    return next((e for e in EDITIONS if builtin_dir(e).resolve() == folder), None)


def edition_of(sidecar: dict) -> int:
    """The library edition a sidecar's weights were trained on (written since edition 2; else 1)."""
    data = sidecar.get("data", {})
    return int(data.get("library_edition", sidecar.get("config", {}).get("library_edition", 1)))


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
        print(f"error: {exc}" + (f"\n  {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return exc.exit_code
    return 0


def builtin_dir(edition: int = LATEST_EDITION) -> Path:
    """Where an edition of the built-in library lives, built or not: ``<edgeaudio cache>/events/builtin``
    for edition 1, ``.../builtin-v<N>`` for later ones."""
    from edgeaudio.cache import cache_root

    check_edition(edition)
    return cache_root() / "events" / ("builtin" if edition == 1 else f"builtin-v{edition}")


def is_built(folder: Path) -> bool:
    """SOURCES.json is written last, so its presence means a complete build."""
    return (Path(folder) / "SOURCES.json").is_file()


def ensure_builtin(install: bool = False, progress: bool = True, edition: int = LATEST_EDITION) -> Path:
    """The folder of an edition of the built-in library, built into the cache on first use."""
    folder = builtin_dir(edition)
    if not is_built(folder):
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


def _apt_install(packages: list[str]) -> None:
    """Install what is missing; refresh the package lists once if apt does not know a package."""
    if not packages:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if subprocess.run(command).returncode == 0:
        return
    subprocess.run(["apt-get", "update"], check=False)
    if subprocess.run(command).returncode != 0:
        raise UsageError(f"apt-get could not install {' '.join(packages)}", hint="run as root on Debian 12 or later")


def _installed_version(package: str) -> str | None:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}|${Version}", package], capture_output=True, text=True, check=False
    )
    status, _, version = result.stdout.partition("|")
    return version if result.returncode == 0 and status.endswith("installed") else None


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
    sf = require("soundfile", "mic")
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
    sf = require("soundfile", "mic")
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
        found = _opensfx_recordings(Source(clip["package"], source, "opensfx", entries=(title,)))
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


# --- finding and decoding recordings --------------------------------------------------------------


def _recordings(source: Source, seen: set[str] | None = None) -> list[Recording]:
    """The source's recordings; ``seen``: content hashes of files taken already, to skip copies."""
    if source.kind == "opensfx":
        return _opensfx_recordings(source)
    files = [
        Path(f) for f in sorted(glob.glob(source.pattern))
        if not (source.exclude and re.search(source.exclude, Path(f).name))
    ]
    if seen is not None:
        files = [f for f in files if _first_copy(f, seen)]
    licensed = [(f, _licence(source.package, f)) for f in files if is_readable_audio(f)]
    licensed = [(f, lic) for f, lic in licensed if lic]
    if source.kind == "keystrokes":
        return _typing_recordings(source, licensed)
    groups: dict[str, list[tuple[Path, str]]] = {}
    for path, licence in licensed:
        match = re.match(source.group, path.stem) if source.group else None
        groups.setdefault(match.group(0) if match else path.stem, []).append((path, licence))
    recordings = []
    for key, members in groups.items():
        name = _slug(f"{_short(source.package)}_{members[0][0].parent.name}_{key}")
        paths = [path for path, _ in members]
        licence = " AND ".join(sorted({lic for _, lic in members}))
        described = str(paths[0]) if len(paths) == 1 else [str(p) for p in paths]
        recordings.append(Recording(name, source.package, licence, described, partial(_read_all, paths, source.loop)))
    return recordings


def _first_copy(path: Path, seen: set[str]) -> bool:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest in seen:
        return False
    seen.add(digest)
    return True


def _read(path: Path | io.BytesIO, loop: float = 0.0) -> np.ndarray:
    """Mono at SAMPLE_RATE plus MIN_CLIP of silence, so a hit shorter than a clip still makes one.
    ``loop``: repeat a loop sample to at least this many seconds first."""
    sf = require("soundfile", "mic")
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = resample(data.mean(axis=1, keepdims=True).T, rate, SAMPLE_RATE)[0]
    if loop and len(mono):
        mono = np.tile(mono, int(np.ceil(loop * SAMPLE_RATE / len(mono))))
    return np.concatenate([mono, np.zeros(int(MIN_CLIP * SAMPLE_RATE), dtype=np.float32)])


def _read_all(paths: list[Path], loop: float) -> np.ndarray:
    """The takes of one recording one after another, each followed by silence the cutter splits at."""
    return np.concatenate([_read(path, loop) for path in paths])


def _short(package: str) -> str:
    """Package name without the words that only say it holds sounds: 'yaru-theme-sound' -> 'yaru'."""
    words = [w for w in package.split("-") if w not in {"data", "sound", "sounds", "theme", "effects"}]
    return "-".join(words) or package


def _slug(text: str) -> str:
    """Lower-case name safe for files, never containing the library's '__' group separator."""
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]+", "_", text.lower())).strip("_")


def _opensfx_recordings(source: Source) -> list[Recording]:
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
        licence = _licence_from_text(description)
        if title not in source.entries or not licence:
            continue
        wav = io.BytesIO(blob[offset + 1 + name_length : offset + size])
        name = _slug(f"opensfx_{title}")
        recordings.append(Recording(name, source.package, licence, source.pattern, partial(_read, wav), description))
    return recordings


def _typing_recordings(source: Source, licensed: list[tuple[Path, str]], n_sets: int = 6) -> list[Recording]:
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
    sounds = {k: (_read(press), _read(release)) for k, (press, release) in files.items()}
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


# --- licences -------------------------------------------------------------------------------------

_LICENCE_PHRASES = [
    (r"Creative Commons Attribution[- ]Share ?Alike 3\.0", "CC-BY-SA-3.0"),
    (r"Creative Commons Attribution 3\.0", "CC-BY-3.0"),
    (r"Creative Commons Zero 1\.0|CC0", "CC0-1.0"),
    (r"[Pp]ublic [Dd]omain", "public-domain"),
]


def _licence_from_text(text: str) -> str | None:
    match = re.search(r"License:(.*)", text)
    for pattern, spdx in _LICENCE_PHRASES:
        if match and re.search(pattern, match.group(1)):
            return spdx
    return None


def _licence(package: str, path: Path) -> str | None:
    """Licence of an installed file from the package's DEP-5 copyright file (last match wins).

    Debian's patterns name upstream paths (``stereo/bell.oga``), so a pattern matches an installed
    path that ends with it. Packages without a machine-readable file use STATED_LICENCES.
    """
    stanzas = _dep5_stanzas(Path(f"/usr/share/doc/{package}/copyright"))
    if stanzas is None:
        return STATED_LICENCES.get(package)
    licence = None
    for patterns, stanza_licence in stanzas:
        if any(p == "*" or fnmatch.fnmatch(str(path), f"*/{p}") for p in patterns):
            licence = stanza_licence
    return licence


@lru_cache(maxsize=None)
def _dep5_stanzas(copyright_file: Path) -> list[tuple[list[str], str]] | None:
    """(Files patterns, License short name) per stanza, or None when the file is not DEP-5."""
    if not copyright_file.is_file():
        return None
    text = copyright_file.read_text(errors="replace")
    if not text.startswith("Format:"):
        return None
    stanzas = []
    for paragraph in re.split(r"\n[ \t]*\n", text):
        fields = dict(re.findall(r"^(Files|License):[ \t]*(.*(?:\n[ \t]+.*)*)", paragraph, flags=re.MULTILINE))
        if "Files" in fields and "License" in fields:
            stanzas.append((fields["Files"].split(), fields["License"].splitlines()[0].strip()))
    return stanzas


# --- cutting and levels ---------------------------------------------------------------------------


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
