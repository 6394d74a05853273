"""The run folder every trainer writes (edgeaudio.training.TrainingRun), on a tiny trainer: one
layout, epoch lines on stderr and in log.jsonl, resume said plainly with option changes recorded
per range of epochs, the result as a table or JSON, and ``export --checkpoint`` of the run folder
(or a trainer checkpoint in it) that never takes trainer state for a config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from torch import nn

import tiny_task
from edgeaudio.cli import cli
from edgeaudio.errors import EdgeAudioError, UsageError
from edgeaudio.hookspecs import hookimpl


@dataclass(frozen=True)
class TinyTrainOptions:
    epochs: int = field(default=2, metadata={"help": "Epochs.", "min": 1})
    lr: float = field(default=0.01, metadata={"help": "Learning rate.", "min": 0})
    seed: int = field(default=0, metadata={"help": "Seed.", "min": 0})
    progress: bool = field(default=False, metadata={"help": "Show progress bars."})


class TrainableTiny(tiny_task.TinyTask):
    """The tiny streaming task with a trainer: it learns the scores of a fixed random teacher."""

    name = "trainable"
    train_options = TinyTrainOptions

    def default_config(self):
        return {"classes": tiny_task.CLASSES}

    def build_model(self):
        net = super().build_model()
        if self.config["classes"] != tiny_task.CLASSES:
            net.head = nn.Linear(tiny_task.HIDDEN, self.config["classes"])
        return net

    def train(self, out_dir, options=None):
        from edgeaudio.training import TrainingRun, fit

        o = options or TinyTrainOptions()
        with TrainingRun(self, out_dir, o) as run:
            model = self.build_model()
            clips = [torch.from_numpy(tiny_task._clip(seed)) for seed in range(8)]
            targets = [torch.rand(20, tiny_task.CLASSES, generator=torch.Generator().manual_seed(s)) for s in range(8)]
            data = list(zip(clips, targets))

            def loss_fn(net, batch):
                audio, target = batch
                state = torch.zeros(audio.shape[0], tiny_task.CHANNELS, tiny_task.HOP), torch.zeros(1, audio.shape[0], tiny_task.HIDDEN)
                return ((net(audio, *state)[0] - target) ** 2).mean()

            config = run.config(epochs=o.epochs, lr=o.lr, seed=o.seed, batch_size=4)
            result = fit(model, data, loss_fn, config)
            metrics = {"train_loss": result.history[-1]["train_loss"]}
            return run.finish(model, run.sidecar(self.config, result, data={"clips": 8}, metrics=metrics) if run.main else None)


class _Plugin:
    @hookimpl
    def register_tasks(self, register):
        register(TrainableTiny)


@pytest.fixture
def trainable(register_plugin):
    return register_plugin(_Plugin(), "trainable")


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_one_layout_with_a_sidecar_a_log_and_the_trainer_state_apart(trainable, tmp_path):
    result = TrainableTiny().train(str(tmp_path / "run"))
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {"weights.safetensors", "weights.json", "log.jsonl", "checkpoints"}
    assert {"last.safetensors", "last.json", "last.optim.safetensors"} <= {p.name for p in (run / "checkpoints").iterdir()}
    sidecar = json.loads((run / "weights.json").read_text())
    assert sidecar["task"] == "trainable" and sidecar["config"] == {"classes": 3} and sidecar["data"] == {"clips": 8}
    assert sidecar["command"] == f"edgeaudio train trainable -o {run}"  # every option at its default
    assert sidecar["training"]["model"]["segments"] == [{"epochs": [1, 2], "options": {"epochs": 2, "lr": 0.01, "seed": 0}}]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [1, 2] and all({"train_loss", "lr", "seconds"} <= set(e) for e in log)
    assert result == {"task": "trainable", "run": str(run), "weights": str(run / "weights.safetensors"),
                      "sidecar": str(run / "weights.json"), "epochs": {"model": 2}, "metrics": sidecar["metrics"]}


def test_resuming_says_so_and_records_option_changes_per_range_of_epochs(trainable, tmp_path, capsys):
    run = tmp_path / "run"
    TrainableTiny().train(str(run), TinyTrainOptions(epochs=2))
    capsys.readouterr()
    TrainableTiny().train(str(run), TinyTrainOptions(epochs=4, lr=0.005))
    said = capsys.readouterr().err
    assert "resuming from epoch 2 of 4: epoch 3 is next" in said
    assert "options changed since epoch 2: epochs 2 -> 4, lr 0.01 -> 0.005; epochs 3-4 run with the new values" in said
    assert [line.split("  ")[0] for line in said.splitlines() if line.startswith("epoch ")] == ["epoch 3/4", "epoch 4/4"]
    training = json.loads((run / "weights.json").read_text())["training"]["model"]
    assert training["segments"] == [{"epochs": [1, 2], "options": {"epochs": 2, "lr": 0.01, "seed": 0}},
                                    {"epochs": [3, 4], "options": {"epochs": 4, "lr": 0.005, "seed": 0}}]
    assert [r["lr"] for r in training["history"]] == [0.01, 0.01, 0.005, 0.005] and training["epochs_this_run"] == 2
    TrainableTiny().train(str(run), TinyTrainOptions(epochs=4, lr=0.005))
    assert "all 4 epochs are done" in capsys.readouterr().err
    assert len((run / "log.jsonl").read_text().splitlines()) == 4  # one line per epoch, over both commands


def test_options_are_checked_before_anything_runs(trainable, tmp_path):
    with pytest.raises(UsageError, match=r"invalid value for --epochs: 0 is below the minimum 1"):
        TrainableTiny().train(str(tmp_path / "run"), TinyTrainOptions(epochs=0))
    assert not (tmp_path / "run").exists()


TRAIN_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from edgeaudio.testing import registered_plugin
from test_training_run import _Plugin
from edgeaudio.cli import cli
with registered_plugin(_Plugin(), "trainable"):
    cli.main(["train", "trainable", "-o", sys.argv[2], "--epochs", "3"], prog_name="edgeaudio", standalone_mode=False)
"""


@pytest.mark.slow
def test_with_stderr_in_a_file_the_log_shows_one_line_per_epoch(tmp_path):
    err = tmp_path / "train.err"
    with open(err, "w") as stderr:
        done = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(Path(__file__).parent), str(tmp_path / "run")],
                              stdout=subprocess.PIPE, stderr=stderr, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, err.read_text()
    lines = err.read_text().splitlines()
    assert [line.split("  ")[0] for line in lines if line.startswith("epoch ")] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all("train_loss" in line and line.endswith(" s") for line in lines if line.startswith("epoch "))
    assert "\r" not in err.read_text()  # no progress bar in a file
    assert done.stdout.count("run:") == 1 and "export:   edgeaudio export trainable --checkpoint" in done.stdout


def test_the_result_is_a_short_table_or_json(trainable, tmp_path):
    shown = _cli("train", "trainable", "-o", tmp_path / "run", "--epochs", "1")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[:3] == [f"run:      {tmp_path / 'run'}", f"weights:  {tmp_path / 'run' / 'weights.safetensors'}",
                                             "epochs:   1"]
    assert "metric      value" in shown.stdout and len(shown.stdout.splitlines()) < 12
    machine = _cli("train", "trainable", "-o", tmp_path / "other", "--epochs", "1", "--json")
    assert json.loads(machine.stdout)["weights"] == str(tmp_path / "other" / "weights.safetensors")


def test_export_takes_the_run_folder_or_a_checkpoint_in_it_and_runs(trainable, tmp_path):
    run = tmp_path / "run"
    TrainableTiny().train(str(run))
    clip = tmp_path / "clip.wav"
    sf.write(clip, tiny_task._clip(99).T, 8000)
    for name, checkpoint in (("folder", run), ("state", run / "checkpoints" / "last.safetensors")):
        exported = _cli("export", "trainable", "--checkpoint", checkpoint, "--precision", "fp32", "--backend", "onnxruntime",
                        "-o", tmp_path / name)
        assert exported.exit_code == 0, exported.output
        note = "config: as" if name == "folder" else f"config: from {run / 'weights.json'} (last.safetensors is a trainer checkpoint"
        assert note in exported.stderr
        ran = _cli("run", tmp_path / name, "--input", clip)
        assert ran.exit_code == 0 and len([line for line in ran.stdout.splitlines() if line.startswith("{")]) == 20


def test_export_refuses_an_unfinished_run_and_a_checkpoint_without_its_run(trainable, tmp_path):
    from edgeaudio.api import export

    run = tmp_path / "run"
    TrainableTiny().train(str(run))
    (run / "weights.safetensors").unlink()
    with pytest.raises(UsageError, match="has not finished: it has no weights.safetensors yet"):
        export("trainable", checkpoint=str(run), log=lambda m: None)
    (run / "weights.json").unlink()
    with pytest.raises(UsageError, match=r"is a trainer checkpoint \(the state a run resumes from\), and its run has no weights.json"):
        export("trainable", checkpoint=str(run / "checkpoints" / "best.safetensors"), log=lambda m: None)


def test_weights_that_do_not_fit_say_which_run_made_them_and_what_differs(trainable, tmp_path):
    from edgeaudio.api import export
    from edgeaudio.training import save_weights

    run = tmp_path / "run"
    TrainableTiny().train(str(run))
    with pytest.raises(EdgeAudioError) as caught:
        export("trainable", checkpoint=str(run), config={"classes": 5}, log=lambda m: None)
    message = str(caught.value)
    assert f"(written by `edgeaudio train trainable -o {run}`)" in message
    assert "head.weight (file (3, 24), model (5, 24))" in message
    assert "differs from the one it was trained with: classes (trained: 3, here: 5)" in message
    loose = tmp_path / "loose.safetensors"
    save_weights(TrainableTiny({"classes": 5}).build_model(), loose)
    with pytest.raises(EdgeAudioError) as caught:
        export("trainable", checkpoint=str(loose), log=lambda m: None)
    assert "has no sidecar saying how it was trained" in caught.value.hint
