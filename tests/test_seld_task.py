"""The SELD task plugin: in-graph features, streaming parity through export, ADPIT, decode, training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

import edgeaudio  # noqa: E402
from edgeaudio.profiles import get_array  # noqa: E402
from edgeaudio.plugins.seld.scenes.metadata import EventRow  # noqa: E402

TINY = {
    "classes": ["noise", "tone"],
    "n_mels": 16,
    "conv_channels": [4, 8, 8],
    "freq_pools": [2, 2, 2],
    "gru_hidden": 16,
    "gru_layers": 1,
}
BLOCK = 1600


@pytest.fixture(scope="module")
def seld_plugin():
    """The plugin as the entry point loads it; registered here when this install predates it."""
    import edgeaudio.plugins.seld as plugin
    from edgeaudio.testing import registered_plugin

    with registered_plugin(plugin, "seld"):
        yield plugin


@pytest.fixture(scope="module")
def tiny_task(seld_plugin):
    from edgeaudio.tasks import get_task

    return get_task("seld", TINY)


def _noise(seed: int, blocks: int, channels: int = 4) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((channels, blocks * BLOCK))).astype(np.float32)


def test_default_model_is_small_and_fits_the_array(seld_plugin):
    from edgeaudio.plugins.seld.task import SeldTask

    task = SeldTask()
    model = task.build_model()
    assert sum(p.numel() for p in model.parameters()) <= 1_000_000
    assert task.channels == get_array("respeaker-4mic", live_devices=[])[0].num_mics == 4
    assert SeldTask({"array": "respeaker-6mic"}).channels == 6


def test_shipped_classes_are_the_builtin_librarys():
    """The run path reads the default class list from the shipped sidecar, not from the library
    builder; the two must stay the same list."""
    from edgeaudio.plugins.seld.task import shipped_classes
    from edgeaudio.plugins.seld.train import builtin_classes

    assert shipped_classes() == builtin_classes()


def test_shipped_weights_only_serve_the_config_they_were_trained_with(seld_plugin, tiny_task):
    from edgeaudio.plugins.seld.task import SeldTask

    assert tiny_task.default_checkpoint() is None
    shipped = SeldTask().default_checkpoint()
    if shipped is None:
        pytest.skip("no shipped weights for respeaker-4mic in plugins/seld/weights")
    sidecar = json.loads(Path(shipped).with_suffix(".json").read_text())
    assert {"command", "seed", "data", "metrics", "classes", "config"} <= set(sidecar)
    assert Path(shipped).stat().st_size < 10e6
    SeldTask().load_model()  # strict: every tensor present with its shape


def test_phase_features_point_at_the_source(tiny_task):
    """A plane wave from the left (+y): each mic's feature is its offset from mic 0 along +y,
    divided by the largest offset, whatever the array (here ReSpeaker 4-mic: +0.5, 0, -0.5)."""
    from edgeaudio.plugins.seld.model import SPEED_OF_SOUND, Frontend

    positions = np.asarray(get_array("respeaker-4mic", live_devices=[])[0].positions)
    frontend = Frontend(positions, 16000, n_fft=512, hop=320, n_mels=64)
    n = 16000
    spectrum = np.fft.rfft(np.random.default_rng(0).standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / 16000)
    advance = positions @ np.array([0.0, 1.0, 0.0]) / SPEED_OF_SOUND
    audio = np.stack([np.fft.irfft(spectrum * np.exp(2j * np.pi * freqs * t), n) for t in advance]).astype(np.float32)
    features, _ = frontend(torch.from_numpy(audio[None]), torch.zeros(1, 4, frontend.tail))
    bands = frontend.phase_pool.abs().sum(dim=0) > 0
    measured = features[0, 4:, 5:, bands].mean(dim=(1, 2)).numpy()
    reach = np.linalg.norm(positions - positions[0], axis=1).max()
    expected = (positions[1:] - positions[0]) @ np.array([0.0, 1.0, 0.0]) / reach
    np.testing.assert_allclose(measured, expected, atol=0.05)


def test_stream_of_blocks_equals_one_offline_call_in_torch(tiny_task):
    model = tiny_task.build_model().eval()
    audio = torch.from_numpy(_noise(1, 9)[None])
    with torch.no_grad():
        offline = model.offline(audio)
        state, parts = model.initial_state(1), []
        for start, stop in [(0, 1), (1, 4), (4, 5), (5, 9)]:
            out, *state = model(audio[:, :, start * BLOCK : stop * BLOCK], *state)
            parts.append(out)
    assert offline.shape == (1, 9, 3 * 3 * 2)
    assert torch.max(torch.abs(torch.cat(parts, dim=1) - offline)) < 1e-5


@pytest.fixture(scope="module")
def tiny_bundle(tiny_task, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seld-bundle") / "seld-x86-cpu"
    edgeaudio.export("seld", target="x86-cpu", precisions=["fp32"], config=TINY, output=out, log=lambda m: None)
    return out


def test_export_checks_onnx_and_every_backend_against_torch(tiny_bundle):
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["audio"] == {
        "sample_rate": 16000,
        "channels": 4,
        "array": {"name": "respeaker-4mic", "positions": [list(p) for p in get_array("respeaker-4mic", live_devices=[])[0].positions]},
    }
    parity = manifest["reports"]["parity"]["seld"]
    for name in ("onnx/fp32", "onnxruntime/fp32", "openvino/fp32"):
        assert all(report["ok"] for report in parity[name].values()), name


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch"])
def test_stream_equals_session_on_every_backend(tiny_bundle, backend):
    session = edgeaudio.load(tiny_bundle, backend=backend, precision="fp32")
    audio = _noise(2, 12)[:, :-777]
    offline = session.process_raw(audio, 16000)["accdoa"]
    stream = session.stream(keep_outputs=True)
    results = []
    for offset in range(0, audio.shape[1], 2345):
        results.extend(stream.accept(audio[:, offset : offset + 2345]))
    results.extend(stream.flush())
    streamed = stream.outputs()["accdoa"]
    assert streamed.shape == offline.shape == (1, 12, 18)
    assert np.max(np.abs(streamed - offline)) < 1e-5
    assert [frame["frame"] for result in results for frame in result] == list(range(12))


def test_decode_gives_named_events_with_directions(tiny_task):
    accdoa = np.zeros((1, 3, 3 * 3 * 2), np.float32)
    tone, classes = 1, 2
    direction = 0.9 * np.array([np.cos(np.radians(30)), np.sin(np.radians(30)), 0.0])
    for axis in range(3):  # track 0 and a duplicate on track 2, which decoding merges
        accdoa[0, 1, 0 * 3 * classes + axis * classes + tone] = direction[axis]
        accdoa[0, 1, 2 * 3 * classes + axis * classes + tone] = direction[axis]
    frames = tiny_task.decode({"accdoa": accdoa}, start_frame=10)
    assert [f["frame"] for f in frames] == [10, 11, 12]
    assert [f["time_s"] for f in frames] == [1.0, 1.1, 1.2]
    assert frames[0]["events"] == [] and frames[2]["events"] == []
    assert frames[1]["events"] == [{"class": "tone", "azimuth": 30.0, "elevation": 0.0, "confidence": 0.9, "track": 0}]
    json.dumps(frames)


def test_decoded_confidence_is_the_float32_norm_even_at_rounding_boundaries(tiny_task):
    """Decoding rounds the double length it has unless that lies near a boundary of the three
    decimals; either way the confidence is what rounding the vector's float32 norm gives."""
    rng = np.random.default_rng(5)
    classes, frames = len(tiny_task.classes), 600
    accdoa = np.zeros((1, frames, 3 * 3 * classes), np.float32)
    # lengths on a boundary k/1000 + 0.0005 give or take up to 2e-6, others anywhere, some past 1
    boundary = (rng.integers(500, 1000, frames) + 0.5) / 1000 + rng.choice([0, 1e-7, -1e-7, 4e-7, -4e-7, 2e-6], frames)
    lengths = np.where(rng.random(frames) < 0.7, boundary, rng.uniform(0.51, 1.3, frames))
    directions = rng.standard_normal((frames, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    for axis in range(3):
        accdoa[0, :, axis * classes] = directions[:, axis] * lengths  # track 0, class 0
    expected = [round(min(1.0, float(np.linalg.norm(accdoa[0, i, 0 : 3 * classes : classes]))), 3) for i in range(frames)]
    near = sum(abs(float(np.linalg.norm(accdoa[0, i, 0 : 3 * classes : classes])) * 1000 % 1 - 0.5) < 1e-3 for i in range(frames))
    assert near > frames // 4  # the test reaches the exact norm often, and the shortcut as often
    whole = tiny_task.decode({"accdoa": accdoa})
    decode = tiny_task.decoder()
    streamed = [frame for i in range(frames) for frame in decode({"accdoa": accdoa[:, i : i + 1]}, start_frame=i)]
    for frames_out in (whole, streamed):
        assert [frame["events"][0]["confidence"] for frame in frames_out] == expected


def test_frames_without_events_leave_track_ids_as_they_were(tiny_task):
    """Decoding skips the tracker on silent frames: a source back within the gap keeps its id,
    one back after it gets a new one, as when the tracker saw every frame."""
    from edgeaudio.plugins.seld.tracking import MAX_GAP_FRAMES

    classes = len(tiny_task.classes)
    accdoa = np.zeros((1, 20, 3 * 3 * classes), np.float32)
    for frame in (0, 1, 1 + MAX_GAP_FRAMES, 2 + 2 * MAX_GAP_FRAMES):  # silent for the gap, then for one more
        accdoa[0, frame, 0] = 0.9  # class 0 on track 0, straight ahead
    ids = [event["track"] for frame in tiny_task.decode({"accdoa": accdoa}) for event in frame["events"]]
    assert ids == [0, 0, 0, 1]


def test_adpit_accepts_any_track_order_of_same_class_sources():
    from edgeaudio.plugins.seld.data import adpit_loss, adpit_targets, unit_vectors

    rows = [EventRow(0, 1, 0, 90, 0), EventRow(0, 1, 1, -90, 0), EventRow(0, 0, 2, 0, 20)]
    target = torch.from_numpy(adpit_targets(rows, 1, 2))[None]
    left, right, front = (torch.from_numpy(unit_vectors(az, el)).float() for az, el in [(90, 0), (-90, 0), (0, 20)])
    output = torch.zeros(1, 1, 3, 3, 2)
    output[0, 0, :, :, 0] = front  # one source: every track carries it
    for track, vector in enumerate([right, left, right]):  # two sources: any split over the tracks
        output[0, 0, track, :, 1] = vector
    assert adpit_loss(output.reshape(1, 1, -1), target) < 1e-12
    output[0, 0, 1, :, 1] = right  # both sources' tracks pointing right: the left one is missed
    assert adpit_loss(output.reshape(1, 1, -1), target) > 0.01


def test_square_array_augmentation_rotates_audio_and_labels_together():
    from edgeaudio.plugins.seld.data import array_symmetries

    positions = np.asarray(get_array("respeaker-4mic", live_devices=[])[0].positions)
    symmetries = array_symmetries(positions)
    assert len(symmetries) == 8  # the square's rotations and mirror images
    for permutation, matrix in symmetries:
        np.testing.assert_allclose(positions @ matrix.T, positions[permutation], atol=1e-9)
        assert matrix[2, 2] == 1.0  # never flips up and down


def _procedural_library(root: Path) -> Path:
    """Two classes of short clips, two recordings each, so the split by recording has a test half."""
    rng = np.random.default_rng(0)
    for rec in range(2):
        for part in range(3):
            n = int(rng.uniform(0.5, 1.5) * 16000)
            burst = 0.3 * rng.standard_normal(n)
            tone = 0.3 * np.sin(2 * np.pi * (400 + 300 * rec + 50 * part) * np.arange(n) / 16000)
            for label, clip in (("noise", burst), ("tone", tone)):
                path = root / label / f"rec{rec}__{part}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(path), clip.astype(np.float32), 16000)
    return root


@pytest.mark.slow
def test_one_epoch_of_training_writes_the_run_and_resumes(tiny_task, tmp_path, capsys):
    from edgeaudio.plugins.seld.task import SeldTrainOptions

    library = _procedural_library(tmp_path / "library")
    options = SeldTrainOptions(hours=20 / 3600, test_scenes=2, epochs=1, batch_size=2, library=str(library), workers=1,
                               progress=False)
    run = tmp_path / "run"
    result = tiny_task.train(str(run), options)
    assert result["weights"] == str(run / "weights.safetensors") and result["epochs"] == {"model": 1}
    sidecar = json.loads((run / "weights.json").read_text())
    assert sidecar["metrics"] == result["metrics"] and {"ER20", "F20", "LE", "LR", "SELD", "F20_frame"} <= set(result["metrics"])
    assert sidecar["config"]["classes"] == ["noise", "tone"] and sidecar["config"]["array"] == "respeaker-4mic"
    assert sidecar["command"].startswith(f"edgeaudio train seld -o {run} ") and "--epochs 1" in sidecar["command"]
    assert sidecar["data"]["train_scenes"] == 2 and sidecar["data"]["test_scenes"] == 2
    assert len(sidecar["training"]["model"]["history"]) == 1
    capsys.readouterr()
    again = tiny_task.train(str(run), options)  # resumes: nothing left to do
    assert again["metrics"] == result["metrics"] and "all 1 epochs are done" in capsys.readouterr().err
    for checkpoint in (run, run / "checkpoints" / "best.safetensors"):  # trainer state never serves as a config
        exported = _run_cli("export", "seld", "--checkpoint", checkpoint, "--precision", "fp32", "--backend", "onnxruntime",
                            "-o", tmp_path / "bundle")  # the sidecar's config (tiny sizes, two classes) comes along
        assert exported.exit_code == 0, exported.stderr
        manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
        assert manifest["provenance"]["config"]["classes"] == ["noise", "tone"]
        clip = tmp_path / "clip.wav"
        sf.write(str(clip), _noise(6, 10).T, 16000)
        ran = _run_cli("run", tmp_path / "bundle", "-i", clip, "--backend", "onnxruntime")
        assert ran.exit_code == 0 and len(_events(ran)) == 10  # train -> export -> run
        shutil.rmtree(tmp_path / "bundle")
    other = _run_cli("export", "seld", "--checkpoint", run, "--device", "respeaker-usb", "-o", tmp_path / "usb")
    assert other.exit_code == 2 and "was trained for the respeaker-4mic array, not respeaker-usb" in other.stderr
    rerun = _run_cli("train", "seld", "-o", tmp_path / "again", "--data-dir", run, "--epochs", "0")
    assert rerun.exit_code == 2 and not (tmp_path / "again").exists()  # refused before any data is read
    reused = tiny_task.train(str(tmp_path / "again"), SeldTrainOptions(data_dir=str(run), epochs=1, batch_size=2, progress=False))
    data = json.loads(Path(reused["sidecar"]).read_text())["data"]  # the folder `train` wrote: its scenes, its test split
    assert (data["array"], data["train_recordings"], data["test_recordings"]) == ("respeaker-4mic", 2, 2)


def test_training_spectrum_equals_the_graphs_conv_dft():
    """Training computes the STFT with torch.stft, the exported graph with a conv-DFT: same features."""
    from edgeaudio.plugins.seld.model import Frontend

    positions = get_array("respeaker-4mic", live_devices=[])[0].positions
    frontend = Frontend(positions, 16000, n_fft=512, hop=320, n_mels=64)
    audio, tail = torch.from_numpy(_noise(3, 4)[None]), torch.from_numpy(_noise(4, 1)[None, :, :192])
    trained, trained_tail = frontend.train()(audio, tail)
    graph, graph_tail = frontend.eval()(audio, tail)
    assert trained.shape == graph.shape == (1, 7, 20, 64)
    assert torch.max(torch.abs(trained - graph)) < 1e-3 and torch.equal(trained_tail, graph_tail)


def _single_source_scene(tmp_path: Path, azimuth: float, elevation: float):
    """One static broadband source, ReSpeaker 4-mic geometry, 16 kHz, a dead room and no noise."""
    from edgeaudio.events import EventLibrary
    from edgeaudio.plugins.seld.scenes import SceneConfig, render_scene

    library = EventLibrary.from_folder(_procedural_library(tmp_path / "library"), sample_rate=16000)
    library = EventLibrary(library.root, 16000, ["noise"], library.clips("noise"))
    config = SceneConfig(
        duration=3.0, sample_rate=16000, room_size_min=(8.0, 8.0, 3.5), room_size_max=(10.0, 10.0, 4.0),
        rt60_range=(0.2, 0.2), distance_range=(1.5, 1.5), azimuth_range=(azimuth, azimuth),
        elevation_range=(elevation, elevation), max_polyphony=1, gap_range=(0.0, 0.3),
        moving_probability=0.0, snr_range=None,
    )
    positions = np.asarray(get_array("respeaker-4mic", live_devices=[])[0].positions)
    audio, rows = render_scene(config, library, positions, seed=1)
    return audio, rows, positions


def test_targets_augmentation_and_features_of_a_rendered_source_agree(tmp_path):
    """The whole chain a localization bug could hide in, end to end: the synthesizer's labels, the
    ACCDOA targets built from them, every square-array symmetry applied to audio and targets
    together, and the phase features the network sees. In every version of the crop the features
    must equal the mic offsets projected on the target vector, as a plane wave from there gives."""
    from edgeaudio.plugins.seld.data import Recording, SeldCrops
    from edgeaudio.plugins.seld.model import Frontend

    audio, rows, positions = _single_source_scene(tmp_path, azimuth=130.0, elevation=20.0)
    assert {(r.azimuth, r.elevation) for r in rows} == {(130, 20)}
    crops = SeldCrops([Recording("s", audio, rows)], 1, positions, crop_blocks=30, gain_db=(0.0, 0.0))
    frontend = Frontend(positions, 16000, n_fft=512, hop=320, n_mels=64).eval()
    bands = frontend.phase_pool.abs().sum(dim=0) > 0
    reach = np.linalg.norm(positions - positions[0], axis=1).max()
    seen = set()
    for seed in range(40):
        np.random.seed(seed)
        crop, target = crops[0]
        active = np.flatnonzero(target[:, 0, :, 0].norm(dim=1).numpy() > 0)
        vector = target[active[0], 0, :, 0].numpy()
        np.testing.assert_allclose(np.linalg.norm(vector), 1.0, atol=1e-6)
        seen.add(tuple(np.round(vector, 3)))
        with torch.no_grad():
            features, _ = frontend(crop[None], torch.zeros(1, 4, frontend.tail))
        frames = np.concatenate([np.arange(5 * b + 2, 5 * b + 5) for b in active[1:-1]])
        measured = np.median(features[0, 4:][:, frames][:, :, bands].numpy(), axis=(1, 2))
        expected = (positions[1:] - positions[0]) @ vector / reach
        np.testing.assert_allclose(measured, expected, atol=0.12)
    assert len(seen) == 8  # all eight rotations and mirror images came up


def test_srp_phat_finds_the_labelled_direction_of_a_rendered_source(tmp_path):
    from edgeaudio.plugins.seld.metrics import angular_distance_deg, seld_metrics
    from edgeaudio.plugins.seld.srp import SrpPhat

    audio, rows, positions = _single_source_scene(tmp_path, azimuth=-70.0, elevation=10.0)
    references = {}
    for row in rows:
        references.setdefault(row.frame, []).append((row.class_index, float(row.azimuth), float(row.elevation), 0))
    predicted = SrpPhat(positions).labels(audio, references)
    assert predicted.keys() == references.keys()
    errors = [float(angular_distance_deg(-70, 10, p[0][1], p[0][2])) for p in predicted.values()]
    assert np.median(errors) < 10
    assert seld_metrics(predicted, references, 1)["LR"] == 1.0  # oracle detection: every frame answered


def test_vectorised_srp_equals_the_pyroomacoustics_loop():
    pra = pytest.importorskip("pyroomacoustics")
    from edgeaudio.plugins.seld.srp import SrpPhat

    positions = np.asarray(get_array("respeaker-4mic", live_devices=[])[0].positions)
    srp = SrpPhat(positions, azimuth_step=10.0)
    grid = srp._doa.grid
    reference = pra.doa.algorithms["SRP"](
        (positions - positions.mean(axis=0)).T, 16000, 512, c=343.0, mode="far", dim=3,
        azimuth=np.unique(grid.azimuth), colatitude=np.unique(grid.colatitude),
    )
    spectra = np.fft.rfft(_noise(5, 1)[:, : 3 * 512].reshape(4, 3, 512).transpose(0, 2, 1), axis=1)
    srp._doa.num_snap = spectra.shape[2]
    srp._doa._process(spectra)
    reference.freq_bins, reference.num_freq, reference.num_snap = srp._doa.freq_bins, srp._doa.num_freq, 3
    reference._process(spectra)
    np.testing.assert_allclose(srp._doa.grid.values, reference.grid.values, atol=1e-9)


# -- which array a recording comes from -------------------------------------------------------


def _run_cli(*args):
    from click.testing import CliRunner

    from edgeaudio.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _events(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_recordings_name_their_array_in_the_wav_comment(tmp_path):
    from edgeaudio.audio.recording_array import declared_array, write_tagged

    tagged = write_tagged(tmp_path / "usb.wav", _noise(0, 2), 16000, "respeaker-usb")
    plain = tmp_path / "plain.wav"
    sf.write(str(plain), _noise(0, 2).T, 16000)
    assert declared_array(tagged) == "respeaker-usb"
    assert declared_array(plain) is None
    assert declared_array(tmp_path / "missing.wav") is None


def test_a_recording_from_another_array_is_refused_unless_forced(tiny_bundle, tmp_path):
    from edgeaudio.audio.recording_array import write_tagged

    audio = _noise(3, 10)
    usb = write_tagged(tmp_path / "usb.wav", audio, 16000, "respeaker-usb")
    same = write_tagged(tmp_path / "4mic.wav", audio, 16000, "respeaker-4mic")
    refused = _run_cli("run", tiny_bundle, "-i", usb, "--backend", "onnxruntime")
    assert refused.exit_code == 2
    error = next(line for line in refused.stderr.splitlines() if line.startswith("error: "))
    assert "recorded with respeaker-usb" in error and "trained for respeaker-4mic" in error
    assert "--force" in refused.stderr and "Traceback" not in refused.output
    named = _run_cli("run", tiny_bundle, "-i", same, "--device", "respeaker-usb", "--backend", "onnxruntime")
    assert named.exit_code == 2 and "--device names respeaker-usb" in named.stderr  # file and flag disagree
    forced = _run_cli("run", tiny_bundle, "-i", usb, "--force", "--backend", "onnxruntime")
    plain = _run_cli("run", tiny_bundle, "-i", same, "--backend", "onnxruntime")
    assert forced.exit_code == plain.exit_code == 0
    assert "running anyway (--force)" in forced.stderr
    assert _events(forced) == _events(plain) and len(_events(plain)) == 10


def test_a_raw_device_capture_is_reduced_to_the_mics_of_its_channel_map(tiny_bundle, tmp_path):
    """The ReSpeaker USB array's 6-channel capture: beam, four mics, playback; mics in 1-4."""
    mics = _noise(4, 10)
    capture = np.concatenate([mics[:1] * 0.5, mics, np.zeros_like(mics[:1])])
    raw = tmp_path / "raw6.wav"
    sf.write(str(raw), capture.T, 16000, subtype="FLOAT")
    four = tmp_path / "four.wav"
    sf.write(str(four), mics.T, 16000, subtype="FLOAT")
    common = ("--device", "respeaker-usb", "--force", "--backend", "onnxruntime")
    for mode in ("--stream", "--offline"):
        picked = _run_cli("run", tiny_bundle, "-i", raw, mode, *common)
        direct = _run_cli("run", tiny_bundle, "-i", four, mode, *common)
        assert picked.exit_code == direct.exit_code == 0, picked.stderr
        assert "using channels 1, 2, 3, 4 (its mics)" in picked.stderr
        assert _events(picked) == _events(direct)


def test_wrong_channel_count_names_the_expected_count_and_channel_map(tiny_bundle, tmp_path):
    stereo = tmp_path / "stereo.wav"
    sf.write(str(stereo), _noise(5, 2)[:2].T, 16000)
    result = _run_cli("run", tiny_bundle, "-i", stereo, "--backend", "onnxruntime")
    assert result.exit_code == 2
    error = next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    assert "has 2 channel(s)" in error and "expects 4" in error
    assert "respeaker-4mic: 4 mics" in error and "channels 0, 1, 2, 3" in error


def test_simulated_input_for_another_array_is_refused_unless_forced(tiny_bundle):
    refused = _run_cli("run", tiny_bundle, "-i", "sim:seed=1,seconds=1", "--device", "respeaker-usb", "--backend", "onnxruntime")
    assert refused.exit_code == 2 and "comes from respeaker-usb but this model was trained for respeaker-4mic" in refused.stderr
    forced = _run_cli("run", tiny_bundle, "-i", "sim:seed=1,seconds=1", "--device", "respeaker-usb", "--force",
                      "--backend", "onnxruntime")
    assert forced.exit_code == 0 and len(_events(forced)) == 10


# -- track ids, DCASE rows, plots ----------------------------------------------------------------


def test_tracker_follows_a_moving_source_and_tells_two_apart():
    from edgeaudio.plugins.seld.tracking import Tracker

    tracker = Tracker()
    ids = [tracker.assign(f, [(0, 10.0 * f, 0.0), (0, -120.0, 5.0)]) for f in range(6)]  # 10 deg per frame
    assert all(frame == [0, 1] for frame in ids)
    assert tracker.assign(6, [(0, -120.0, 5.0), (0, 60.0, 0.0)]) == [1, 0]  # order in the frame does not matter
    assert tracker.assign(7, [(1, 60.0, 0.0)]) == [2]  # another class at the same place is another source
    assert tracker.assign(8, [(0, 60.0 + 90.0, 0.0)]) == [3]  # too far in one step: a new source
    assert tracker.assign(20, [(0, -120.0, 5.0)]) == [4]  # silent for longer than the gap: a new id


def test_tracker_wraps_azimuth_around_180_degrees():
    from edgeaudio.plugins.seld.tracking import Tracker

    tracker = Tracker()
    assert [tracker.assign(f, [(2, az, 0.0)]) for f, az in enumerate([170.0, 178.0, -176.0, -168.0])] == [[0]] * 4


def _shipped_scene_run(tmp_path, *extra):
    scene = Path(__file__).parents[1] / "examples" / "scenes" / "respeaker-4mic-scene.wav"
    return _run_cli("run", "seld", "-i", scene, "--backend", "onnxruntime", *extra)


@pytest.mark.slow
def test_shipped_model_streams_tracks_dcase_rows_and_a_plot(seld_plugin, tmp_path):
    from edgeaudio.plugins.seld.task import SeldTask

    if SeldTask().default_checkpoint() is None:
        pytest.skip("no shipped weights for respeaker-4mic in plugins/seld/weights")
    streamed = _shipped_scene_run(tmp_path)
    offline = _shipped_scene_run(tmp_path, "--offline")
    assert streamed.exit_code == offline.exit_code == 0, streamed.stderr
    frames = _events(streamed)
    assert frames == _events(offline) and len(frames) == 200  # track ids too: the tracker is causal
    events = [e for f in frames for e in f["events"]]
    assert events and all(isinstance(e["track"], int) for e in events)
    lengths = {}
    for e in events:
        lengths[e["track"]] = lengths.get(e["track"], 0) + 1
    assert max(lengths.values()) >= 10  # a source keeps its id for at least a second

    csv, png = tmp_path / "events.csv", tmp_path / "azimuth.png"
    result = _shipped_scene_run(tmp_path, "--format", "dcase", "-o", csv, "--plot", png)
    assert result.exit_code == 0, result.stderr
    rows = [line.split(",") for line in csv.read_text().splitlines()]
    classes = SeldTask().classes
    assert len(rows) == len(events)
    first = next(f for f in frames if f["events"])["events"][0]
    assert rows[0][1:3] == [str(classes.index(first["class"])), str(first["track"])]
    assert all(len(r) == 5 and -180 <= int(r[3]) <= 180 for r in rows)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plotted {len(events)} event frame(s)" in result.stderr


def test_dcase_format_is_refused_for_tasks_without_located_events(tmp_path):
    from edgeaudio.plugins.seld.sinks import DcaseCsvSink
    from edgeaudio.errors import UsageError
    from edgeaudio.tasks import get_task

    with pytest.raises(UsageError, match="locate classed sound events"):
        DcaseCsvSink(tmp_path / "x.csv", get_task("enhance"))


@pytest.mark.slow
@pytest.mark.parametrize("array", ["respeaker-4mic", "respeaker-usb"])
def test_each_bundled_scene_runs_the_shipped_model_for_its_array(seld_plugin, array):
    """``edgeaudio run seld --input <array>-scene.wav`` exports and runs the weights for that array."""
    from edgeaudio.api import open_session
    from edgeaudio.audio.recording_array import declared_array
    from edgeaudio.plugins.seld.scenes import read_csv
    from edgeaudio.plugins.seld.task import SeldTask

    if SeldTask({"array": array}).default_checkpoint() is None:
        pytest.skip(f"no shipped weights for {array} in plugins/seld/weights")
    scene = Path(__file__).parents[1] / "examples" / "scenes" / f"{array}-scene.wav"
    session = open_session("seld", recorded_array=declared_array(scene), log=lambda message: None)
    assert session.bundle.manifest["audio"]["array"]["name"] == array
    result = _run_cli("run", "seld", "-i", scene, "--backend", "onnxruntime")
    assert result.exit_code == 0, result.stderr
    frames = _events(result)
    truth = {row.frame for row in read_csv(scene.with_suffix(".csv"))}
    detected = {f["frame"] for f in frames if f["events"]}
    assert len(frames) == 200 and len(detected & truth) >= 0.5 * len(truth)  # it hears most labelled frames


def test_export_device_picks_the_array_and_is_refused_for_other_tasks(seld_plugin):
    refused = _run_cli("export", "enhance", "--device", "respeaker-usb")
    assert refused.exit_code == 2 and "not trained per microphone array" in refused.stderr
