"""Render a bundled demo scene: 20 s for a ReSpeaker array from held-out recordings.

    python examples/scenes/make_scene.py [--array respeaker-4mic|respeaker-usb]
                                         # writes <array>-scene.wav and .csv here

The events come from the built-in event library's held-out split (recordings the shipped SELD
model never trained on), rendered in a simulated shoebox room with pyroomacoustics; the CSV is the
ground truth in DCASE format (frame, class, source, azimuth, elevation, distance in cm). The
WAV's comment names the array (``edgeaudio array=<profile>``), so ``edgeaudio run seld --input``
picks the model trained for it.
Needs the built-in library (built on first use from Debian packages; see edgeaudio.events).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from edgeaudio.audio.recording_array import write_tagged
from edgeaudio.plugins.seld.task import SeldTask
from edgeaudio.plugins.seld.train import heldout_library, scene_config
from edgeaudio.profiles import get_array
from edgeaudio.plugins.seld.scenes import render_scene, write_csv

SEED = 2026
SECONDS = 20.0
HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description="Render a bundled demo scene for an array.")
    parser.add_argument("--array", default="respeaker-4mic")
    name = parser.parse_args().array
    task = SeldTask()
    library = heldout_library(task.classes)
    config = dataclasses.replace(scene_config(SEED), duration=SECONDS)
    array, _ = get_array(name, live_devices=[])
    audio, rows = render_scene(config, library, array.positions_array(), seed=SEED)
    write_tagged(HERE / f"{name}-scene.wav", audio, config.sample_rate, name)
    write_csv(HERE / f"{name}-scene.csv", rows)
    names = sorted({task.classes[r.class_index] for r in rows})
    print(f"{SECONDS:.0f} s, {audio.shape[0]} mics, {len(rows)} labelled frames, classes: {', '.join(names)}")


if __name__ == "__main__":
    main()
