"""The conformance suite on the first-party tasks, its own refusals, and `edgeaudio new-plugin`."""

from __future__ import annotations

import pytest
import tiny_task

from edgeaudio.testing import CHECKS, check_task, conformance_tests

test_tiny_task_conforms = conformance_tests(tiny_task.TinyTask, precisions=("fp32", "int8"))


def test_seld_conforms(tmp_path):
    seld = pytest.importorskip("edgeaudio.plugins.seld.task", reason="the seld plugin is not in this checkout")
    report = check_task(seld.SeldTask, tmp_dir=tmp_path)
    assert list(report.passed) == list(CHECKS)


def test_check_task_returns_a_report(tmp_path):
    report = check_task(tiny_task.TinyTask, tmp_dir=tmp_path, backends=("onnxruntime",))
    assert list(report.passed) == list(CHECKS)
    assert (tmp_path / "tiny-bundle" / "manifest.json").is_file()
    assert "tiny v1" in str(report)


class Nameless(tiny_task.TinyTask):
    name = "Not A Name"


class Undescribed(tiny_task.TinyTask):
    name = "undescribed"
    description = ""


class LeaksNumpy(tiny_task.TinyTask):
    name = "leaks-numpy"

    def decode(self, outputs, start_frame=0):
        return {"scores": outputs["scores"][0]}


class ForgetsExample(tiny_task.TinyTask):
    name = "forgets-example"

    def graphs(self, model):
        graphs = super().graphs(model)
        del graphs[0].example_inputs["hidden"]
        return graphs


class AcceptsNaN(tiny_task.TinyTask):
    name = "accepts-nan"

    def prepare_audio(self, audio, sample_rate):
        import numpy as np

        return super().prepare_audio(np.nan_to_num(audio), sample_rate)


@pytest.mark.parametrize(
    "task,message",
    [
        (Nameless, "name 'Not A Name' must be lowercase"),
        (Undescribed, "description must say"),
        (ForgetsExample, "example_inputs .* must match inputs"),
        (AcceptsNaN, "Session.process with audio containing NaN was accepted"),
        (LeaksNumpy, "Session.process result is not JSON-serialisable"),
    ],
)
def test_failures_say_what_is_wrong(task, message, tmp_path):
    with pytest.raises(AssertionError, match=message):
        check_task(task, tmp_dir=tmp_path, backends=("onnxruntime",))


# -- edgeaudio new-plugin: the scaffold is a conforming plugin from the first command ------------


def _new_plugin(*args):
    from click.testing import CliRunner

    from edgeaudio.cli import cli

    return CliRunner().invoke(cli, ["new-plugin", *map(str, args)], catch_exceptions=False)


def test_scaffolded_plugin_conforms(tmp_path, monkeypatch):
    import importlib
    import sys

    result = _new_plugin("scaffold_demo", "--dir", tmp_path / "plugin")
    assert result.exit_code == 0, result.output
    root = tmp_path / "plugin"
    assert 'scaffold_demo = "edgeaudio_scaffold_demo"' in (root / "pyproject.toml").read_text()
    assert "conformance_tests(ScaffoldDemoTask" in (root / "tests" / "test_task.py").read_text()
    monkeypatch.syspath_prepend(str(root / "src"))
    try:
        task_module = importlib.import_module("edgeaudio_scaffold_demo.task")
        report = check_task(task_module.ScaffoldDemoTask, tmp_dir=tmp_path / "work", backends=("onnxruntime",))
    finally:
        for name in [m for m in sys.modules if m.startswith("edgeaudio_scaffold_demo")]:
            del sys.modules[name]
    assert list(report.passed) == list(CHECKS)


@pytest.mark.parametrize("name", ["Bad-Name", "9lives", "has space", "x" * 33])
def test_new_plugin_refuses_bad_names(name, tmp_path):
    result = _new_plugin(name, "--dir", tmp_path / "p")
    assert result.exit_code == 2 and "is not a usable plugin name" in result.output
    assert not (tmp_path / "p").exists()


def test_new_plugin_never_overwrites(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    result = _new_plugin("fresh", "--dir", target)
    assert result.exit_code == 2 and "already exists" in result.output
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_new_plugin_refuses_an_installed_task_name(tiny_plugin, tmp_path):
    result = _new_plugin("tiny", "--dir", tmp_path / "p")
    assert result.exit_code == 2 and "a task named 'tiny' is already installed" in result.output
