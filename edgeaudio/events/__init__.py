"""Labelled sound-event clips: the raw material for scene synthesis, captioning and TTA data."""

from edgeaudio.events.library import Clip, EventLibrary

__all__ = ["Clip", "EventLibrary"]
