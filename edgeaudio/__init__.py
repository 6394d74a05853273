"""edgeaudio: audio AI models from training to real-time use on edge hardware.

    import edgeaudio
    session = edgeaudio.load("bundles/seld-x86-cpu")          # picks a backend and says why
    results = session.process(audio, sample_rate=24000)       # whole clip
    stream = session.stream(); stream.accept(chunk)           # live, stateful

Heavy and vendor imports happen on first use, so ``import edgeaudio`` stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "load": ("edgeaudio.runtime", "load"),
    "Session": ("edgeaudio.runtime", "Session"),
    "Stream": ("edgeaudio.runtime", "Stream"),
    "export": ("edgeaudio.api", "export"),
    "bench": ("edgeaudio.api", "bench"),
    "evaluate": ("edgeaudio.api", "evaluate"),
    "Task": ("edgeaudio.task", "Task"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'edgeaudio' has no attribute {name!r}")
