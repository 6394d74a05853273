"""Folders of captioned clips: what ``edgeaudio export caption --calibration DIR --validation DIR``
take, and how the package ships its validation clips.

Layout: ``DIR/captions.csv`` in Clotho's columns (``file_name, caption_1 .. caption_5``, at least
one caption per clip) naming audio files relative to DIR (WAV, FLAC or Ogg, any rate; mixed down
to 16 kHz mono), plus an optional ``labels`` column: the event classes heard, separated by ``;``,
which add the event scores (precision, recall, F1 of the classes a caption names).

The package ships the 48 validation clips (``plugins/caption/validation/``, Ogg Opus at about
32 kbit/s: 1.8 MB where FLAC took 8) with ``SOURCES.json``: how they were made, the scores of the
shipped model on them before and after the Opus coding, and every clip they were composed from,
with its Debian package, version and licence. Maintainers write them with the event library built::

    python -m edgeaudio.plugins.caption.clip_sets --ship
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from edgeaudio.errors import UsageError
from edgeaudio.plugins.shared.validation_sets import cleared, ship_main, write_sources
from edgeaudio.task import EvalSet

COMMAND = "python -m edgeaudio.plugins.caption.clip_sets"
SHIPPED = Path(__file__).parent / "validation"
CAPTIONS = "captions.csv"
OPUS_LEVEL = 0.9  # libsndfile's compression level for Opus: about 32 kbit/s at 16 kHz mono
LAYOUT = "DIR/captions.csv with columns file_name, caption_1 .. caption_5 (Clotho's), optionally labels (a;b), and the clips it names"


def read_captioned(root: str | Path, name: str | None = None) -> EvalSet:
    """The clips of a folder as ``CaptionedClip``s (16 kHz mono, whole length), with their labels
    when the CSV has them."""
    from edgeaudio.plugins.caption.data import load_captioned_files, read_clotho

    root = Path(root)
    table = root / CAPTIONS
    if not table.is_file():
        found = ", ".join(sorted(p.name for p in root.iterdir())[:8]) if root.is_dir() else "not a folder"
        raise UsageError(f"{root} is not a folder of captioned clips: {table} is missing (found: {found})",
                         hint=f"expected {LAYOUT}")
    files = read_clotho(table, root)
    for item in files:
        if not item.captions:
            raise UsageError(f"{table}: {item.path.name} has no caption", hint=f"expected {LAYOUT}")
    clips = load_captioned_files(files)
    with open(table, newline="", encoding="utf-8-sig") as handle:
        labels = [row.get("labels") or "" for row in csv.DictReader(handle)]
    for clip, names in zip(clips, labels):
        clip.labels = [label for label in names.split(";") if label]
    return EvalSet(clips, name or f"{root} ({len(clips)} clips)")


def shipped_clips(edition: int) -> EvalSet | None:
    """The shipped validation clips when they were composed from library edition ``edition``."""
    if not (SHIPPED / "SOURCES.json").is_file() or json.loads((SHIPPED / "SOURCES.json").read_text())["library_edition"] != edition:
        return None
    return read_captioned(SHIPPED, "the shipped validation clips (plugins/caption/validation)")


def ship(log=print) -> Path:
    """Compose the validation clips from the built library (as ``validation_set`` does, noting
    every clip drawn), write them as Opus with their captions, and score the shipped model on
    them before and after the coding."""
    import soundfile as sf

    from edgeaudio.api import open_session
    from edgeaudio.plugins.caption.data import synthesize_set
    from edgeaudio.plugins.caption.task import VALIDATION_CLIPS, VALIDATION_SEED
    from edgeaudio.plugins.shared.event_library import NotingLibrary, open_library

    session = open_session("caption", backend="onnxruntime", precision="fp32", log=log)
    edition = session.task.config["library_edition"]
    library = NotingLibrary(open_library(held_out=True, edition=edition))
    clips = synthesize_set(library, VALIDATION_CLIPS, VALIDATION_SEED)
    cleared(SHIPPED / "clips")
    rows = []
    for index, clip in enumerate(clips):
        name = f"clips/{index:04d}.opus"
        sf.write(SHIPPED / name, clip.audio, 16000, format="OGG", subtype="OPUS", compression_level=OPUS_LEVEL)
        rows.append({"file_name": name, **{f"caption_{i + 1}": text for i, text in enumerate(clip.captions)},
                     "labels": ";".join(clip.labels)})
    with open(SHIPPED / CAPTIONS, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    scores = {label: {k: round(v, 4) for k, v in session.task.evaluate(session.runner, data).items()}
              for label, data in (("composed", clips), ("shipped", read_captioned(SHIPPED)))}
    sources = {
        "generator": f"{COMMAND} --ship",
        "what": f"{len(clips)} clips of 10 s composed (seed {VALIDATION_SEED}) from the event library's held-out clips, "
                "with five reference captions and the event classes each; Ogg Opus, 16 kHz mono",
        "library_edition": edition,
        "scores_of_the_shipped_model": scores,
        **library.sources(),
    }  # fmt: skip
    write_sources(SHIPPED, sources, f"{len(clips)} clips", log, drawn="library clips")
    log(f"the shipped model before and after the Opus coding: {scores}")
    return SHIPPED


def main(argv: list[str] | None = None) -> int:
    return ship_main(COMMAND, __doc__, "validation clips", lambda args: ship(), argv)


if __name__ == "__main__":
    sys.exit(main())
