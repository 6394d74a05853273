"""One exception family. The CLI prints ``str(error)`` and ``error.hint`` on one line each.

Usage errors (bad flag, unknown task, wrong sample rate) exit with 2; everything that went wrong
while doing the work exits with 1.
"""

from __future__ import annotations


class EdgeAudioError(Exception):
    """Base of every error edgeaudio raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class UsageError(EdgeAudioError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2


class AudioInputError(UsageError):
    """Audio that does not fit the model: rate, channels, empty, NaN, unreadable."""


class ProfileError(UsageError):
    """A device profile YAML is invalid, or a profile name is unknown."""


class BundleError(EdgeAudioError):
    """A bundle is missing, tampered with, incompatible or unsafe."""


class BackendUnavailable(EdgeAudioError):
    """A runtime backend or export target cannot run on this host."""


class MissingExtra(BackendUnavailable):
    """An optional dependency is not installed; the hint names the pip extra."""

    def __init__(self, module: str, extra: str):
        super().__init__(
            f"this needs the Python package '{module}', which is not installed",
            hint=f'pip install "edgeaudio[{extra}]"',
        )
        self.module = module
        self.extra = extra


class ExportError(EdgeAudioError):
    """Export failed: tracing, parity or the accuracy gate."""


class DeviceLost(EdgeAudioError):
    """An audio device disappeared or errored mid-stream."""


def require(module: str, extra: str):
    """Import ``module`` lazily, turning ImportError into MissingExtra naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(module, extra) from exc
