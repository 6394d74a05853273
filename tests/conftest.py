"""Shared fixtures: in-process plugins (``register_plugin``; the tiny streaming task as
``tiny_plugin``), the tiny task's bundle, and a toy event library folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Archive unpacking and default bundles go to a per-session temp cache, never ~/.cache; the
    user's trust settings and task choices (a trust folder in ~/.config) do not reach the tests."""
    monkeypatch.setenv("EDGEAUDIO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("EDGEAUDIO_CONFIG", str(tmp_path_factory.getbasetemp() / "config"))
    monkeypatch.delenv("EDGEAUDIO_TRUST", raising=False)
    monkeypatch.delenv("EDGEAUDIO_TASK_PLUGINS", raising=False)


@pytest.fixture
def register_plugin():
    """The one way tests add an in-process plugin: ``register_plugin(plugin, name)`` registers a
    module or object with hook implementations (``edgeaudio.testing.registered_plugin``: a plugin
    already registered under the name, e.g. through its entry point, is used as it is) and the
    plugins it added are unregistered when the test ends, whatever its outcome."""
    from contextlib import ExitStack

    from edgeaudio.testing import registered_plugin

    with ExitStack() as stack:
        yield lambda plugin, name: stack.enter_context(registered_plugin(plugin, name))


@pytest.fixture
def tiny_plugin(register_plugin):
    """The tiny task's module, registered as plugin "tiny" for one test."""
    import tiny_task

    return register_plugin(tiny_task, "tiny")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """The tiny task exported once for x86-cpu (ORT + OpenVINO, fp32 + int8) with its archive."""
    import tiny_task

    from edgeaudio.api import export
    from edgeaudio.testing import registered_plugin

    out = tmp_path_factory.mktemp("bundles") / "tiny-x86-cpu"
    with registered_plugin(tiny_task, "tiny"):
        export("tiny", target="x86-cpu", output=out, archive=True, log=lambda message: None)
    return out


@pytest.fixture(scope="session")
def toy_event_folder(tmp_path_factory) -> Path:
    """An event library folder of three classes of synthetic tones, five recordings each (so the
    80/20 split by recording holds one of each out)."""
    import numpy as np

    sf = pytest.importorskip("soundfile")
    root = tmp_path_factory.mktemp("library")
    rng = np.random.default_rng(0)
    for label, freq in (("horn", 400), ("music", 900), ("speech", 200)):
        (root / label).mkdir()
        for rec in range(5):
            t = np.arange(int(rng.uniform(0.5, 1.5) * 16000)) / 16000
            tone = (0.3 * np.sin(2 * np.pi * freq * (rec + 1) * t)).astype(np.float32)
            sf.write(root / label / f"{label}{rec}__0.wav", tone, 16000)
    return root
