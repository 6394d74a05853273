"""The vad plugin as installed: conformance, faithfulness to silero, and segments where the speech is."""

from __future__ import annotations

import json
from importlib import resources
from importlib.metadata import distribution

import numpy as np
import pytest
from click.testing import CliRunner

import edgeaudio
from edgeaudio.cli import cli
from edgeaudio.testing import conformance_tests
from edgeaudio_vad.task import FRAME, shipped_clip

TOLERANCE_S = 0.2  # how far a found segment's start and end may be from the true speech

test_vad_conforms = conformance_tests("vad", precisions=("fp32", "int8"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """The wrapper graph and default bundles go to a per-session cache, never ~/.cache."""
    monkeypatch.setenv("EDGEAUDIO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("vad") / "vad-x86-cpu"
    edgeaudio.export("vad", target="x86-cpu", precisions=["fp32"], output=out, log=lambda message: None)
    return out


@pytest.fixture(scope="module")
def clip():
    return shipped_clip()


def assert_segments_match(found, speech):
    assert len(found) == len(speech), f"found {found}, speech is at {speech}"
    for got, want in zip(found, speech):
        assert abs(got["start_s"] - want["start_s"]) <= TOLERANCE_S, (got, want)
        assert abs(got["end_s"] - want["end_s"]) <= TOLERANCE_S, (got, want)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_streamed_segments_are_where_the_speech_is(bundle, clip, backend):
    audio, speech = clip
    session = edgeaudio.load(bundle, backend=backend, precision="fp32")
    stream = session.stream()
    found = []
    for offset in range(0, audio.shape[1], 1600):  # 100 ms chunks, as `edgeaudio run` sends them
        found += [segment for result in stream.accept(audio[:, offset : offset + 1600]) for segment in result]
    found += [segment for result in stream.flush() for segment in result]
    assert_segments_match(found, speech)
    assert found == session.process(audio, 16000)


def test_probabilities_are_silero_own(bundle, clip):
    """The wrapper changes nothing: per-frame probabilities equal silero's one-frame-per-call model
    (silero_vad.onnx with its 64-sample context, as silero's OnnxWrapper feeds it)."""
    import onnxruntime as ort

    audio, _ = clip
    stock = ort.InferenceSession(
        str(distribution("silero-vad").locate_file("silero_vad/data/silero_vad.onnx")), providers=["CPUExecutionProvider"]
    )
    state, context, expected = np.zeros((2, 1, 128), np.float32), np.zeros((1, 64), np.float32), []
    for start in range(0, audio.shape[1] - FRAME + 1, FRAME):
        window = np.concatenate([context, audio[:, start : start + FRAME]], axis=1)
        prob, state = stock.run(None, {"input": window, "state": state, "sr": np.array(16000, np.int64)})
        context = window[:, -64:]
        expected.append(prob[0, 0])
    probs = edgeaudio.load(bundle, backend="onnxruntime", precision="fp32").process_raw(audio, 16000)["probs"][0]
    np.testing.assert_allclose(probs[: len(expected)], expected, atol=1e-5)


def test_run_vad_writes_segments(clip, tmp_path):
    """The task name runs its default bundle (exported for this host on first use, INT8 included)."""
    wav = resources.files("edgeaudio_vad") / "data" / "speech.wav"
    out = tmp_path / "segments.jsonl"
    result = CliRunner().invoke(cli, ["run", "vad", "--input", str(wav), "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    found = [json.loads(line) for line in out.read_text().splitlines()]
    assert_segments_match(found, clip[1])


def test_silence_has_no_segments(bundle):
    session = edgeaudio.load(bundle, backend="onnxruntime", precision="fp32")
    noise = (1e-3 * np.random.default_rng(0).standard_normal((1, 3 * 16000))).astype(np.float32)
    assert session.process(noise, 16000) == []
