"""What export calibrates and judges INT8 on: each first-party task's own set, which ships with the
package (no event library, no root), or folders of the user's own data in the task's documented
format, refused by file and expectation when they are in another."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from edgeaudio.cli import cli
from edgeaudio.errors import UsageError
from edgeaudio.task import EvalSet
from edgeaudio.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
SCENES = ROOT / "plugins" / "seld" / "validation" / "respeaker-4mic"
SIZES = {"seld": 12, "enhance": 16, "bwe": 14, "caption": 48, "tta": 28}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_without_the_event_library_each_task_uses_its_shipped_set(name, monkeypatch):
    """The tests' cache holds no library: the sets come from the package, and say so."""
    monkeypatch.setenv("EDGEAUDIO_NO_LIBRARY_BUILD", "1")
    dataset = get_task(name).validation_set()
    assert isinstance(dataset, EvalSet) and len(dataset) == SIZES[name]
    assert dataset.name.startswith("the shipped") or name == "tta", dataset.name


def test_shipped_sets_record_their_provenance_and_licences():
    for folder in ("seld/validation/respeaker-4mic", "bwe/validation", "caption/validation"):
        sources = json.loads((ROOT / "plugins" / folder / "SOURCES.json").read_text())
        assert sources["generator"].startswith("python -m edgeaudio.plugins.") and sources["clips"], folder
        assert sources["licences"] == sorted({clip["licence"] for clip in sources["clips"]}), folder
        assert all(clip["package"] in sources["packages"] and clip["version"] for clip in sources["clips"]), folder


def test_the_library_is_not_built_when_a_switch_forbids_it(monkeypatch, tmp_path):
    from edgeaudio.events.build_library import ensure_builtin

    monkeypatch.setenv("EDGEAUDIO_CACHE", str(tmp_path))
    monkeypatch.setenv("EDGEAUDIO_NO_LIBRARY_BUILD", "1")
    with pytest.raises(UsageError, match="EDGEAUDIO_NO_LIBRARY_BUILD forbids building it"):
        ensure_builtin(edition=1)
    assert not (tmp_path / "events").exists()


def _scene_folder(root: Path, count: int = 3) -> Path:
    """The first scenes of the shipped set in the documented layout, as WAV files."""
    for folder in ("mic", "metadata"):
        (root / folder).mkdir(parents=True)
    shutil.copy(SCENES / "classes.json", root / "classes.json")
    for flac in sorted((SCENES / "mic").glob("*.flac"))[:count]:
        audio, rate = sf.read(flac, dtype="int16")
        sf.write(root / "mic" / f"{flac.stem}.wav", audio, rate, subtype="PCM_16")
        shutil.copy(SCENES / "metadata" / f"{flac.stem}.csv", root / "metadata")
    return root


def test_user_scenes_in_the_documented_layout_are_read(tmp_path):
    task = get_task("seld")
    dataset = task.read_dataset(_scene_folder(tmp_path / "scenes"))
    shipped = task.validation_set()
    assert len(dataset) == 3 and str(tmp_path / "scenes") in dataset.name
    for (audio, labels), (want_audio, want_labels) in zip(dataset, shipped):
        assert np.array_equal(audio, want_audio) and labels == want_labels


@pytest.mark.parametrize("name, make, expected", [
    ("seld", lambda root: (root / "noisy").mkdir(), r"classes\.json is missing .*expected DIR/classes\.json"),
    ("seld", lambda root: (_scene_folder(root), (root / "metadata" / "scene_00001.csv").unlink()),
     r"scene_00001\.wav has no labels: expected .*metadata/scene_00001\.csv"),
    ("seld", lambda root: (_scene_folder(root), (root / "metadata" / "scene_00000.csv").write_text("3,99,0,10,0\n")),
     r"scene_00000\.csv line 1: class 99 is not one of the 14 classes"),
    ("enhance", lambda root: (root / "mic").mkdir(), r"must hold one pair of folders named noisy\*/clean\*"),
    ("bwe", lambda root: sf.write(root / "call.wav", np.zeros(8000, np.float32), 8000), r"call\.wav is 8000 Hz: the references must be wideband"),
    ("bwe", lambda root: None, r"holds no \.wav or \.flac speech"),
    ("caption", lambda root: (root / "clip.wav").touch(), r"captions\.csv is missing .*file_name, caption_1"),
    ("caption", lambda root: (root / "captions.csv").write_text("file_name,caption_1\nmissing.wav,a dog barks\n"),
     r"1 audio file\(s\) missing, e\.g\. .*missing\.wav"),
    ("tta", lambda root: (root / "prompts.csv").write_text("text\na horn\n"), r"prompts\.csv has columns \['text'\], not prompt and class"),
    ("tta", lambda root: (root / "prompts.csv").write_text("prompt,class\na horn,horn\na cow,cow\n"),
     r"prompts\.csv line 3: class 'cow' is not one the judge knows"),
])  # fmt: skip
def test_a_folder_in_another_format_names_the_file_and_what_was_expected(name, make, expected, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    make(root)
    with pytest.raises(UsageError) as caught:
        get_task(name).read_dataset(root)
    assert re.search(expected, f"{caught.value} hint: {caught.value.hint}"), f"{caught.value} hint: {caught.value.hint}"


def test_export_refuses_a_calibration_folder_in_another_format_before_any_work(tmp_path):
    (tmp_path / "noisy").mkdir()
    result = CliRunner().invoke(cli, ["export", "seld", "--calibration", str(tmp_path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"error: {tmp_path} is not a folder of DCASE scenes: {tmp_path / 'classes.json'} is missing" in result.output
    assert "hint: expected DIR/classes.json, DIR/mic/NAME.wav|.flac and DIR/metadata/NAME.csv" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_int8_export_without_the_library_names_the_set_it_was_judged_on(tmp_path, monkeypatch):
    """seld for Jetson with INT8 gated, the library forbidden: calibrated and judged on the
    shipped scenes, which the gate report names with their count; then the same with scenes of
    the user's own (--calibration/--validation)."""
    monkeypatch.setenv("EDGEAUDIO_NO_LIBRARY_BUILD", "1")
    runner = CliRunner()
    result = runner.invoke(cli, ["export", "seld", "--target", "jetson", "--archive", "-o", str(tmp_path / "jetson")])
    assert result.exit_code == 0, result.output
    gate = json.loads((tmp_path / "jetson" / "manifest.json").read_text())["reports"]["gate"]
    assert gate["dataset"] == {"name": "the shipped validation scenes for respeaker-4mic (plugins/seld/validation)", "items": 12}
    assert set(gate["candidates"]) == {"onnxruntime/int8", "tensorrt/int8"}
    assert "on the shipped validation scenes for respeaker-4mic (plugins/seld/validation) (12 items)" in result.output

    scenes = str(_scene_folder(tmp_path / "scenes"))
    result = runner.invoke(cli, ["export", "seld", "--target", "x86-cpu", "--backend", "onnxruntime", "--precision", "int8",
                                  "--calibration", scenes, "--validation", scenes, "-o", str(tmp_path / "own")])  # fmt: skip
    assert result.exit_code == 0, result.output
    gate = json.loads((tmp_path / "own" / "manifest.json").read_text())["reports"]["gate"]
    assert gate["dataset"] == {"name": f"{scenes} (--validation)", "items": 3}
    assert f"collecting calibration data from {scenes} (--calibration) (3 items)" in result.output
