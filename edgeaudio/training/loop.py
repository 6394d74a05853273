"""The one training loop every task trainer uses.

A task plugin supplies a model, a dataset and a loss; ``fit`` owns everything around them so that
every task gets the same seeding, progress bar, checkpoints, resume and multi-process behaviour.
The parts live beside it: checkpoints and resume in checkpoints.py, joining a torchrun run in
distributed.py, per-epoch reseeding (what makes a resumed run bit-identical to an uninterrupted
one) in seeding.py, the run folder every trainer writes in run.py, and the weights files in
edgeaudio/weights.py. This module re-exports what trainers import from it.

Every finished epoch prints one line on stderr (on the main process: loss, metrics, learning rate,
seconds), also when stderr is a file and no progress bar shows, and appends the same record as a
JSON line to ``log_file``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from edgeaudio.errors import EdgeAudioError, UsageError
from edgeaudio.training.checkpoints import (
    BEST_WEIGHTS,
    EMA_WEIGHTS,
    LAST_WEIGHTS,
    RunState,
    resume_from_checkpoint,
    save_checkpoint,
    start_segment,
)
from edgeaudio.training.distributed import (
    Processes,
    is_main_process,
    joined_processes,
    main_process_first,
    process_group,
    say,
    share_from_main,
    wrap_for_processes,
)
from edgeaudio.training.ema import WeightAverage
from edgeaudio.training.seeding import SeededBatches, seed_everything
from edgeaudio.weights import load_init, load_weights, save_weights

__all__ = [
    "LossFn", "TrainConfig", "TrainResult", "ValFn", "fit", "is_main_process", "load_init", "load_weights",
    "main_process_first", "process_group", "save_weights", "seed_everything",
]  # fmt: skip

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], "torch.Tensor | tuple[torch.Tensor, Mapping[str, Any]]"]
ValFn = Callable[[nn.Module], Mapping[str, float]]


@dataclass
class TrainConfig:
    """Everything that decides a training run; stored in every checkpoint so a run explains itself.

    ``batch_size`` is per process: under ``torchrun`` with N processes each optimizer step sees
    N * batch_size samples. ``best_metric`` names a key of the epoch record: ``train_loss``,
    ``train_<log>`` for logs returned by the loss function, or ``val_<metric>`` for what ``val_fn``
    returns. ``ema``: keep an exponential moving average of the weights with this decay per
    optimizer step (say 0.999), saved beside every checkpoint as ``ema.safetensors``; validation
    and the best-epoch choice stay on the raw weights.
    ``log_file``: where each epoch's record is appended as a JSON line (default: ``out_dir/log.jsonl``);
    ``part``: the name of what is trained, for trainers that train several models into one run
    (it prefixes the epoch lines and is recorded in the log). ``options``: the trainer's own options
    (JSON-friendly), recorded per range of epochs, so a run resumed with other options says which
    epochs ran with which.
    """

    out_dir: str | Path
    epochs: int
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    grad_clip: float | None = None
    num_workers: int = 0
    resume: bool = True
    log_every: int = 50
    device: str = "auto"
    val_every: int = 1
    progress: bool = True
    best_metric: str = "train_loss"
    best_mode: str = "min"
    ema: float | None = None
    log_file: str | Path | None = None
    part: str | None = None
    options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.log_file = Path(self.log_file) if self.log_file is not None else self.out_dir / "log.jsonl"
        rules = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.lr > 0, "lr must be positive"),
            (self.weight_decay >= 0, "weight_decay must not be negative"),
            (self.seed >= 0, "seed must not be negative"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip must be positive or None"),
            (self.num_workers >= 0, "num_workers must not be negative"),
            (self.log_every >= 1, "log_every must be at least 1"),
            (self.val_every >= 1, "val_every must be at least 1"),
            (self.best_mode in ("min", "max"), "best_mode must be 'min' or 'max'"),
            (self.ema is None or 0 < self.ema < 1, "ema must lie between 0 and 1 (say 0.999) or be None"),
        ]
        for ok, message in rules:
            if not ok:
                raise UsageError(f"invalid training config: {message}")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "out_dir": str(self.out_dir), "log_file": str(self.log_file)}

    @property
    def prefix(self) -> str:
        """What starts this training's lines on stderr: ``[part] `` for a named part, else nothing."""
        return f"[{self.part}] " if self.part else ""


@dataclass
class TrainResult:
    """What a finished ``fit`` hands back; the paths are the same on every rank.

    ``segments``: the ranges of epochs that ran with the same options, ``[{"epochs": [first, last],
    "options": {...}}]`` (one unless the run was resumed with other options)."""

    last_checkpoint: Path
    best_checkpoint: Path | None
    ema_checkpoint: Path | None
    history: list[dict[str, float]]
    epochs_run: int
    best_metric: str = "train_loss"
    best_epoch: int | None = None
    best_value: float | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """What a run's sidecar records of this training: epochs, the best one, the option ranges and
        the per-epoch history."""
        return {
            "epochs": len(self.history),
            "epochs_this_run": self.epochs_run,
            "seconds": round(sum(record.get("seconds", 0.0) for record in self.history), 1),
            "best": {"metric": self.best_metric, "epoch": self.best_epoch, "value": self.best_value},
            "segments": self.segments,
            "history": self.history,
        }


def fit(
    model: nn.Module,
    train_dataset: Dataset,
    loss_fn: LossFn,
    config: TrainConfig,
    val_fn: ValFn | None = None,
    optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
    collate_fn: Callable[[list], Any] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``config.epochs`` epochs, checkpointing after each.

    - ``loss_fn(model, batch)`` returns a scalar tensor, or ``(loss, logs)`` where ``logs`` maps names
      to numbers averaged per epoch into ``train_<name>``. ``model`` is the model itself, also under
      torchrun: the loss function runs as the forward of the DistributedDataParallel wrapper, so
      whatever methods of the model it calls, the gradients are averaged across processes. The
      batch arrives already moved to the training device.
    - ``val_fn(model)`` returns validation metrics, recorded as ``val_<name>``. It runs on rank 0 only,
      under ``eval()`` and ``no_grad``, every ``val_every`` epochs and after the last one; the
      metrics are shared with the other ranks.
    - ``optimizer_factory(model)`` builds the optimizer; by default AdamW with ``config.lr`` and
      ``config.weight_decay``.
    - ``on_epoch_end(epoch, record)`` runs on every rank before that epoch's checkpoint is written, so
      changes it makes (say, to learning rates) are saved with it.

    With ``config.resume`` and a checkpoint in ``out_dir``, training continues after the last
    finished epoch ("resuming from epoch N" on stderr) and ends with the same weights an
    uninterrupted run would have; resumed with other options, it says which changed and records
    the epochs run with each.
    """
    if config.best_metric.startswith("val_") and val_fn is None:
        raise UsageError(
            f"best_metric '{config.best_metric}' is a validation metric but no val_fn was given",
            hint="pass val_fn, or choose best_metric='train_loss'",
        )
    with joined_processes(config.device) as procs:
        model.to(procs.device)
        optimizer = optimizer_factory(model) if optimizer_factory else _default_optimizer(model, config)
        ema = WeightAverage(model, config.ema) if config.ema else None
        run = (resume_from_checkpoint(model, optimizer, config, ema) if config.resume else None) or RunState()
        first_epoch = run.epoch
        start_segment(run, config)
        if procs.main:
            config.out_dir.mkdir(parents=True, exist_ok=True)
        step = wrap_for_processes(_LossOfModel(model, loss_fn), procs)
        batches = SeededBatches.create(train_dataset, config, procs, collate_fn)
        after_step = (lambda: ema.update(model)) if ema else None
        for epoch in range(first_epoch, config.epochs):
            started = time.perf_counter()
            record = {"epoch": epoch + 1}
            loader = batches.for_epoch(epoch)
            record.update(_train_epoch(step, model, loader, optimizer, config, procs, run, after_step))
            if val_fn is not None and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
                record.update(_validate(model, val_fn, procs))
            record.update(lr=optimizer.param_groups[0]["lr"], step=run.step, seconds=round(time.perf_counter() - started, 3))
            run.epoch = epoch + 1
            run.history.append(record)
            run.segments[-1]["epochs"][1] = run.epoch
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)
            _finish_epoch(model, optimizer, config, procs, run, record, ema)
    return TrainResult(
        last_checkpoint=config.out_dir / LAST_WEIGHTS,
        best_checkpoint=config.out_dir / BEST_WEIGHTS if run.best_epoch is not None else None,
        ema_checkpoint=config.out_dir / EMA_WEIGHTS if ema else None,
        history=run.history,
        epochs_run=max(config.epochs - first_epoch, 0),
        best_metric=config.best_metric,
        best_epoch=run.best_epoch,
        best_value=run.best_value,
        segments=[s for s in run.segments if s["epochs"][1] >= s["epochs"][0]],
    )


class _LossOfModel(nn.Module):
    """The model with the loss function as its forward: what the data-parallel wrapper wraps, so
    every call the loss makes on the model (``forward``, an offline helper, a submodule) happens
    inside the wrapper's forward and its gradients are averaged. Its state is the model's."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


def _default_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _train_epoch(step, model, loader, optimizer, config, procs, run, after_step=None) -> dict[str, float]:
    """One pass over this rank's shard; returns the epoch means over all ranks as ``train_*``.
    ``step(batch)`` is the loss (through the data-parallel wrapper under torchrun)."""
    epoch = run.epoch + 1
    step.train()
    means = _EpochMeans()
    hidden = None if config.progress and procs.main else True  # None: tqdm hides itself off a terminal
    with tqdm(total=len(loader), desc=f"{config.prefix}epoch {epoch}/{config.epochs}", disable=hidden, leave=False) as bar:
        for batch in loader:
            loss, logs = _split_loss(step(_to_device(batch, procs.device)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            if after_step is not None:
                after_step()
            run.step += 1
            means.add({**logs, "loss": loss})
            bar.update()
            if run.step % config.log_every == 0:
                _log_running_loss(bar, means.local("loss"), epoch, run.step)
        epoch_means = means.across(procs)  # the bar goes; the epoch line (_finish_epoch) stays
    if not np.isfinite(epoch_means["loss"]):
        raise EdgeAudioError(
            f"the training loss became {epoch_means['loss']} in epoch {epoch}",
            hint="lower lr or set grad_clip; the last good checkpoint is kept",
        )
    return {f"train_{name}": value for name, value in epoch_means.items()}


def _log_running_loss(bar, loss: float, epoch: int, step: int) -> None:
    """The one place a step syncs with the device: only every ``log_every`` steps."""
    bar.set_postfix(loss=f"{loss:.4g}")
    logger.debug("epoch %d step %d: running loss %.6g", epoch, step, loss)


def _split_loss(output) -> tuple[torch.Tensor, Mapping[str, Any]]:
    loss, logs = output if isinstance(output, tuple) else (output, {})
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise UsageError("loss_fn must return a scalar tensor, or (scalar tensor, dict of logs)")
    return loss, logs


def _to_device(batch, device: torch.device):
    """Move every tensor inside nested lists, tuples and dicts; leave everything else alone."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(_to_device(value, device) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


class _EpochMeans:
    """Per-batch averages of the loss and logs, summed on the device so steps need no sync."""

    def __init__(self) -> None:
        self.count = 0
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, values: Mapping[str, Any]) -> None:
        self.count += 1
        for name, value in values.items():
            value = torch.as_tensor(value).detach().double()
            self.sums[name] = self.sums[name] + value if name in self.sums else value

    def local(self, name: str) -> float:
        return self.sums[name].item() / self.count

    def across(self, procs: Processes) -> dict[str, float]:
        """Average over every batch of every rank, so all ranks record the same numbers."""
        names = sorted(self.sums)
        values = [self.sums[name] for name in names] + [torch.tensor(float(self.count), dtype=torch.float64)]
        totals = torch.stack([value.to(procs.device) for value in values])
        if procs.world_size > 1:
            dist.all_reduce(totals)
        return {name: (totals[i] / totals[-1]).item() for i, name in enumerate(names)}


def _validate(model: nn.Module, val_fn: ValFn, procs: Processes) -> dict[str, float]:
    metrics: dict[str, float] = {}
    if procs.main:
        model.eval()
        with torch.no_grad():
            metrics = {f"val_{name}": float(value) for name, value in val_fn(model).items()}
        model.train()
    return share_from_main(metrics, procs)


def _finish_epoch(model, optimizer, config: TrainConfig, procs: Processes, run: RunState, record, ema=None) -> None:
    """Track the best epoch, let rank 0 write the checkpoint, then hold every rank until it is on disk."""
    value = _best_candidate(record, config)
    improved = value is not None and (
        run.best_value is None or _better(value, run.best_value, config.best_mode)
    )
    if improved:
        run.best_value, run.best_epoch = value, run.epoch
    if procs.main:
        save_checkpoint(model, optimizer, config, run, save_best=improved, ema=ema)
        _append_log(config, record)
        say(f"{config.prefix}epoch {run.epoch}/{config.epochs}  {_metrics_line(record)}")
    if procs.world_size > 1:
        dist.barrier()


def _append_log(config: TrainConfig, record: dict[str, float]) -> None:
    """One JSON line per finished epoch, in the order epochs finished (a resumed run appends)."""
    config.log_file.parent.mkdir(parents=True, exist_ok=True)
    entry = {"part": config.part, **record} if config.part else dict(record)
    with open(config.log_file, "a") as log:
        log.write(json.dumps({**entry, "epochs": config.epochs}) + "\n")


def _better(value: float, best: float, mode: str) -> bool:
    return value < best if mode == "min" else value > best


def _best_candidate(record: dict[str, float], config: TrainConfig) -> float | None:
    """The epoch's value of the best metric; None when validation did not run this epoch."""
    if config.best_metric in record:
        return record[config.best_metric]
    validated = any(name.startswith("val_") for name in record)
    if validated or not config.best_metric.startswith("val_"):
        available = ", ".join(n for n in record if n.startswith(("train_", "val_")))
        raise UsageError(
            f"best_metric '{config.best_metric}' is not among the epoch's metrics ({available})",
            hint="set best_metric to one of those names",
        )
    return None


def _metrics_line(record: dict[str, float]) -> str:
    """``train_loss 0.123  val_F20 0.28  lr 0.002  12.3 s``: what a person reads per epoch."""
    shown = [f"{name} {value:.4g}" for name, value in record.items() if name not in ("epoch", "step", "seconds")]
    return "  ".join(shown + [f"{record.get('seconds', 0.0):.1f} s"])
