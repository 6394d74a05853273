"""STARSS22/23 readers on a miniature copy of the real layout, written into tmp_path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from edgeaudio.errors import UsageError
from edgeaudio.plugins.seld.starss import (
    STARSS23_CLASSES,
    STARSS_MIC_POSITIONS_M,
    StarssDataset,
    read_metadata_csv,
    write_metadata_csv,
)

SAMPLE_RATE = 24000

# Rows exactly as STARSS writes them: no header, integer degrees; the last file has a 2024 row.
RECORDINGS = {
    "dev-train-sony/fold3_room21_mix001": "0,0,0,30,10\n1,0,0,31,10\n1,8,1,-120,-5\n",
    "dev-test-sony/fold4_room23_mix001": "3,12,0,-180,0\n",
    "dev-train-tau/fold3_room4_mix002": "10,1,0,90,-20\n10,1,1,-90,20\n\n11,1,0,88,-20,143\n",
}


def write_recording(root, fmt, name, csv_text, seconds=0.1):
    wav = root / f"{fmt}_dev" / f"{name}.wav"
    wav.parent.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(-0.5, 0.5, int(seconds * SAMPLE_RATE), dtype=np.float32)
    sf.write(wav, np.stack([ramp * (ch + 1) / 4 for ch in range(4)], axis=1), SAMPLE_RATE)
    csv_path = root / "metadata_dev" / f"{name}.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path.write_text(csv_text)
    return wav, csv_path


@pytest.fixture
def starss_root(tmp_path):
    root = tmp_path / "STARSS23"
    for name, text in RECORDINGS.items():
        for fmt in ("mic", "foa"):
            write_recording(root, fmt, name, text)
    return root


def test_dataset_lists_pairs_by_stem(starss_root):
    data = StarssDataset(starss_root)
    assert len(data) == 3
    names = [(wav.parent.name, wav.stem, csv.parent.parent.name, csv.stem) for wav, csv in data.pairs]
    assert names == [
        ("dev-test-sony", "fold4_room23_mix001", "metadata_dev", "fold4_room23_mix001"),
        ("dev-train-sony", "fold3_room21_mix001", "metadata_dev", "fold3_room21_mix001"),
        ("dev-train-tau", "fold3_room4_mix002", "metadata_dev", "fold3_room4_mix002"),
    ]
    assert all(wav.parent.parent.name == "mic_dev" for wav, _ in data.pairs)
    assert data.classes == STARSS23_CLASSES and len(data.classes) == 13


def test_getitem_returns_channels_first_float32_and_labels(starss_root):
    audio, sample_rate, labels = StarssDataset(starss_root, format="foa", splits=["dev-train-sony"])[0]
    assert audio.dtype == np.float32 and audio.shape == (4, SAMPLE_RATE // 10) and sample_rate == SAMPLE_RATE
    assert audio[3, -1] == pytest.approx(0.5, abs=1e-3) and audio[0, -1] == pytest.approx(0.125, abs=1e-3)
    assert labels == {0: [(0, 30.0, 10.0, 0)], 1: [(0, 31.0, 10.0, 0), (8, -120.0, -5.0, 1)]}


def test_split_prefix_selects_both_sites(starss_root):
    data = StarssDataset(starss_root, splits=["dev-train"])
    assert [wav.parent.name for wav, _ in data.pairs] == ["dev-train-sony", "dev-train-tau"]
    with pytest.raises(UsageError, match="available: dev-test-sony, dev-train-sony, dev-train-tau"):
        StarssDataset(starss_root, splits=["eval"])


def test_2024_distance_row_and_empty_line(starss_root):
    labels = read_metadata_csv(starss_root / "metadata_dev/dev-train-tau/fold3_room4_mix002.csv")
    assert labels == {10: [(1, 90.0, -20.0, 0), (1, -90.0, 20.0, 1)], 11: [(1, 88.0, -20.0, 0)]}


def test_write_read_round_trip(tmp_path):
    labels = {
        0: [(2, 44.6, -10.2, 1), (2, -90.0, 0.0, 0)],
        7: [(12, 179.0, 89.0, 0)],
    }
    path = write_metadata_csv(tmp_path / "out" / "pred.csv", labels)
    assert path.read_text().splitlines() == ["0,2,0,-90,0", "0,2,1,45,-10", "7,12,0,179,89"]
    assert read_metadata_csv(path) == {0: [(2, -90.0, 0.0, 0), (2, 45.0, -10.0, 1)], 7: [(12, 179.0, 89.0, 0)]}


def test_write_numbers_instances_without_track_ids(tmp_path):
    path = write_metadata_csv(tmp_path / "pred.csv", {3: [(1, 10, 0), (1, 20, 0), (4, 0, 0)]})
    assert path.read_text().splitlines() == ["3,1,0,10,0", "3,1,1,20,0", "3,4,0,0,0"]


def test_malformed_csv_names_file_and_line(tmp_path):
    bad = tmp_path / "fold3_room21_mix001.csv"
    bad.write_text("0,0,0,30,10\n1,0,0,31\n")
    with pytest.raises(UsageError, match=r"fold3_room21_mix001\.csv line 2: expected 5 or 6 columns"):
        read_metadata_csv(bad)
    bad.write_text("0,0,0,30,10\n\n2,0,0,north,10\n")
    with pytest.raises(UsageError, match=r"fold3_room21_mix001\.csv line 3: not a number"):
        read_metadata_csv(bad)


def test_audio_without_metadata_is_an_error(starss_root):
    (starss_root / "metadata_dev/dev-test-sony/fold4_room23_mix001.csv").unlink()
    with pytest.raises(UsageError, match=r"fold4_room23_mix001\.wav has no metadata: expected .*metadata_dev"):
        StarssDataset(starss_root)


def test_wrong_layout_says_what_was_expected(tmp_path, starss_root):
    with pytest.raises(UsageError, match=r"expected the folder mic_dev/ \(found: nothing\)"):
        StarssDataset(tmp_path / "missing")
    flat = tmp_path / "flat"
    write_recording(flat, "mic", "fold1_room1_mix001", "0,0,0,0,0\n")  # no split folder level
    with pytest.raises(UsageError, match="has no split folders"):
        StarssDataset(flat)
    with pytest.raises(UsageError, match="format must be one of mic, foa"):
        StarssDataset(starss_root, format="ambisonics")


def test_mic_geometry_is_the_tetrahedron():
    positions = np.asarray(STARSS_MIC_POSITIONS_M)
    assert positions.shape == (4, 3)
    np.testing.assert_allclose(np.linalg.norm(positions, axis=1), 0.042)
    np.testing.assert_allclose(positions.sum(axis=0), 0, atol=1e-12)  # centred on the origin
    assert np.all(np.sign(positions[0]) == [1, 1, 1]) and np.all(np.sign(positions[3]) == [-1, -1, 1])
    with pytest.raises(ValueError):
        STARSS_MIC_POSITIONS_M[0, 0] = 0


# -- training on a STARSS root: every file checked before training, the tetrahedral array recorded ----

TINY_SIZES = {"n_mels": 16, "conv_channels": [4, 8, 8], "freq_pools": [2, 2, 2], "gru_hidden": 16, "gru_layers": 1}


@pytest.fixture
def seld_task():
    import edgeaudio.plugins.seld as plugin
    from edgeaudio.tasks import get_task
    from edgeaudio.testing import registered_plugin

    with registered_plugin(plugin, "seld"):
        yield get_task("seld", TINY_SIZES)


def _training_root(tmp_path, seconds=2.0):
    """Two dev-train recordings and one dev-test recording of 4-channel 24 kHz noise with events."""
    root = tmp_path / "STARSS23"
    rows = "".join(f"{frame},{frame % 13},0,{(frame * 17) % 360 - 180},{frame % 60 - 30}\n" for frame in range(0, 20, 2))
    for name in ("dev-train-sony/fold3_room21_mix001", "dev-train-tau/fold3_room4_mix002", "dev-test-sony/fold4_room23_mix001"):
        write_recording(root, "mic", name, rows, seconds=seconds)
    return root


def _rewrite_wav(root, name, channels=4, rate=SAMPLE_RATE):
    noise = 0.1 * np.random.default_rng(0).standard_normal((int(rate * 2), channels)).astype(np.float32)
    sf.write(root / "mic_dev" / f"{name}.wav", noise, rate)


@pytest.mark.parametrize("name, change, message", [
    ("dev-train-sony/fold3_room21_mix001", dict(channels=2), r"fold3_room21_mix001.wav has 2 channel\(s\), but STARSS MIC-format audio has 4"),
    ("dev-train-sony/fold3_room21_mix001", dict(channels=6), r"has 6 channel\(s\), but STARSS MIC-format audio has 4"),
    ("dev-train-tau/fold3_room4_mix002", dict(channels=1), r"fold3_room4_mix002.wav has 1 channel\(s\)"),
    ("dev-test-sony/fold4_room23_mix001", dict(channels=2), r"fold4_room23_mix001.wav has 2 channel\(s\)"),  # the test split too
    ("dev-train-sony/fold3_room21_mix001", dict(rate=8000), r"is 8000 Hz, below the model's 16000 Hz"),
], ids=["stereo", "six-channel", "mono", "stereo-in-dev-test", "8kHz"])
def test_training_refuses_recordings_that_do_not_fit_before_it_starts(seld_task, tmp_path, name, change, message):
    from edgeaudio.plugins.seld.task import SeldTrainOptions

    root = _training_root(tmp_path)
    _rewrite_wav(root, name, **change)
    with pytest.raises(UsageError, match=message):
        seld_task.train(str(tmp_path / "run"), SeldTrainOptions(data_dir=str(root), epochs=1, progress=False))
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("row, message", [
    ("5,13,0,10,10", r"fold4_room23_mix001.csv line 2: class 13 is not one of the 13 classes \(0-12\)"),
    ("5,-1,0,10,10", r"line 2: class -1 is not one of the 13 classes"),
    ("5,3,0,190,10", r"line 2: direction \(190, 10\) is outside azimuth -180..180, elevation -90..90"),
    ("900,3,0,10,10", r"line 2: frame 900 lies outside the 2.0 s of fold4_room23_mix001.wav \(20 frames\)"),
    ("5,3,0,ten,10", r"fold4_room23_mix001.csv line 2: not a number"),
], ids=["class-past-the-list", "negative-class", "azimuth", "frame", "text"])
def test_training_refuses_metadata_rows_naming_file_and_line(seld_task, tmp_path, row, message):
    from edgeaudio.plugins.seld.task import SeldTrainOptions

    root = _training_root(tmp_path)
    (root / "metadata_dev" / "dev-test-sony" / "fold4_room23_mix001.csv").write_text(f"0,0,0,0,0\n{row}\n")
    with pytest.raises(UsageError, match=message):
        seld_task.train(str(tmp_path / "run"), SeldTrainOptions(data_dir=str(root), epochs=1, progress=False))


def test_starss_data_keeps_its_own_array(seld_task, tmp_path):
    from edgeaudio.plugins.seld.task import SeldTrainOptions

    with pytest.raises(UsageError, match="holds audio from the starss-mic array; --array respeaker-4mic cannot change that"):
        seld_task.train(str(tmp_path / "run"), SeldTrainOptions(data_dir=str(_training_root(tmp_path)), array="respeaker-4mic"))


def test_the_array_profile_is_the_tetrahedron():
    from edgeaudio.plugins.seld.starss import STARSS_ARRAY
    from edgeaudio.profiles import get_array

    profile = get_array(STARSS_ARRAY, live_devices=[])[0]
    np.testing.assert_allclose(profile.positions, STARSS_MIC_POSITIONS_M, atol=1e-6)
    assert profile.native_rate == SAMPLE_RATE and profile.num_mics == 4


@pytest.mark.slow
def test_a_starss_model_is_exported_and_run_for_the_tetrahedral_array(seld_task, tmp_path):
    from click.testing import CliRunner

    from edgeaudio.cli import cli
    from edgeaudio.plugins.seld.task import SeldTrainOptions

    root = _training_root(tmp_path)
    result = seld_task.train(str(tmp_path / "run"), SeldTrainOptions(data_dir=str(root), epochs=1, batch_size=2, progress=False))
    sidecar = json.loads((tmp_path / "run" / "weights.json").read_text())
    assert sidecar["config"]["array"] == "starss-mic" and sidecar["config"]["classes"] == STARSS23_CLASSES
    assert (sidecar["data"]["train_recordings"], sidecar["data"]["test_recordings"]) == (2, 1) and "F20" in result["metrics"]
    bundle = tmp_path / "bundle"
    exported = CliRunner().invoke(cli, ["export", "seld", "--checkpoint", str(tmp_path / "run"), "--precision", "fp32",
                                        "--backend", "onnxruntime", "-o", str(bundle)])
    assert exported.exit_code == 0, exported.output
    array = json.loads((bundle / "manifest.json").read_text())["audio"]["array"]
    assert array["name"] == "starss-mic"
    np.testing.assert_allclose(array["positions"], STARSS_MIC_POSITIONS_M, atol=1e-6)
    wav = root / "mic_dev" / "dev-test-sony" / "fold4_room23_mix001.wav"  # 24 kHz, resampled on the way in
    ran = CliRunner().invoke(cli, ["run", str(bundle), "--input", str(wav), "--backend", "onnxruntime"])
    assert ran.exit_code == 0, ran.output
    assert len([line for line in ran.stdout.splitlines() if line.startswith("{")]) == 20
