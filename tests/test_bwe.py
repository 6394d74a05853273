"""The bandwidth-extension task: metrics against known values, the model's band behaviour, Stream ==
Session through the export pipeline on ONNX Runtime and OpenVINO, and tiny train -> export -> run."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeaudio.plugins.bwe import metrics
from edgeaudio.plugins.bwe.data import SAMPLE_RATE, degrade, speechlike, telephone_input

import edgeaudio

TINY = {"channels": 16, "blocks": 1, "kernel": 3, "lookahead": 2}


@pytest.fixture
def bwe_plugin():
    """The bwe task registered for one test (through its entry point when installed)."""
    import edgeaudio.plugins.bwe as plugin
    from edgeaudio.testing import registered_plugin

    with registered_plugin(plugin, "bwe"):
        yield plugin


def _band_db(audio: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)
    return float(10 * np.log10(spectrum[(freqs >= low) & (freqs < high)].sum() + 1e-20))


# -- metrics ------------------------------------------------------------------------------------
def _noise(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE))


def _scale_above(audio: np.ndarray, hz: float, gain: float) -> np.ndarray:
    spectrum = np.fft.rfft(audio)
    spectrum[np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE) >= hz] *= gain
    return np.fft.irfft(spectrum, len(audio))


def test_lsd_is_zero_for_the_same_signal_at_any_level():
    x = _noise()
    assert metrics.lsd(x, x) == pytest.approx(0, abs=1e-9)
    assert metrics.lsd(x, 3.0 * x) == pytest.approx(0, abs=1e-9)  # level matched first
    assert metrics.lsd_extended(x, 0.01 * x) == pytest.approx(0, abs=1e-9)


def test_lsd_known_values_for_a_20_db_high_band_loss():
    """Power 100x lower above 4 kHz: log10 differs by 2 there and 0 below, so the extended-band LSD
    is 2 and the full-band one sqrt(2^2 x the share of bins above 4 kHz) = sqrt(2) at 16 kHz."""
    x = _noise()
    y = _scale_above(x, 4000, 0.1)
    assert metrics.lsd_extended(x, y) == pytest.approx(2.0, abs=0.03)
    assert metrics.lsd(x, y) == pytest.approx(np.sqrt(4 * 513 / 1025), abs=0.03)


def test_si_sdr_known_value_and_scale_invariance():
    x = _noise(seed=1)
    e = _noise(seed=2)
    e -= x * np.dot(e, x) / np.dot(x, x)  # orthogonal to x
    e *= np.sqrt(np.sum(x**2) / np.sum(e**2) / 100)  # exactly 20 dB below
    assert metrics.si_sdr(x, x + e) == pytest.approx(20.0, abs=1e-6)
    assert metrics.si_sdr(x, 0.3 * (x + e)) == pytest.approx(20.0, abs=1e-6)
    assert metrics.si_sdr(x, x) == 100.0


def test_pesq_wb_of_identical_speech_is_near_the_top():
    pytest.importorskip("pesq")
    x = speechlike(0, 3.0)
    assert metrics.pesq_wb(x, x) > 4.5
    assert metrics.pesq_wb(x, telephone_input(x)) < metrics.pesq_wb(x, x)


def test_degradations_remove_the_high_band_and_keep_alignment():
    wide = speechlike(1, 2.0)
    reference = telephone_input(wide)
    rng = np.random.default_rng(0)
    for _ in range(12):
        narrow = degrade(wide, rng)
        assert narrow.shape == wide.shape
        assert _band_db(narrow, 4600, 8000) < _band_db(wide, 4600, 8000) - 25
        lags = [float(np.dot(reference[50:-50], np.roll(narrow, lag)[50:-50])) for lag in range(-20, 21)]
        assert int(np.argmax(lags)) == 20  # best aligned without any shift


# -- the model ------------------------------------------------------------------------------------
def test_model_is_compact_with_bounded_lookahead(bwe_plugin):
    from edgeaudio.tasks import get_task

    task = get_task("bwe")
    model = task.build_model()
    assert sum(p.numel() for p in model.parameters()) <= 2_000_000
    assert model.latency == task.latency and task.latency / task.sample_rate <= 0.040


def test_untrained_model_passes_the_input_through_delayed(bwe_plugin):
    """Analysis + synthesis reconstruct exactly; with nothing added the output is the input, late."""
    from edgeaudio.tasks import get_task

    model = get_task("bwe").build_model().eval()
    torch.nn.init.constant_(model.amp_head.bias, -20.0)
    x = torch.from_numpy(speechlike(2, 1.0))[None, None]
    with torch.no_grad():
        y = model.offline(x)[0]
    np.testing.assert_allclose(y[0, 0, model.latency :], x[0, 0, : -model.latency], atol=1e-5)


def test_shipped_model_extends_the_band_and_keeps_the_original_band(bwe_plugin):
    """On held-out-style input the 4-8 kHz band gains at least 20 dB, while 300-3400 Hz stays
    within 1 dB of the input and its waveform there is kept (band-limited SI-SDR above 20 dB)."""
    from scipy import signal

    from edgeaudio.tasks import get_task

    task = get_task("bwe")
    if task.default_checkpoint() is None:
        pytest.skip("no shipped bwe weights for this configuration")
    model = task.load_model()
    from edgeaudio.plugins.bwe.train import enhance

    narrow = telephone_input(speechlike(3, 4.0))
    wide = enhance(model, narrow)
    assert _band_db(wide, 4000, 8000) > _band_db(narrow, 4000, 8000) + 20
    assert abs(_band_db(wide, 300, 3400) - _band_db(narrow, 300, 3400)) < 1.0
    band = signal.butter(8, (300, 3400), "bandpass", fs=SAMPLE_RATE, output="sos")
    assert metrics.si_sdr(signal.sosfiltfilt(band, narrow), signal.sosfiltfilt(band, wide)) > 20


# -- the exported graph ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bwe_bundle(tmp_path_factory):
    """A tiny bwe model exported at fp32 for ONNX Runtime and OpenVINO (random weights: the maths
    of state and alignment do not depend on training)."""
    import edgeaudio.plugins.bwe as plugin

    from edgeaudio.api import export
    from edgeaudio.tasks import get_task
    from edgeaudio.testing import registered_plugin
    from edgeaudio.training.loop import save_weights

    with registered_plugin(plugin, "bwe"):
        root = tmp_path_factory.mktemp("bwe")
        task = get_task("bwe", TINY)
        model = task.build_model()
        torch.nn.init.normal_(model.amp_head.weight, std=0.1)  # make the added band non-trivial
        save_weights(model, root / "tiny.safetensors")
        export("bwe", target="x86-cpu", precisions=["fp32"], checkpoint=str(root / "tiny.safetensors"),
               output=root / "bundle", config=TINY, log=lambda message: None)
    return root / "bundle"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("chunk", [1, 37, 160, 1000])
def test_stream_equals_session(bwe_plugin, bwe_bundle, backend, chunk):
    session = edgeaudio.load(bwe_bundle, backend=backend, precision="fp32")
    task = session.task
    clip = telephone_input(speechlike(4, 1.3))[None, :-7]  # not a whole number of blocks
    offline = session.process_raw(clip, SAMPLE_RATE)["wideband"]
    assert offline.shape == (1, 1, clip.shape[1] + task.latency)
    stream = session.stream(keep_outputs=True)
    results = []
    for offset in range(0, clip.shape[1], chunk):
        results.extend(stream.accept(clip[:, offset : offset + chunk]))
    results.extend(stream.flush())  # feeds the look-ahead's worth of silence itself
    streamed = stream.outputs()["wideband"]
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, atol=1e-5)
    aligned = task.results_to_audio(session.process(clip, SAMPLE_RATE))
    assert aligned.shape == clip.shape
    np.testing.assert_allclose(task.results_to_audio(results), aligned, atol=1e-5)
    assert next(r["start_sample"] for r in results if r["audio"].shape[1]) == 0


def test_sessions_agree_across_backends(bwe_plugin, bwe_bundle):
    clip = telephone_input(speechlike(5, 1.0))
    outputs = [edgeaudio.load(bwe_bundle, backend=b, precision="fp32").process_raw(clip, SAMPLE_RATE)["wideband"]
               for b in ("torch", "onnxruntime", "openvino")]
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5)
    np.testing.assert_allclose(outputs[2], outputs[0], atol=1e-5)


# -- train -> export -> run --------------------------------------------------------------------
def _tiny_corpus(root):
    """Two training voices (20 clips each, so every voice gives one validation clip) and a
    held-out one, of synthetic speech-like audio, in the corpus layout."""
    import soundfile as sf

    clips = []
    for voice, count in (("a", 20), ("b", 20), ("held", 2)):
        for i in range(count):
            path = root / voice / f"{i}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), speechlike(100 * len(clips) + i, 3.2), SAMPLE_RATE, subtype="PCM_16")
            clips.append({"file": f"{voice}/{i}.flac", "voice": voice, "package": "test", "version": "0",
                          "licence": "test", "source": "speechlike", "seconds": 3.2})
    (root / "SOURCES.json").write_text(json.dumps({"heldout_voices": ["held"], "dropped": {}, "clips": clips}))
    return root


@pytest.mark.slow
def test_tiny_train_export_run(bwe_plugin, tmp_path):
    from click.testing import CliRunner

    from edgeaudio.api import export
    from edgeaudio.audio.files import read_audio, write_audio
    from edgeaudio.cli import cli
    from edgeaudio.plugins.bwe.task import BweTrainOptions
    from edgeaudio.tasks import get_task

    corpus = _tiny_corpus(tmp_path / "corpus")
    options = BweTrainOptions(epochs=1, items=8, batch_size=4, corpus=str(corpus), progress=False)
    result = get_task("bwe", TINY).train(str(tmp_path / "run"), options)
    sidecar = json.loads((tmp_path / "run" / "weights.json").read_text())
    assert sidecar["details"]["heldout"]["voices"] == ["held"] and result["metrics"] == sidecar["metrics"]
    assert result["metrics"]["lsd"] > 0 and result["metrics"]["upsampling_lsd"] > 0  # bwe prints a metric now
    assert sidecar["data"]["clips"]["val"] == {"a": 1, "b": 1}
    gain = sidecar["details"]["extension_gain_choice"]["chosen_db"]
    assert sidecar["config"]["extension_gain_db"] == gain  # the run's own level, not the shipped sidecar's
    export("bwe", target="x86-cpu", precisions=["fp32"], backends=["onnxruntime"],
           checkpoint=str(tmp_path / "run"), output=tmp_path / "bundle", log=lambda message: None)
    assert json.loads((tmp_path / "bundle" / "manifest.json").read_text())["provenance"]["config"]["extension_gain_db"] == gain
    call = tmp_path / "call.wav"
    write_audio(call, speechlike(9, 1.5)[None, ::2], 8000)  # an 8 kHz recording
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "bundle"), "--input", str(call),
                                      "--output", str(tmp_path / "wide.wav"), "--offline"])
    assert result.exit_code == 0, result.output
    wide, rate, _ = read_audio(tmp_path / "wide.wav")
    assert rate == SAMPLE_RATE and wide.shape == (1, 24000)
