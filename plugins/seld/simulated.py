"""``--input sim:seed=3,seconds=20``: a simulated array scene played out like a live device.

This plugin owns scene synthesis (the SELD training-data recipe), so it brings the source that
uses it; the core's ``open_source`` finds it through the ``register_sources`` hook.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from edgeaudio.errors import UsageError, require
from edgeaudio.live.sources import Chunk, Source, SourceKind, SourceRequest

if TYPE_CHECKING:
    from edgeaudio.events import EventLibrary
    from edgeaudio.profiles import ArrayProfile

SIM_KEYS = {"seed": int, "seconds": float, "library": str}


class SimulatedArraySource(Source):
    """A synthetic scene for the array's geometry, played out like a live device.

    ``spec`` is ``seed=3,seconds=20[,library=PATH]`` (a leading ``sim:`` is allowed). The scene
    is rendered once, directly at the model's rate, by the scene synthesizer the training data
    comes from, so the model hears what it was trained on and ``ground_truth`` (DCASE rows: frame,
    class, source, azimuth, elevation, distance; ``classes`` names the class indices) says what it
    should find. ``classes`` (a model's class names) restricts the events to those, in that order.
    With ``realtime`` each chunk is released when a device would have captured it.
    """

    def __init__(
        self,
        spec: str,
        profile: ArrayProfile,
        model_rate: int,
        chunk_ms: float = 100.0,
        realtime: bool = True,
        classes: list[str] | None = None,
    ):
        from edgeaudio.plugins.seld.scenes import SceneConfig, render_scene

        settings = parse_sim_spec(spec)
        seconds, seed = settings.get("seconds", 10.0), settings.get("seed", 0)
        super().__init__(model_rate, profile.num_mics, f"simulated {profile.name}, seed {seed}, {seconds:g} s")
        self.realtime = realtime
        config = SceneConfig(duration=seconds, sample_rate=model_rate, seed=seed)
        with _event_library(settings.get("library"), model_rate, classes, self.notes) as library:
            self._audio, self.ground_truth = render_scene(config, library, profile.positions_array(), seed)
            self.classes = list(library.classes)
        self.frame_hop = config.frame_hop
        self._chunk = max(1, round(model_rate * chunk_ms / 1000))

    def _chunks(self) -> Iterator[Chunk]:
        start = time.monotonic()
        for offset in range(0, self._audio.shape[1], self._chunk):
            chunk = self._audio[:, offset : offset + self._chunk]
            due = start + (offset + chunk.shape[1]) / self.sample_rate
            if self.realtime:
                time.sleep(max(0.0, due - time.monotonic()))
            yield chunk, due if self.realtime else time.monotonic()


def parse_sim_spec(spec: str) -> dict:
    """``sim:seed=3,seconds=20`` -> {"seed": 3, "seconds": 20.0}; unknown keys are usage errors."""
    body = spec[len("sim:") :] if spec.startswith("sim:") else spec
    settings = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, _, value = (text.strip() for text in part.partition("="))
        if key not in SIM_KEYS:
            hint = f"known keys: {', '.join(SIM_KEYS)}"
            raise UsageError(f"unknown key '{key}' in simulated input '{spec}'", hint=hint)
        try:
            settings[key] = SIM_KEYS[key](value)
        except ValueError:
            raise UsageError(
                f"cannot read '{part}' in simulated input '{spec}'",
                hint="write sim:seed=N,seconds=S[,library=PATH]",
            ) from None
    if settings.get("seconds", 1.0) <= 0:
        raise UsageError(f"simulated input '{spec}' needs seconds > 0")
    return settings


@contextmanager
def _event_library(
    folder: str | None, rate: int, classes: list[str] | None, notes: list[str]
) -> Iterator[EventLibrary]:
    """The event library a scene draws from: the folder given, else the latest edition of the
    built-in recorded one that has been built (``edgeaudio train`` builds it into the cache), else
    procedural sounds.

    Procedural clips are written to a temporary folder that lives only while the scene renders; a
    note says so, since a model trained on recorded events hears them as unfamiliar sounds.
    """
    from edgeaudio.events import EventLibrary
    from edgeaudio.events.build_library import EDITIONS, builtin_dir, is_built

    builtin = next((d for d in map(builtin_dir, sorted(EDITIONS, reverse=True)) if is_built(d)), None)
    if folder or builtin:
        if not folder:
            notes.append(f"scene events come from the built-in event library in {builtin}")
        yield _restricted(EventLibrary.from_folder(folder or builtin, sample_rate=rate), classes, notes)
        return
    with tempfile.TemporaryDirectory(prefix="edgeaudio-sim-") as temp:
        _write_procedural_library(Path(temp), rate)
        library = EventLibrary.from_folder(temp, sample_rate=rate)
        notes.append(
            f"no event library given (sim:library=PATH) or built; the scene uses procedural sounds "
            f"({', '.join(library.classes)}), not recorded ones"
        )
        yield library


def _restricted(library: EventLibrary, classes: list[str] | None, notes: list[str]) -> EventLibrary:
    """Only the model's classes, in its order, so ground-truth class indices are its output indices."""
    from edgeaudio.events import EventLibrary

    if not classes:
        return library
    missing = [c for c in classes if c not in library.classes]
    if missing:
        notes.append(f"the event library has no {', '.join(missing)}; the scene draws from all its classes")
        return library
    clips = [clip for label in classes for clip in library.clips(label)]
    return EventLibrary(library.root, library.sample_rate, classes, clips)


def _write_procedural_library(root: Path, rate: int, clips_per_class: int = 3) -> None:
    """Four classes of synthetic events that differ in spectrum and envelope, a few clips each."""
    sf = require("soundfile")
    rng = np.random.default_rng(0)
    makers: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
        "chirp": lambda t, k: np.sin(2 * np.pi * (300 + 1500 * k) * t * (1 + t)),
        "clicks": lambda t, k: (np.sin(2 * np.pi * (6 + 3 * k) * t) > 0.98).astype(float),
        "noise": lambda t, k: rng.standard_normal(t.size) * np.exp(-t * (2 + k)),
        "tone": lambda t, k: sum(np.sin(2 * np.pi * (220 * (k + 1)) * h * t) / h for h in (1, 2, 3)) * np.exp(-3 * t),
    }
    for label, make in makers.items():
        (root / label).mkdir()
        for k in range(clips_per_class):
            t = np.arange(round(rate * (0.5 + 0.25 * k))) / rate
            clip = make(t, k)
            sf.write(str(root / label / f"{label}{k}.wav"), 0.5 * clip / max(np.max(np.abs(clip)), 1e-9), rate)


def open_simulated(request: SourceRequest) -> SimulatedArraySource:
    return SimulatedArraySource(request.spec, request.array, request.sample_rate, request.chunk_ms, request.realtime,
                                list(request.classes) or None)


SIMULATED = SourceKind("sim", "sim:seed=N,seconds=S[,library=PATH]: a simulated scene for the array, played in real time",
                       open_simulated)
