"""Shared fixtures: the tiny streaming task registered as an in-process plugin, its bundle, and a
toy event library folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Archive unpacking and default bundles go to a per-session temp cache, never ~/.cache."""
    monkeypatch.setenv("EDGEAUDIO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def tiny_plugin():
    """Register the tiny task for one test and unregister it afterwards."""
    import tiny_task

    from edgeaudio import registry

    registry.register(tiny_task, "tiny")
    try:
        yield tiny_task
    finally:
        registry.unregister("tiny")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """The tiny task exported once for x86-cpu (ORT + OpenVINO, fp32 + int8) with its archive."""
    import tiny_task

    from edgeaudio import registry
    from edgeaudio.api import export

    registry.register(tiny_task, "tiny")
    try:
        out = tmp_path_factory.mktemp("bundles") / "tiny-x86-cpu"
        export("tiny", target="x86-cpu", output=out, archive=True, log=lambda message: None)
    finally:
        registry.unregister("tiny")
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
