"""Captions written from a composed clip's structure, and the words they use.

Each clip gets several reference captions drawn from its ``Scene`` (mixtures.py) with different
synonyms and sentence shapes, so a model cannot score by reproducing one template: it has to hear
which classes, how many times and in which order. The same sentences serve as prompts for
generating a clip.

``EVENT_KEYWORDS`` is the synonym table the event precision/recall metric reads captions with;
every word the captions use for a class is in it, and no keyword belongs to two classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgeaudio.plugins.shared.mixtures import Event, Scene


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
