"""Typed trainer options: dataclass -> click options -> dataclass (edgeaudio.options), and
``edgeaudio train TASK`` offering the named task's options, with click refusing bad ones."""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass, field

import click
import pytest
from click.testing import CliRunner

from edgeaudio.cli import cli
from edgeaudio.options import click_options, from_click

EPOCHS = {"seld": 20, "enhance": 30, "bwe": 30, "caption": 40, "tta": 30}  # each trainer's default


@pytest.fixture(scope="module")
def first_party():
    """The five first-party task plugins, registered in-process where their entry points are not installed."""
    from contextlib import ExitStack

    from edgeaudio.testing import registered_plugin

    with ExitStack() as stack:
        for name in EPOCHS:
            stack.enter_context(registered_plugin(importlib.import_module(f"edgeaudio.plugins.{name}"), name))
        yield


def _train(*args: str):
    return CliRunner().invoke(cli, ["train", *args])


def _flat(text: str) -> str:
    """Help text with its line wrapping undone, so a wrapped ``[default: ...]`` still matches."""
    return " ".join(text.split())


# -- the generic helper ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Everything:
    count: int = field(default=3, metadata={"help": "A count.", "min": 1, "max": 9})
    rate: float = field(default=0.5, metadata={"help": "A rate.", "min": 0.0})
    scale: float = field(default=2.0, metadata={"help": "Any finite number."})
    name: str = field(default="a", metadata={"help": "A choice.", "choices": ("a", "b")})
    path: str | None = field(default=None, metadata={"help": "Optional text."})
    limit: int | None = field(default=None, metadata={"help": "Optional number."})
    switch: bool = field(default=False, metadata={"help": "A switch."})
    words: list[str] | None = field(default=None, metadata={"help": "Comma-separated words."})
    sizes: tuple[int, ...] = field(default=(1, 2), metadata={"help": "Comma-separated numbers.", "min": 0})


def _round_trip(cls, args: list[str]):
    """Parse ``args`` with the options built from ``cls``; the instance built back, or the result."""
    built = []
    command = click.Command("x", params=click_options(cls), callback=lambda **values: built.append(from_click(cls, values)))
    result = CliRunner().invoke(command, args)
    return (built[0] if built else None), result


def test_dataclass_round_trips_through_click():
    assert _round_trip(Everything, [])[0] == Everything()
    args = ["--count", "9", "--rate", "0", "--scale", "-1e3", "--name", "b", "--path", "p/q", "--limit", "7", "--switch",
            "--words", "dog,cat", "--sizes", "4,0,5"]  # fmt: skip
    assert _round_trip(Everything, args)[0] == Everything(count=9, rate=0.0, scale=-1000.0, name="b", path="p/q", limit=7,
                                                          switch=True, words=["dog", "cat"], sizes=(4, 0, 5))  # fmt: skip
    assert _round_trip(Everything, ["--no-switch"])[0].switch is False


@pytest.mark.parametrize("args, message", [
    (["--count", "10"], "10 is not in the range 1<=x<=9"),
    (["--count", "two"], "'two' is not a valid integer"),
    (["--rate", "-0.1"], "is not in the range x>=0"),
    (["--scale", "nan"], "'nan' is not a finite number"),
    (["--scale", "inf"], "'inf' is not a finite number"),
    (["--name", "c"], "'c' is not one of 'a', 'b'"),
    (["--sizes", "1,-1"], "-1 is not in the range x>=0"),
])  # fmt: skip
def test_bad_values_are_usage_errors(args, message):
    built, result = _round_trip(Everything, args)
    assert built is None and result.exit_code == 2 and message in result.output


def test_help_shows_defaults_and_switches():
    command = click.Command("x", params=click_options(Everything))
    text = _flat(CliRunner().invoke(command, ["--help"]).output)
    assert "--count INTEGER A count. [default: 3; 1<=x<=9]" in text
    assert "--switch / --no-switch A switch. [default: no-switch]" in text
    assert "--words TEXT,... Comma-separated words." in text


def test_fields_click_cannot_express_are_refused():
    @dataclass
    class NoDefault:
        epochs: int

    @dataclass
    class Table:
        table: dict = field(default_factory=dict)

    @dataclass
    class TextBounds:
        name: str = field(default="a", metadata={"min": 1})

    for cls, message in ((NoDefault, "has no default"), (Table, "unsupported option type"), (TextBounds, "min/max")):
        with pytest.raises(TypeError, match=message):
            click_options(cls)


# -- edgeaudio train ------------------------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(EPOCHS))
def test_train_help_lists_the_trainers_options_with_defaults(first_party, task):
    result = _train(task, "--help")
    text = _flat(result.output)
    assert result.exit_code == 0 and f"Options of the {task} trainer:" in text
    assert re.search(rf"--epochs INTEGER [^\[]*\[default: {EPOCHS[task]}; x>=1\]", text), text
    assert "--progress / --no-progress" in text and "-o, --output TEXT" in text


def test_train_help_without_a_task_says_the_options_depend_on_it(first_party):
    result = _train("--help")
    assert result.exit_code == 0 and "depend on TASK" in _flat(result.output) and "--epochs" not in result.output


def test_one_tasks_options_do_not_leak_into_the_next_run(first_party):
    assert "--array" in _train("seld", "--help").output
    assert "--array" not in _train("bwe", "--help").output


def test_a_misspelled_option_is_a_usage_error(first_party):
    result = _train("seld", "--epochs-typo", "3")
    assert result.exit_code == 2 and "No such option '--epochs-typo'" in result.output


@pytest.mark.parametrize("args, message", [
    (["seld", "--epochs", "three"], "Invalid value for '--epochs': 'three' is not a valid integer"),
    (["enhance", "--batch-size", "0"], "Invalid value for '--batch-size': 0 is not in the range x>=1"),
    (["caption", "--lr", "nan"], "Invalid value for '--lr': 'nan' is not a finite number"),
    (["tta", "--part", "everything"], "Invalid value for '--part': 'everything' is not one of"),
    (["tta", "--single", "1.5"], "Invalid value for '--single': 1.5 is not in the range 0<=x<=1"),
])  # fmt: skip
def test_a_value_of_the_wrong_type_or_range_is_a_usage_error(first_party, args, message):
    result = _train(*args)
    assert result.exit_code == 2 and message in result.output


def test_an_unknown_task_is_the_usual_one_line_error(first_party):
    result = _train("sedl", "--epochs", "3")
    assert result.exit_code == 2 and "error: unknown task 'sedl'" in result.stderr and "hint:" in result.stderr


def test_the_trainer_receives_its_options_typed(first_party, monkeypatch, tmp_path):
    from edgeaudio.plugins.seld.task import SeldTask, SeldTrainOptions

    calls = []

    def train(self, out_dir, options):
        calls.append((out_dir, options))
        return {"ok": 1}

    monkeypatch.setattr(SeldTask, "train", train)
    result = _train("-o", str(tmp_path), "seld", "--epochs", "3", "--classes", "dog,cat", "--lr", "1e-4", "--no-progress",
                    "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert calls == [(str(tmp_path), SeldTrainOptions(epochs=3, classes=["dog", "cat"], lr=1e-4, progress=False))]
    assert json.loads(result.stdout) == {"ok": 1}


def test_a_task_without_trainer_options(tiny_plugin):
    helped = _train("tiny", "--help")
    assert helped.exit_code == 0 and "trainer:" not in helped.output
    assert _train("tiny", "--epochs", "1").exit_code == 2
    result = _train("tiny")
    assert result.exit_code == 2 and "error: task 'tiny' has no trainer" in result.stderr


def test_trainer_options_may_not_shadow_the_commands_own(tiny_plugin, monkeypatch):
    @dataclass
    class Shadowing:
        json: bool = field(default=False, metadata={"help": "Clashes with train's --json."})

    monkeypatch.setattr(tiny_plugin.TinyTask, "train_options", Shadowing)
    result = _train("tiny", "--help")
    assert result.exit_code == 1 and "declares trainer options that `edgeaudio train` uses itself: json" in result.stderr


@pytest.mark.slow
def test_a_tiny_real_training_through_the_command_line(first_party, tmp_path):
    """One epoch of 8 one-second crops of the enhancer's validation pairs, scored on two of them."""
    from edgeaudio.plugins.enhance.task import VALIDATION_DIR

    out = tmp_path / "run"
    result = _train("enhance", "-o", str(out), "--epochs", "1", "--items", "8", "--seconds", "1", "--batch-size", "4",
                    "--pairs", str(VALIDATION_DIR), "--test-clips", "2", "--threads", "1", "--no-progress", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    reported = json.loads(result.stdout)  # stdout holds the result alone; the trainer's lines went to stderr
    assert reported["weights"] == str(out / "weights.safetensors") and reported["epochs"] == {"model": 1}
    sidecar = json.loads((out / "weights.json").read_text())
    assert sidecar["training"]["model"]["epochs"] == 1 and sidecar["data"]["items_per_epoch"] == 8
    assert "--epochs 1" in sidecar["command"] and "--pairs" in sidecar["command"]
    assert sidecar["metrics"] == reported["metrics"]
