"""Shared fixtures: the tiny streaming task registered as an in-process plugin, and its bundle."""

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
