"""Editions of the built-in event library: the listed edition 1, grouped takes, loops and copies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgeaudio.errors import UsageError
from edgeaudio.events import EventLibrary
from edgeaudio.events import build_library as bl
from edgeaudio.events.library import Clip


def _wav(path: Path, audio: np.ndarray, rate: int = bl.SAMPLE_RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.astype(np.float32), rate)
    return path


def _burst(seconds: float, seed: int) -> np.ndarray:
    return 0.3 * np.random.default_rng(seed).standard_normal(int(seconds * bl.SAMPLE_RATE))


def test_edition_1_lists_the_split_the_shipped_weights_trained_on():
    """The SELD sidecars record 188 training and 45 held-out clips; the listed clips split so."""
    listed = json.loads(bl.EDITION_1.read_text())
    assert listed["edition"] == 1 and len(listed["clips"]) == 233
    assert sorted({c["class"] for c in listed["clips"]}) == sorted(bl.RECIPE)
    assert all(c["licence"] and c["source"] and c["duration_s"] >= bl.MIN_CLIP - 1e-3 for c in listed["clips"])
    clips = [Clip(Path(c["file"]), c["class"]) for c in listed["clips"]]
    train, test = EventLibrary(Path("."), 16000, sorted(bl.RECIPE), clips).split(0.2, seed=0)
    assert (len(train), len(test)) == (188, 45)


def test_editions_live_in_their_own_cache_folders_and_sidecars_name_theirs(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEAUDIO_CACHE", str(tmp_path))
    assert bl.builtin_dir(1) == tmp_path / "events" / "builtin"
    assert bl.builtin_dir(2) == tmp_path / "events" / "builtin-v2"
    assert bl.builtin_dir(3) == tmp_path / "events" / "builtin-v3"
    assert bl.builtin_dir() == bl.builtin_dir(bl.LATEST_EDITION)
    with pytest.raises(UsageError, match="no event library edition 9"):
        bl.builtin_dir(9)
    assert bl.edition_of({"config": {}}) == 1  # written before editions existed
    assert bl.edition_of({"data": {"library_edition": 2}}) == 2
    assert bl.edition_of({"config": {"library_edition": 2}}) == 2
    # trained on a library of the user's own: the run records None, whatever the config's default says
    assert bl.edition_of({"data": {"library_edition": None}, "config": {"library_edition": 3}}) is None
    assert bl.training_edition(None) == bl.LATEST_EDITION
    assert bl.training_edition(str(tmp_path / "events" / "builtin")) == 1  # a run pointed at edition 1's folder
    assert bl.training_edition(tmp_path / "events" / "builtin-v2") == 2
    assert bl.training_edition(tmp_path / "my-sounds") is None


def test_edition_3_trades_the_whistles_for_horns_and_keeps_every_other_class_of_edition_2():
    recipe_2, seconds_2, clips_2 = bl.EDITIONS[2]
    recipe_3, seconds_3, clips_3 = bl.EDITIONS[3]
    assert (seconds_3, clips_3) == (seconds_2, clips_2)
    for label in set(recipe_2) - {"horn", "machinery"}:
        assert recipe_3[label] == recipe_2[label]
    (opensfx,) = [s for s in recipe_3["horn"] if s.kind == "opensfx"]
    assert "Modern car horn" in opensfx.entries
    assert not {"Factory Whistle", "Steam train station departure"} & set(opensfx.entries)
    assert recipe_3["horn"][len(recipe_2["horn"]):] == bl.ADDED_IN_EDITION_3["horn"]
    assert recipe_3["machinery"] == [*recipe_2["machinery"], *bl.ADDED_IN_EDITION_3["machinery"]]


def test_listed_clips_are_cut_again_from_their_source(tmp_path):
    source = _wav(tmp_path / "src" / "hum.wav", _burst(3.0, 0), rate=48000)
    listed = [{"file": "noise/pkg_src_hum__0.wav", "class": "noise", "package": "pkg", "licence": "GPL-2+",
               "source": str(source), "start_s": 0.5, "duration_s": 1.25}]  # fmt: skip
    out = tmp_path / "lib"
    assert bl._cut_again(out, listed, progress=False) == listed
    clip, rate = sf.read(str(out / "noise" / "pkg_src_hum__0.wav"))
    full = bl._read(source)
    expected = bl.normalise(full[int(0.5 * rate) : int(0.5 * rate) + int(1.25 * rate)])
    assert rate == bl.SAMPLE_RATE and len(clip) == int(1.25 * rate)
    np.testing.assert_allclose(clip, expected, atol=1e-4)  # 16-bit PCM


def test_takes_of_one_source_group_into_one_recording_and_copies_count_once(tmp_path, monkeypatch):
    monkeypatch.setattr(bl, "_licence", lambda package, path: "GPL-2+")
    folder = tmp_path / "sounds"
    _wav(folder / "cow_ack1.wav", _burst(0.5, 1))
    _wav(folder / "cow_die2.wav", _burst(0.6, 2))
    _wav(folder / "pig_ack1.wav", _burst(0.7, 3))
    (folder / "pig_copy.wav").write_bytes((folder / "pig_ack1.wav").read_bytes())
    (folder / "broken.wav").write_bytes(b"RIFF not audio")
    seen: set[str] = set()
    recordings = bl._recordings(bl.Source("pkg-data", f"{folder}/*.wav", group=r"[a-z]+"), seen)
    assert sorted(r.name for r in recordings) == ["pkg_sounds_cow", "pkg_sounds_pig"]
    cow = next(r for r in recordings if r.name.endswith("cow"))
    assert [Path(p).name for p in cow.source] == ["cow_ack1.wav", "cow_die2.wav"]
    assert len(bl.cut_events(cow.audio, bl.SAMPLE_RATE)) == 2  # the silence between takes splits them
    assert len(bl._recordings(bl.Source("pkg-data", f"{folder}/pig*.wav"), seen)) == 0  # copies seen already


def test_a_loop_sample_repeats_to_its_length(tmp_path, monkeypatch):
    monkeypatch.setattr(bl, "_licence", lambda package, path: "GPL-2+")
    _wav(tmp_path / "engine.wav", _burst(0.5, 4))
    (recording,) = bl._recordings(bl.Source("pkg-data", f"{tmp_path}/engine.wav", loop=3.0))
    assert abs(len(recording.audio) / bl.SAMPLE_RATE - (3.0 + bl.MIN_CLIP)) < 0.01


def test_missing_packages_name_the_command_that_builds_the_edition(tmp_path, monkeypatch):
    monkeypatch.setattr(bl, "_installed_version", lambda package: None if package == "torcs-data" else "1")
    with pytest.raises(UsageError, match="edition 2 needs Debian packages that are not installed: torcs-data") as error:
        bl.build(tmp_path / "lib", edition=2, progress=False)
    assert f"--edition 2 --out {tmp_path / 'lib'} --install" in error.value.hint
    assert not (tmp_path / "lib").exists()  # nothing written
