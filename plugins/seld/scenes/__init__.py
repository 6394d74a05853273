"""Multichannel scene synthesis for any microphone array, with DCASE SELD metadata."""

from edgeaudio.plugins.seld.scenes.metadata import EventRow, read_csv, write_csv
from edgeaudio.plugins.seld.scenes.synth import SceneConfig, diffuse_noise, render_scene, synthesize_dataset

__all__ = ["EventRow", "SceneConfig", "diffuse_noise", "read_csv", "render_scene", "synthesize_dataset", "write_csv"]
