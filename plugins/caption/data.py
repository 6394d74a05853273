"""Captioning data: scenes composed from the event library, captions written from their structure,
and readers for the Clotho and AudioCaps CSV layouts.

A composed clip is a mono mixture of 1-4 event classes over a quiet noise bed. Foreground classes
follow one another ("then") or overlap ("while"); a class may repeat ("twice", "three times"); a
further class may sit far away (quieter, reverberant: "in the background"). Each clip gets several
reference captions drawn from that structure with different synonyms and sentence shapes, so the
decoder cannot score by reproducing one template: it has to hear which classes, how many times
and in which order.

``EVENT_KEYWORDS`` is the synonym table the event precision/recall metric reads captions with;
every word the captions use for a class is in it, and no keyword belongs to two classes.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeaudio.errors import UsageError

SAMPLE_RATE = 16000
CLIP_SECONDS = 10.0

# class -> (noun phrases, clauses)
PHRASES: dict[str, tuple[list[str], list[str]]] = {
    "alert": (["an alert tone", "a notification chime", "an electronic beep", "an alarm signal"],
              ["an alert tone sounds", "a notification chimes", "something beeps", "an alarm signal goes off"]),
    "animal": (["an animal", "an animal call", "a creature"],
               ["an animal calls out", "an animal cries", "a creature makes noises", "an animal growls"]),
    "crash": (["a loud crash", "a smash", "breaking objects"],
              ["something crashes", "objects smash", "something breaks with a crash", "a heavy object crashes down"]),
    "crowd": (["a crowd", "a murmuring crowd", "crowd chatter", "a group of people"],
              ["a crowd murmurs", "a crowd chatters", "many people talk at once", "a group of people cheers"]),
    "cymbal": (["a cymbal", "a ringing cymbal", "a cymbal hit"],
               ["a cymbal rings", "a cymbal is struck", "cymbals shimmer"]),
    "hihat": (["a hi hat", "a closed hi hat", "hi hat ticks"],
              ["a hi hat ticks", "a hi hat is tapped", "hi hats click"]),
    "horn": (["a horn", "a car horn", "a honking horn"],
             ["a horn honks", "a car horn blares", "a horn toots"]),
    "keyboard": (["typing on a keyboard", "keyboard clicks", "a keyboard"],
                 ["someone types on a keyboard", "keys clatter on a keyboard", "someone is typing"]),
    "kick_drum": (["a kick drum", "a bass drum", "a thumping kick drum"],
                  ["a kick drum thumps", "a bass drum booms", "a kick drum is hit"]),
    "machinery": (["machinery", "a machine", "a whirring motor"],
                  ["machinery whirs", "a machine is running", "a motor hums"]),
    "music": (["music", "a melody", "a tune"],
              ["music plays", "a melody is played", "a tune plays"]),
    "snare_drum": (["a snare drum", "a snare", "a rattling snare"],
                   ["a snare drum is hit", "a snare drum rattles", "a snare cracks"]),
    "speech": (["a voice", "speech", "someone speaking", "a person speaking"],
               ["a person speaks", "someone talks", "a voice speaks", "someone is speaking"]),
    "vehicle": (["a vehicle", "a passing car", "an engine", "traffic"],
                ["a vehicle passes by", "a car drives past", "an engine revs", "a vehicle drives by"]),
}

EVENT_KEYWORDS: dict[str, list[str]] = {
    "alert": ["alert", "notification", "chime", "chimes", "beep", "beeps", "alarm"],
    "animal": ["animal", "animals", "creature"],
    "crash": ["crash", "crashes", "smash", "breaks", "breaking"],
    "crowd": ["crowd", "many people", "group of people"],
    "cymbal": ["cymbal", "cymbals"],
    "hihat": ["hi hat", "hi hats", "hihat"],
    "horn": ["horn", "horns", "car horn", "honks", "honking"],
    "keyboard": ["keyboard", "typing", "types", "keys"],
    "kick_drum": ["kick drum", "bass drum", "kick"],
    "machinery": ["machinery", "machine", "motor", "whirs", "whirring"],
    "music": ["music", "melody", "tune", "song"],
    "snare_drum": ["snare", "snares", "snare drum"],
    "speech": ["voice", "speech", "speaking", "speaks", "talks", "talking"],
    "vehicle": ["vehicle", "car", "cars", "engine", "traffic"],
}

COUNTS = {2: ["twice", "two times"], 3: ["three times", "several times", "repeatedly"]}
BACKGROUND = ["in the background", "in the distance", "far away"]
# the words ``_caption``'s sentence shapes add around the phrases above
TEMPLATE_WORDS = "can be heard there is the sound of you hear first and then followed by while as at same time with"


@dataclass
class Event:
    """One class in a scene: its occurrences' onsets and lengths (seconds) and whether it is far."""

    label: str
    onsets: list[float]
    lengths: list[float]
    far: bool = False

    @property
    def count(self) -> int:
        return len(self.onsets)


@dataclass
class Scene:
    """``mode``: "sequence" (foreground classes one after another) or "overlap"."""

    mode: str
    events: list[Event] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.events]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CaptionedClip:
    """Audio [samples] at 16 kHz with its reference captions and (for synthesized clips) labels."""

    audio: np.ndarray
    captions: list[str]
    labels: list[str] = field(default_factory=list)


# -- composition ----------------------------------------------------------------------------------


CLASS_COUNTS = (0.3, 0.35, 0.25, 0.1)  # probabilities of 1, 2, 3 and 4 classes in a composed clip


def compose_scene(
    library, rng: np.random.Generator, seconds: float = CLIP_SECONDS, augment: bool = False, class_counts=CLASS_COUNTS
) -> tuple[np.ndarray, Scene]:
    """One mono mixture and its structure. ``library`` is an EventLibrary at 16 kHz;
    ``class_counts``: the probabilities of 1, 2, 3 and 4 classes.

    ``augment`` (training): every drawn clip is replayed at a random speed (0.8-1.25x, pitch and
    length together) and tilted in spectrum, so a library of a few hundred recordings yields many
    more distinct sounds and the model learns the class rather than the recording."""
    rate = library.sample_rate
    total = int(seconds * rate)
    classes = [c for c in library.classes if library.clips(c)]
    n_classes = int(rng.choice([1, 2, 3, 4], p=list(class_counts)))
    chosen = [str(c) for c in rng.choice(classes, size=min(n_classes, len(classes)), replace=False)]
    far = [i > 0 and rng.random() < 0.3 for i in range(len(chosen))]
    foreground = [c for c, f in zip(chosen, far) if not f]
    scene = Scene(mode="sequence" if len(foreground) < 2 or rng.random() < 0.5 else "overlap")
    mix = np.zeros(total, np.float32)
    slot = seconds / len(foreground)
    cursor = float(rng.uniform(0.0, 0.5))
    anchor: tuple[float, float] | None = None
    for label in foreground:
        repeats = int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15]))
        clip = _draw(library, label, rng, augment)
        gap = float(rng.uniform(0.15, 0.5))
        budget = (slot if scene.mode == "sequence" else seconds * 0.8) / repeats - gap
        piece = clip[: max(int(0.3 * rate), min(len(clip), int(budget * rate)))]
        span = repeats * (len(piece) / rate + gap)
        if scene.mode == "overlap" and anchor is not None:  # start inside the first class's span
            start = float(rng.uniform(anchor[0], max(anchor[0], min(anchor[1] - 0.3, seconds - span))))
        elif scene.mode == "overlap":
            start = float(rng.uniform(0.0, max(0.0, seconds - span)))
        else:
            start = cursor
        event = Event(label, [], [])
        for r in range(repeats):
            onset = start + r * (len(piece) / rate + gap)
            if onset + 0.2 > seconds:
                break
            _add(mix, piece * _db(rng.uniform(-3, 3)), int(onset * rate))
            event.onsets.append(round(onset, 3))
            event.lengths.append(round(min(len(piece) / rate, seconds - onset), 3))
        cursor = start + span
        anchor = anchor or (start, start + span)
        if event.onsets:  # a short clip may have no room left for a later class
            scene.events.append(event)
    for label in [c for c, f in zip(chosen, far) if f]:
        clip = _draw(library, label, rng, augment)
        onset = float(rng.uniform(0.0, max(0.0, seconds - len(clip) / rate)))
        _add(mix, _reverberant(clip, rng, rate) * _db(rng.uniform(-16, -9)), int(onset * rate))
        scene.events.append(Event(label, [round(onset, 3)], [round(min(len(clip) / rate, seconds - onset), 3)], far=True))
    mix += _noise_bed(total, rng) * _db(rng.uniform(-55, -35))
    mix *= _db(rng.uniform(-6, 0)) / max(1e-6, float(np.max(np.abs(mix))))
    return mix.astype(np.float32), scene


def _draw(library, label: str, rng: np.random.Generator, augment: bool) -> np.ndarray:
    clips = library.clips(label)
    original = library.load(clips[rng.integers(len(clips))])
    if not augment:
        return original
    speed = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    clip = np.interp(np.arange(0, len(original) - 1, speed), np.arange(len(original)), original)
    tilt = rng.uniform(-0.9, 0.9)  # one-pole emphasis (> 0) or smoothing (< 0)
    clip = np.concatenate([clip[:1], clip[1:] - tilt * clip[:-1]]) if tilt > 0 else _smooth(clip, -tilt)
    level = np.sqrt(np.mean(original**2) / max(1e-12, float(np.mean(clip**2))))  # keep the clip's loudness
    return (clip * level).astype(np.float32)


def _smooth(clip: np.ndarray, amount: float) -> np.ndarray:
    from scipy.signal import lfilter

    return lfilter([1 - amount], [1, -amount], clip)


def _db(value: float) -> float:
    return float(10 ** (value / 20))


def _add(target: np.ndarray, part: np.ndarray, offset: int) -> None:
    end = min(len(target), offset + len(part))
    if end > offset:
        target[offset:end] += part[: end - offset]


def _reverberant(clip: np.ndarray, rng: np.random.Generator, rate: int) -> np.ndarray:
    """A far source: the clip through exponentially decaying noise (a diffuse room tail) with a
    weak direct path, so distance is heard as level and reverberation together."""
    from scipy.signal import fftconvolve  # here, not at the top: the runtime reads this module's phrases

    rt60 = rng.uniform(0.4, 1.0)
    t = np.arange(int(rt60 * rate)) / rate
    tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    tail[0] = 3.0 * np.sqrt(np.sum(tail**2)) / 10
    wet = fftconvolve(clip, tail)[: len(clip) + len(t) // 2]
    return (wet / max(1e-9, np.sqrt(np.mean(wet**2))) * np.sqrt(np.mean(clip**2))).astype(np.float32)


def _noise_bed(samples: int, rng: np.random.Generator) -> np.ndarray:
    """Ambience: noise with a random spectral tilt between white and brown (room tone, hiss, rumble)."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    freqs = np.maximum(np.fft.rfftfreq(samples), 1.0 / samples)
    noise = np.fft.irfft(spectrum * freqs ** (-rng.uniform(0.0, 1.0)), n=samples)
    return (noise / max(1e-9, float(np.max(np.abs(noise))))).astype(np.float32)


# -- captions ---------------------------------------------------------------------------------------


def write_captions(scene: Scene, rng: np.random.Generator, count: int = 5) -> list[str]:
    """``count`` different reference captions for ``scene``, each from its structure alone."""
    captions: list[str] = []
    for _ in range(8 * count):
        caption = _caption(scene, rng)
        if caption not in captions:
            captions.append(caption)
        if len(captions) == count:
            break
    while len(captions) < count:  # a one-class scene has few distinct phrasings
        captions.append(captions[len(captions) % max(1, len(captions))])
    return captions


def _caption(scene: Scene, rng: np.random.Generator) -> str:
    pick = lambda options: options[rng.integers(len(options))]  # noqa: E731
    foreground = sorted((e for e in scene.events if not e.far), key=lambda e: e.onsets[0])
    clauses = [_clause(e, pick) for e in foreground]
    if len(clauses) == 1:
        event = foreground[0]
        nouns = PHRASES[event.label][0]
        if event.count == 1:
            main = pick([clauses[0], f"{pick(nouns)} can be heard", f"there is {pick(nouns)}",
                         f"the sound of {pick(nouns)}", f"you can hear {pick(nouns)}"])
        else:
            main = pick([clauses[0], f"{pick(nouns)} is heard {pick(COUNTS[min(event.count, 3)])}"])
    elif scene.mode == "sequence":
        shape = rng.integers(3)
        if shape == 0:
            main = ", then ".join(clauses)
        elif shape == 1:
            main = "first " + " and then ".join(clauses)
        else:
            main = ", ".join(clauses[:-1]) + " followed by " + _noun(foreground[-1], pick)
    else:
        shape = rng.integers(3)
        if shape == 0:
            main = clauses[0] + " while " + " and ".join(clauses[1:])
        elif shape == 1:
            main = clauses[0] + " as " + " and ".join(clauses[1:])
        else:
            main = " and ".join(_noun(e, pick) for e in foreground) + " at the same time"
    for event in (e for e in scene.events if e.far):
        where = pick(BACKGROUND)
        main = pick([f"{main} with {pick(PHRASES[event.label][0])} {where}",
                     f"{main} while {pick(PHRASES[event.label][1])} {where}"])
    return main[0].upper() + main[1:] + "."


def _clause(event: Event, pick) -> str:
    clause = pick(PHRASES[event.label][1])
    return f"{clause} {pick(COUNTS[min(event.count, 3)])}" if event.count > 1 else clause


def _noun(event: Event, pick) -> str:
    noun = pick(PHRASES[event.label][0])
    return f"{noun} {pick(COUNTS[min(event.count, 3)])}" if event.count > 1 else noun


def caption_words() -> list[str]:
    """Every word a synthesized caption can contain: the vocabulary of a model trained on them."""
    texts = [TEMPLATE_WORDS, *BACKGROUND, *(c for options in COUNTS.values() for c in options)]
    texts += [phrase for nouns, clauses in PHRASES.values() for phrase in nouns + clauses]
    return texts


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
    return [
        CaptionedFile(audio_dir / row["file_name"],
                      [row[k].strip() for k in sorted(row) if k.startswith("caption_") and row[k] and row[k].strip()])
        for row in rows
    ]


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
