"""The shared training loop: learning, seeding, resume, safe checkpoints and torchrun data parallel."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

from edgeaudio.errors import EdgeAudioError, UsageError
from edgeaudio.training import TrainConfig, fit, load_weights, save_weights

TRUE_WEIGHTS = torch.tensor([1.0, -2.0, 0.5, 3.0])


class NoisyRegression(Dataset):
    """y = x . w + 0.5, with noise drawn from numpy at read time so worker seeding matters."""

    def __init__(self, n: int = 64, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=generator)
        self.y = self.x @ TRUE_WEIGHTS + 0.5

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int):
        noise = torch.tensor(np.random.normal(0.0, 0.01), dtype=torch.float32)
        return self.x[index], self.y[index] + noise


def make_model(init_seed: int = 0) -> nn.Module:
    """Small MLP with dropout, so the global torch generator influences training too."""
    torch.manual_seed(init_seed)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 1))


def mse_loss(model, batch):
    x, y = batch
    error = model(x).squeeze(-1) - y
    return (error**2).mean(), {"mae": error.abs().mean()}


def held_out_val(model) -> dict[str, float]:
    data = NoisyRegression(n=32, seed=1)
    return {"loss": torch.mean((model(data.x).squeeze(-1) - data.y) ** 2).item()}


def train(out_dir, model=None, val_fn=None, optimizer_factory=None, **overrides):
    """fit() on the synthetic regression with small defaults; ``overrides`` go to TrainConfig."""
    settings = dict(out_dir=out_dir, epochs=4, batch_size=8, lr=0.01, seed=3, progress=False)
    config = TrainConfig(**{**settings, **overrides})
    model = make_model() if model is None else model
    return fit(model, NoisyRegression(), mse_loss, config, val_fn=val_fn, optimizer_factory=optimizer_factory)


CHECKPOINT_FILES = {
    "last.safetensors", "last.optim.safetensors", "last.json", "best.safetensors", "history.json", "log.jsonl"
}


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_loss_decreases_and_val_runs_every_epoch(tmp_path):
    calls = []

    def val_fn(model):
        calls.append(model.training)
        return held_out_val(model)

    result = train(tmp_path, val_fn=val_fn, epochs=6, best_metric="val_loss")

    losses = [record["train_loss"] for record in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert calls == [False] * 6  # once per epoch, in eval mode
    assert result.epochs_run == 6
    assert all({"train_mae", "val_loss", "seconds", "step"} <= record.keys() for record in result.history)
    assert json.loads((tmp_path / "history.json").read_text()) == result.history

    best_epoch = min(result.history, key=lambda record: record["val_loss"])["epoch"]
    with safe_open(str(result.best_checkpoint), framework="pt") as handle:
        assert handle.metadata()["epoch"] == str(best_epoch)


def test_val_every_skips_epochs_but_always_validates_the_last(tmp_path):
    result = train(tmp_path, val_fn=held_out_val, epochs=3, val_every=2)
    assert ["val_loss" in record for record in result.history] == [False, True, True]


def test_same_seed_gives_identical_weights(tmp_path):
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        model = make_model()
        train(tmp_path / name, model, seed=seed, num_workers=1)
        runs.append(weights(model))

    assert_same_weights(runs[0], runs[1])
    assert not torch.equal(runs[0]["0.weight"], runs[2]["0.weight"])


def without_seconds(history):
    return [{key: value for key, value in record.items() if key != "seconds"} for record in history]


def sgd_with_momentum(model):
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)


@pytest.mark.parametrize("optimizer_factory", [None, sgd_with_momentum], ids=["adamw", "sgd"])
def test_resume_matches_an_uninterrupted_run(tmp_path, optimizer_factory):
    def run(out_dir, model, epochs=4):
        return train(out_dir, model, held_out_val, optimizer_factory, epochs=epochs, best_metric="val_loss")

    whole = make_model()
    whole_result = run(tmp_path / "whole", whole)
    run(tmp_path / "split", make_model(), epochs=2)
    resumed = make_model(init_seed=99)  # a different start: the checkpoint must overwrite it
    resumed_result = run(tmp_path / "split", resumed)

    assert resumed_result.epochs_run == 2
    assert_same_weights(weights(whole), weights(resumed))
    assert without_seconds(resumed_result.history) == without_seconds(whole_result.history)
    for name in ("last.optim.safetensors", "best.safetensors"):
        whole_file, split_file = str(tmp_path / "whole" / name), str(tmp_path / "split" / name)
        with safe_open(whole_file, "pt") as a, safe_open(split_file, "pt") as b:
            assert a.metadata() == b.metadata()
            for key in a.keys():
                assert torch.equal(a.get_tensor(key), b.get_tensor(key)), (name, key)

    assert run(tmp_path / "split", make_model()).epochs_run == 0


def test_resume_false_starts_over(tmp_path):
    train(tmp_path, epochs=2)
    result = train(tmp_path, epochs=2, resume=False)
    assert result.epochs_run == 2
    assert [record["epoch"] for record in result.history] == [1, 2]


def test_checkpoints_are_safetensors_and_json_only(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while training")

    for module, name in ((torch, "save"), (pickle, "dump"), (pickle, "dumps")):
        monkeypatch.setattr(module, name, forbidden)

    train(tmp_path, val_fn=held_out_val, epochs=2)

    files = {path.name for path in tmp_path.iterdir()}
    assert files == CHECKPOINT_FILES
    for name in files:
        if name.endswith(".safetensors"):
            with safe_open(str(tmp_path / name), framework="pt") as handle:
                assert handle.metadata()["epoch"] == "2"
        elif name.endswith(".jsonl"):
            assert [json.loads(line)["epoch"] for line in (tmp_path / name).read_text().splitlines()] == [1, 2]
        else:
            json.loads((tmp_path / name).read_text())


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    model = make_model()
    calls = []

    def loss_after_one_epoch_is_nan(model, batch):
        calls.append(1)
        loss, _ = mse_loss(model, batch)
        return loss * float("nan") if len(calls) > 8 else loss  # 8 batches per epoch

    config = TrainConfig(out_dir=tmp_path, epochs=3, batch_size=8, progress=False)
    with pytest.raises(EdgeAudioError, match="epoch 2"):
        fit(model, NoisyRegression(), loss_after_one_epoch_is_nan, config)
    assert json.loads((tmp_path / "last.json").read_text())["epoch"] == 1


def test_load_weights_names_mismatched_keys(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(make_model(), path)
    other = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

    before = weights(other)
    with pytest.raises(EdgeAudioError) as caught:
        load_weights(other, path)

    message = str(caught.value)
    assert "2 missing: 2.weight, 2.bias" in message
    assert "2 unexpected: 3.bias, 3.weight" in message
    assert "2 wrong shape: 0.bias (file (16,), model (8,)), 0.weight (file (16, 4), model (8, 4))" in message
    assert_same_weights(before, weights(other))  # nothing half-loaded


def test_load_weights_lets_named_new_parts_keep_their_initialisation(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(nn.ModuleDict({"body": nn.Linear(4, 4)}), path)
    grown = nn.ModuleDict({"body": nn.Linear(4, 4), "head": nn.Linear(4, 2)})
    head = weights(grown["head"])
    load_weights(grown, path, new=("head.",))
    assert torch.equal(grown["body"].weight, load_file(path)["body.weight"])
    assert_same_weights(head, weights(grown["head"]))
    with pytest.raises(EdgeAudioError, match="2 missing: head.weight, head.bias"):
        load_weights(grown, path)  # without naming them, a missing part is still an error
    save_weights(grown, path)
    with pytest.raises(EdgeAudioError, match="wrong shape: head.bias"):  # a new part the file has must still fit
        load_weights(nn.ModuleDict({"body": nn.Linear(4, 4), "head": nn.Linear(4, 3)}), path, new=("head.",))


def test_load_weights_round_trips_tied_weights(tmp_path):
    def tied_model():
        embed, head = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
        head.weight = embed.weight
        return nn.ModuleDict({"embed": embed, "head": head})

    source, target = tied_model(), tied_model()
    save_weights(source, tmp_path / "tied.safetensors")
    load_weights(target, tmp_path / "tied.safetensors")
    assert torch.equal(target["head"].weight, source["embed"].weight)
    assert target["head"].weight is target["embed"].weight


def test_weight_average_moves_each_parameter_once_and_copies_buffers():
    from edgeaudio.training.ema import WeightAverage

    model = nn.Sequential(nn.Linear(3, 3, bias=False), nn.BatchNorm1d(3), nn.Linear(3, 3, bias=False))
    model[2].weight = model[0].weight  # tied: one parameter under two names
    before = weights(model)
    average = WeightAverage(model, decay=0.75)
    with torch.no_grad():
        model[0].weight.add_(4.0)
        model[1].running_mean.fill_(2.0)
        model[1].bias.fill_(-1.0)
    average.update(model)
    after = average.shadow.state_dict()
    assert torch.allclose(after["0.weight"], before["0.weight"] + 1.0)  # 0.75 * w + 0.25 * (w + 4)
    assert after["2.weight"].data_ptr() == after["0.weight"].data_ptr()
    assert torch.allclose(after["1.bias"], torch.full((3,), -0.25))
    assert torch.equal(after["1.running_mean"], torch.full((3,), 2.0))
    assert not any(p.requires_grad for p in average.shadow.parameters())


def test_weight_average_is_saved_with_each_checkpoint_and_resumes(tmp_path):
    whole = train(tmp_path / "whole", make_model(), ema=0.9)
    assert whole.ema_checkpoint == tmp_path / "whole" / "ema.safetensors"
    train(tmp_path / "split", make_model(), ema=0.9, epochs=2)
    split = train(tmp_path / "split", make_model(init_seed=99), ema=0.9)
    assert split.epochs_run == 2
    with safe_open(str(whole.ema_checkpoint), "pt") as a, safe_open(str(split.ema_checkpoint), "pt") as b:
        assert a.metadata() == b.metadata() == {"epoch": "4"}
        for key in a.keys():
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key
    raw, averaged = make_model(), make_model()
    load_weights(raw, whole.last_checkpoint)
    load_weights(averaged, whole.ema_checkpoint)
    assert not torch.equal(raw[0].weight, averaged[0].weight)
    plain = train(tmp_path / "plain", make_model())
    assert plain.ema_checkpoint is None
    with safe_open(str(whole.last_checkpoint), "pt") as a, safe_open(str(plain.last_checkpoint), "pt") as b:
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())  # the average never steers training


def test_bad_settings_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="epochs"):
        TrainConfig(out_dir=tmp_path, epochs=0)
    with pytest.raises(UsageError, match="ema must lie between 0 and 1"):
        TrainConfig(out_dir=tmp_path, epochs=1, ema=1.0)
    with pytest.raises(UsageError, match="val_fn"):
        train(tmp_path, best_metric="val_loss")
    with pytest.raises(UsageError, match="val_accuracy"):
        train(tmp_path, val_fn=held_out_val, best_metric="val_accuracy")


DDP_SCRIPT = """
import json, os, sys
import torch
from torch import nn
from torch.utils.data import Dataset
from edgeaudio.training import TrainConfig, fit, is_main_process

class Indexed(Dataset):
    def __init__(self):
        self.x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.5
    def __len__(self):
        return 64
    def __getitem__(self, i):
        return i, self.x[i], self.y[i]

seen, epochs, main_flags = [], [], []

def loss_fn(model, batch):
    index, x, y = batch
    seen.extend(index.tolist())
    return ((model(x).squeeze(-1) - y) ** 2).mean()

def val_fn(model):
    data = Indexed()
    return {"loss": ((model(data.x).squeeze(-1) - data.y) ** 2).mean().item()}

def on_epoch_end(epoch, record):
    epochs.append(list(seen))
    seen.clear()
    main_flags.append(is_main_process())

out_dir, report_dir = sys.argv[1], sys.argv[2]
torch.manual_seed(int(os.environ["RANK"]))  # different inits: DDP must start every rank from rank 0's
config = TrainConfig(
    out_dir=out_dir, epochs=12, batch_size=8, lr=0.1, seed=5, progress=False, best_metric="val_loss"
)
model = nn.Linear(4, 1)
result = fit(model, Indexed(), loss_fn, config, val_fn=val_fn, on_epoch_end=on_epoch_end)
weights = {name: tensor.tolist() for name, tensor in model.state_dict().items()}
report = {"epochs": epochs, "main": main_flags, "history": result.history, "weights": weights}
with open(os.path.join(report_dir, f"rank{os.environ['RANK']}.json"), "w") as f:
    json.dump(report, f)
"""


@pytest.mark.slow
def test_torchrun_data_parallel_on_cpu(tmp_path):
    script, out_dir, report_dir = tmp_path / "train.py", tmp_path / "out", tmp_path / "reports"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    report_dir.mkdir()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*torchrun, str(script), str(out_dir), str(report_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]

    assert {path.name for path in out_dir.iterdir()} == CHECKPOINT_FILES
    ranks = [json.loads((report_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["main"] for r in ranks] == [[True] * 12, [False] * 12]
    for shard0, shard1 in zip(ranks[0]["epochs"], ranks[1]["epochs"]):
        assert len(shard0) == len(shard1) == 32
        assert set(shard0).isdisjoint(shard1)
        assert set(shard0) | set(shard1) == set(range(64))
    assert ranks[0]["epochs"][0] != ranks[0]["epochs"][1]  # reshuffled each epoch

    saved = load_file(out_dir / "last.safetensors")
    saved_weights = {name: tensor.tolist() for name, tensor in saved.items()}
    assert ranks[0]["weights"] == ranks[1]["weights"] == saved_weights  # ranks stayed in step

    history = ranks[0]["history"]
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in ranks[1]["history"]]
    assert [r["val_loss"] for r in history] == [r["val_loss"] for r in ranks[1]["history"]]
    assert history[-1]["val_loss"] < 0.01 * history[0]["train_loss"]
    state = json.loads((out_dir / "last.json").read_text())
    assert state["epoch"] == 12 and state["step"] == 12 * 4


@pytest.mark.parametrize("clipped", [False, True])
def test_cosine_adamw_decays_from_lr_to_the_floor(clipped):
    from edgeaudio.training import cosine_adamw

    factory, on_epoch_end = cosine_adamw(0.01, epochs=4, floor=0.1, weight_decay=0.0, clipped=clipped)
    optimizer = factory(nn.Linear(2, 2))
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]["lr"] == 0.01
    rates = []
    for epoch in range(1, 5):
        on_epoch_end(epoch, {})
        rates.append(optimizer.param_groups[0]["lr"])
    half = 0.5 * (1 + np.cos(np.pi / 4)), 0.5, 0.5 * (1 + np.cos(3 * np.pi / 4)), 0.0
    expected = [0.01 * (max(0.1, c) if clipped else 0.1 + 0.9 * c) for c in half]
    np.testing.assert_allclose(rates, expected, rtol=1e-12)
    assert rates[-1] == pytest.approx(0.001)
