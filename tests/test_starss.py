"""STARSS22/23 readers on a miniature copy of the real layout, written into tmp_path."""

from __future__ import annotations

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
