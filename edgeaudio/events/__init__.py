"""Labelled sound-event clips: the raw material tasks synthesise their training data from.

``Clip`` and ``EventLibrary`` load on first use, so reading edition facts
(``edgeaudio.events.editions``) from a model's sidecar on the run path loads no audio code.
"""

__all__ = ["Clip", "EventLibrary"]


def __getattr__(name: str):
    if name in __all__:
        from edgeaudio.events import library

        return getattr(library, name)
    raise AttributeError(f"module 'edgeaudio.events' has no attribute {name!r}")
