"""The device flow: a bundle exported on the workstation for a board, loaded on a host that lacks
the board's backend. Where TensorRT is missing the bundle's ONNX Runtime graphs run and the reason
says why; a bundle with only another target's backend is refused, naming what to install (the
extra, or JetPack) and the export for this host. (The whole flow in separate venvs, the board
emulated, is in .ci/run.)"""

from __future__ import annotations

import re
import sys

import pytest

import edgeaudio
from edgeaudio import profiles
from edgeaudio.backends.base import backends
from edgeaudio.errors import BackendUnavailable

QUIET = {"log": lambda message: None}


@pytest.fixture
def jetson_host(monkeypatch):
    """This process believes it runs on a Jetson Orin Nano (what profiles.host_target reports there)."""
    monkeypatch.setattr(profiles, "this_host", lambda: (profiles.get_target("jetson-orin-nano")[0], "host is a Jetson (test)"))


def test_on_a_jetson_without_tensorrt_the_onnx_runtime_graphs_run_and_say_why(tiny_plugin, jetson_host, tmp_path):
    available, why = backends()["tensorrt"].available()
    if available:
        pytest.skip(f"TensorRT runs here ({why}): this checks the host without it")
    edgeaudio.export("tiny", target="jetson", output=tmp_path / "bundle", archive=True, **QUIET)
    session = edgeaudio.load(tmp_path / "bundle.eab")
    assert session.backend == "onnxruntime"
    assert session.reason.startswith("onnxruntime/") and "host profile jetson-orin-nano" in session.reason
    assert f"skipped tensorrt: {why}" in session.reason and "JetPack" in session.reason


def test_a_bundle_with_only_another_targets_backend_names_what_to_install(tiny_plugin, tmp_path, monkeypatch):
    edgeaudio.export("tiny", target="jetson", backends=["tensorrt"], precisions=["fp32"], output=tmp_path / "trt", **QUIET)
    edgeaudio.export("tiny", target="x86-cpu", backends=["openvino"], precisions=["fp32"], output=tmp_path / "ov", **QUIET)
    host = profiles.this_host()[0].name
    monkeypatch.setitem(sys.modules, "torch", None)  # from here on an install without torch, as on a board
    with pytest.raises(BackendUnavailable) as trt:
        edgeaudio.load(tmp_path / "trt")
    message = str(trt.value)
    assert "exported for jetson-orin-nano with tensorrt, torch artifacts only" in message
    if not backends()["tensorrt"].available()[0]:
        assert "JetPack" in message and "edgeaudio[tensorrt]" in message
    assert 'torch is not installed (pip install "edgeaudio[export]")' in message
    assert trt.value.hint.endswith(f"edgeaudio export tiny --target {host}")
    if not backends()["openvino"].available()[0]:
        with pytest.raises(BackendUnavailable, match=re.escape('pip install "edgeaudio[openvino]"')):
            edgeaudio.load(tmp_path / "ov")
