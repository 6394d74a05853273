"""Render the bundled demo scene: 20 s for the ReSpeaker 4-mic array from held-out recordings.

    python examples/scenes/make_scene.py            # writes respeaker-4mic-scene.wav and .csv here

The events come from the built-in event library's held-out split (recordings the shipped SELD
model never trained on), rendered in a simulated shoebox room with pyroomacoustics; the CSV is the
ground truth in DCASE format (frame, class, source, azimuth, elevation, distance in cm).
Needs the built-in library (built on first use from Debian packages; see edgeaudio.events).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import soundfile as sf

from edgeaudio.plugins.seld.task import SeldTask
from edgeaudio.plugins.seld.train import heldout_library, scene_config
from edgeaudio.profiles import get_array
from edgeaudio.scenes import render_scene, write_csv

SEED = 2026
SECONDS = 20.0
HERE = Path(__file__).parent


def main() -> None:
    task = SeldTask()
    library = heldout_library(task.classes)
    config = dataclasses.replace(scene_config(SEED), duration=SECONDS)
    array, _ = get_array("respeaker-4mic", live_devices=[])
    audio, rows = render_scene(config, library, array.positions_array(), seed=SEED)
    sf.write(HERE / "respeaker-4mic-scene.wav", audio.T, config.sample_rate, subtype="PCM_16")
    write_csv(HERE / "respeaker-4mic-scene.csv", rows)
    names = sorted({task.classes[r.class_index] for r in rows})
    print(f"{SECONDS:.0f} s, {audio.shape[0]} mics, {len(rows)} labelled frames, classes: {', '.join(names)}")


if __name__ == "__main__":
    main()
