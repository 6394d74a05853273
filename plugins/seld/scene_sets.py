"""Folders of SELD scenes with DCASE CSV labels, read without torch: what ``edgeaudio export seld
--calibration DIR --validation DIR`` take, what training's ``--data-dir`` takes, and how the
package ships its validation scenes.

Layout (what ``synthesize_dataset`` writes)::

    DIR/classes.json          {"classes": [...]}: the class names the CSVs' class column counts
    DIR/mic/NAME.wav|.flac    one scene per file: one channel per microphone, in the array
                              profile's order (``edgeaudio devices``), any sample rate
    DIR/metadata/NAME.csv     DCASE rows per 100 ms frame: frame, class, source, azimuth,
                              elevation[, distance]

The package ships the twelve scenes the default model (respeaker-4mic) is validated on
(``plugins/seld/validation/respeaker-4mic/``, 16-bit FLAC: lossless copies of the synthesized
scenes; 8.8 MB, so other arrays' are left to the event library or ``--validation``) with
``SOURCES.json``: how they were made and every clip they were drawn from, with its Debian
package, version and licence. Maintainers write them with the event library built::

    python -m edgeaudio.plugins.seld.scene_sets --ship [--array respeaker-4mic]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from edgeaudio.errors import UsageError
from edgeaudio.plugins.shared.validation_sets import cleared, ship_main, write_sources
from edgeaudio.task import EvalSet

COMMAND = "python -m edgeaudio.plugins.seld.scene_sets"
SHIPPED = Path(__file__).parent / "validation"
AUDIO_SUFFIXES = (".wav", ".flac")
LAYOUT = "DIR/classes.json, DIR/mic/NAME.wav|.flac and DIR/metadata/NAME.csv (DCASE rows)"


def scene_files(root: str | Path) -> tuple[list[str], list[tuple[Path, Path]]]:
    """The class names and (audio, metadata CSV) pairs of a scene folder; a folder in another
    layout, or a scene without its CSV, is an error naming the file and what was expected."""
    root = Path(root)
    description = root / "classes.json"
    if not description.is_file():
        found = ", ".join(sorted(p.name for p in root.iterdir())[:8]) if root.is_dir() else "not a folder"
        raise UsageError(f"{root} is not a folder of DCASE scenes: {description} is missing (found: {found})",
                         hint=f"expected {LAYOUT}")  # fmt: skip
    try:
        classes = json.loads(description.read_text())["classes"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{description} is not a JSON object with a 'classes' list ({exc})",
                         hint='e.g. {"classes": ["alert", "crash", ...]}') from exc
    scenes = sorted(p for p in (root / "mic").glob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not scenes:
        raise UsageError(f"{root / 'mic'} holds no .wav or .flac scenes", hint=f"expected {LAYOUT}")
    pairs = []
    for audio in scenes:
        csv = root / "metadata" / f"{audio.stem}.csv"
        if not csv.is_file():
            raise UsageError(f"scene {audio} has no labels: expected {csv}", hint=f"expected {LAYOUT}")
        pairs.append((audio, csv))
    return list(classes), pairs


def read_scenes(root: str | Path, task, name: str | None = None) -> EvalSet:
    """``(audio [mics, samples], label set)`` per scene of a folder, at the task's rate, checked
    against the task: the same classes in the same order, one channel per microphone."""
    from edgeaudio.audio.files import read_audio
    from edgeaudio.plugins.seld.scenes.metadata import read_csv_lines

    classes, pairs = scene_files(root)
    if classes != list(task.classes):
        raise UsageError(f"{Path(root) / 'classes.json'} lists classes {classes}, not the model's {list(task.classes)}",
                         hint="label the scenes with the model's classes, in its order (edgeaudio run seld --help)")
    items = []
    for audio_path, csv in pairs:
        audio, _, _ = read_audio(audio_path, sample_rate=task.sample_rate)
        if audio.shape[0] != task.channels:
            raise UsageError(f"{audio_path} has {audio.shape[0]} channel(s); the {task.array} model takes {task.channels}",
                             hint="one channel per microphone of the array, in its profile's order")
        labels: dict[int, list[tuple]] = {}
        for line, row in read_csv_lines(csv):
            if not 0 <= row.class_index < len(classes):
                raise UsageError(f"{csv} line {line}: class {row.class_index} is not one of the {len(classes)} classes "
                                 f"classes.json lists (0-{len(classes) - 1})", hint="rows are frame,class,source,azimuth,elevation")
            labels.setdefault(row.frame, []).append((row.class_index, float(row.azimuth), float(row.elevation), row.source_index))
        items.append((audio, labels))
    return EvalSet(items, name or f"{root} ({len(items)} scenes)")


def shipped_scenes(task) -> EvalSet | None:
    """The validation scenes the package ships for the task's array, when they were made for its
    classes and library edition; None otherwise."""
    folder = SHIPPED / str(task.array)
    if not (folder / "SOURCES.json").is_file():
        return None
    made = json.loads((folder / "SOURCES.json").read_text())
    if made["classes"] != list(task.classes) or made["library_edition"] != task.config.get("library_edition"):
        return None
    return read_scenes(folder, task, f"the shipped validation scenes for {task.array} (plugins/seld/validation)")


def ship(task, log=print) -> Path:
    """Synthesize the task's validation scenes from the built library (as ``validation_set`` does,
    in one process so every clip drawn is noted) and write them into the package as FLAC."""
    import tempfile

    import soundfile as sf

    from edgeaudio.plugins.seld.task import VALIDATION_SCENES, VALIDATION_SEED
    from edgeaudio.plugins.seld.train import heldout_library, scene_config, synthesize
    from edgeaudio.plugins.shared.event_library import NotingLibrary

    library = NotingLibrary(heldout_library(task.classes, task.config.get("library_edition")))
    out = SHIPPED / str(task.array)
    with tempfile.TemporaryDirectory() as tmp:
        config = scene_config(VALIDATION_SEED)
        synthesize(Path(tmp), config, library, task.array_profile().positions, VALIDATION_SCENES, workers=1, progress=False)
        for folder in ("mic", "metadata"):
            cleared(out / folder)
        for wav in sorted((Path(tmp) / "mic").glob("*.wav")):
            audio, rate = sf.read(wav, dtype="int16")
            sf.write(out / "mic" / f"{wav.stem}.flac", audio, rate, format="FLAC", subtype="PCM_16", compression_level=1.0)
            (out / "metadata" / f"{wav.stem}.csv").write_bytes((Path(tmp) / "metadata" / f"{wav.stem}.csv").read_bytes())
        (out / "classes.json").write_bytes((Path(tmp) / "classes.json").read_bytes())
    sources: dict[str, Any] = {
        "generator": f"{COMMAND} --ship --array {task.array}",
        "what": f"{VALIDATION_SCENES} scenes of {config.duration:g} s for {task.array}, synthesized (seed {VALIDATION_SEED}) "
                "in simulated rooms with diffuse coloured noise from the event library's held-out clips; 16-bit FLAC",
        "array": task.array, "classes": list(task.classes), "library_edition": task.config.get("library_edition"),
        **library.sources(),
    }  # fmt: skip
    write_sources(out, sources, f"{VALIDATION_SCENES} scenes", log)
    return out


def main(argv: list[str] | None = None) -> int:
    from edgeaudio.tasks import get_task

    def ship_arrays(args) -> None:
        for array in args.array or [None]:
            ship(get_task("seld", {"array": array} if array else None))

    array = {"action": "append", "help": "array profile (default: the default model's)"}
    return ship_main(COMMAND, __doc__, "validation scenes", ship_arrays, argv, {"--array": array})


if __name__ == "__main__":
    sys.exit(main())
