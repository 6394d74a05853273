"""Folders of wideband speech for judging and calibrating bandwidth extension: what ``edgeaudio
export bwe --calibration DIR --validation DIR`` take, and how the package ships its validation set.

Layout: ``DIR/*.wav|.flac`` (sub-folders too), wideband speech recorded at 16 kHz or more, any
length; each file is the reference, and its narrowband input is made from it by the telephone path
the model is measured on (``data.telephone_input``: down to 8 kHz and back, soxr).

The package ships the 16 validation utterances (``plugins/bwe/validation/``, 16-bit FLAC: the
corpus's own samples) with ``SOURCES.json``: how they were made and every clip they join, with
its Debian package, version and licence. Maintainers write them with the corpus built::

    python -m edgeaudio.plugins.bwe.speech_sets --ship
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgeaudio.errors import UsageError
from edgeaudio.plugins.shared.validation_sets import cleared, licence_summary, ship_main, write_sources
from edgeaudio.task import EvalSet

COMMAND = "python -m edgeaudio.plugins.bwe.speech_sets"
SHIPPED = Path(__file__).parent / "validation"
AUDIO_SUFFIXES = (".wav", ".flac")
RATE = 16000


def read_wideband(root: str | Path, name: str | None = None) -> EvalSet:
    """``(narrowband input, wideband reference)`` pairs at 16 kHz from a folder of wideband speech;
    files below 16 kHz (already narrowband) are refused by name."""
    import soundfile as sf

    from edgeaudio.audio.files import read_audio
    from edgeaudio.plugins.bwe.data import telephone_input

    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES) if root.is_dir() else []
    if not files:
        raise UsageError(f"{root} holds no .wav or .flac speech", hint="expected a folder of wideband speech recordings "
                         "(16 kHz or more); the narrowband input is made from each by the telephone path")  # fmt: skip
    items = []
    for path in files:
        rate = sf.info(str(path)).samplerate
        if rate < RATE:
            raise UsageError(f"{path} is {rate} Hz: the references must be wideband, recorded at {RATE} Hz or more",
                             hint="the model's narrowband input is made from each reference; do not pass narrowband files")
        wide = read_audio(path, sample_rate=RATE)[0].mean(axis=0)
        items.append((telephone_input(wide), wide))
    return EvalSet(items, name or f"{root} ({len(items)} recordings)")


def shipped_utterances() -> EvalSet | None:
    if not (SHIPPED / "SOURCES.json").is_file():
        return None
    return read_wideband(SHIPPED, "the shipped validation utterances (plugins/bwe/validation)")


class _NotedClip:
    """A corpus clip that notes when it is read, so the shipped set can list what it joins."""

    def __init__(self, clip, read: list):
        self.clip, self.voice, self.read = clip, clip.voice, read

    def load(self):
        self.read.append(self.clip.path)
        return self.clip.load()


def ship(log=print) -> Path:
    """Write the task's validation utterances, made from the built corpus as ``validation_set``
    makes them, into the package as FLAC."""
    import soundfile as sf

    from edgeaudio.plugins.bwe.data import corpus_folder, read_corpus, utterances
    from edgeaudio.plugins.bwe.task import VALIDATION_ITEMS, VALIDATION_SECONDS

    corpus = corpus_folder()
    if not (corpus / "SOURCES.json").is_file():
        raise UsageError(f"the speech corpus is not built in {corpus}", hint="python -m edgeaudio.plugins.bwe.data --install")
    read: list = []
    clips = [_NotedClip(c, read) for c in read_corpus(corpus) if c.split == "val"]
    items = utterances(clips, VALIDATION_SECONDS, per_voice=4)[:VALIDATION_ITEMS]
    cleared(SHIPPED, ".flac")
    for index, (voice, wide) in enumerate(items):
        sf.write(SHIPPED / f"{index:04d}-{voice}.flac", wide, RATE, format="FLAC", subtype="PCM_16", compression_level=1.0)
    listed = {entry["file"]: entry for entry in json.loads((corpus / "SOURCES.json").read_text())["clips"]}
    used = [listed[str(path.relative_to(corpus))] for path in dict.fromkeys(read)]
    summary = licence_summary(used)
    sources = {
        "generator": f"{COMMAND} --ship",
        "what": f"{len(items)} wideband utterances of {VALIDATION_SECONDS:g} s (validation clips of the speech corpus, "
                "at most 4 per voice, joined 0.15 s apart), 16 kHz, 16-bit FLAC; the narrowband input is made from each",
        "corpus": "python -m edgeaudio.plugins.bwe.data",
        "licences": summary["licences"], "packages": summary["packages"], "clips": used,
    }  # fmt: skip
    write_sources(SHIPPED, sources, f"{len(items)} utterances", log)
    return SHIPPED


def main(argv: list[str] | None = None) -> int:
    return ship_main(COMMAND, __doc__, "validation utterances", lambda args: ship(), argv)


if __name__ == "__main__":
    sys.exit(main())
