"""The one training loop every task trainer uses.

A task plugin supplies a model, a dataset and a loss; ``fit`` owns everything around them so that
every task gets the same seeding, progress bar, checkpoints, resume and multi-process behaviour.
The parts live beside it: checkpoints and resume in checkpoints.py, joining a torchrun run in
distributed.py, per-epoch reseeding (what makes a resumed run bit-identical to an uninterrupted
one) in seeding.py, and the weights files in edgeaudio/weights.py. This module re-exports what
trainers import from it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
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
)
from edgeaudio.training.distributed import (
    Processes,
    is_main_process,
    joined_processes,
    main_process_first,
    process_group,
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

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
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
        return {**asdict(self), "out_dir": str(self.out_dir)}


@dataclass
class TrainResult:
    """What a finished ``fit`` hands back; the paths are the same on every rank."""

    last_checkpoint: Path
    best_checkpoint: Path | None
    ema_checkpoint: Path | None
    history: list[dict[str, float]]
    epochs_run: int


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
      to numbers averaged per epoch into ``train_<name>``. Under torchrun ``model`` is the
      DistributedDataParallel wrapper: call it (``model(x)``) so gradients get synchronised.
      The batch arrives already moved to the training device.
    - ``val_fn(model)`` returns validation metrics, recorded as ``val_<name>``. It runs on rank 0 only,
      under ``eval()`` and ``no_grad``, every ``val_every`` epochs and after the last one; the
      metrics are shared with the other ranks.
    - ``optimizer_factory(model)`` builds the optimizer; by default AdamW with ``config.lr`` and
      ``config.weight_decay``.
    - ``on_epoch_end(epoch, record)`` runs on every rank before that epoch's checkpoint is written, so
      changes it makes (say, to learning rates) are saved with it.

    With ``config.resume`` and a checkpoint in ``out_dir``, training continues after the last
    finished epoch and ends with the same weights an uninterrupted run would have.
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
        if procs.main:
            config.out_dir.mkdir(parents=True, exist_ok=True)
        trained = wrap_for_processes(model, procs)
        batches = SeededBatches.create(train_dataset, config, procs, collate_fn)
        after_step = (lambda: ema.update(model)) if ema else None
        for epoch in range(first_epoch, config.epochs):
            started = time.perf_counter()
            record = {"epoch": epoch + 1}
            loader = batches.for_epoch(epoch)
            record.update(_train_epoch(trained, loader, loss_fn, optimizer, config, procs, run, after_step))
            if val_fn is not None and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
                record.update(_validate(model, val_fn, procs))
            record.update(step=run.step, seconds=round(time.perf_counter() - started, 3))
            run.epoch = epoch + 1
            run.history.append(record)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)
            _finish_epoch(model, optimizer, config, procs, run, record, ema)
    return TrainResult(
        last_checkpoint=config.out_dir / LAST_WEIGHTS,
        best_checkpoint=config.out_dir / BEST_WEIGHTS if run.best_epoch is not None else None,
        ema_checkpoint=config.out_dir / EMA_WEIGHTS if ema else None,
        history=run.history,
        epochs_run=max(config.epochs - first_epoch, 0),
    )


def _default_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _train_epoch(model, loader, loss_fn, optimizer, config, procs, run, after_step=None) -> dict[str, float]:
    """One pass over this rank's shard; returns the epoch means over all ranks as ``train_*``."""
    epoch = run.epoch + 1
    model.train()
    means = _EpochMeans()
    hidden = None if config.progress and procs.main else True  # None: tqdm hides itself off a terminal
    with tqdm(total=len(loader), desc=f"epoch {epoch}/{config.epochs}", disable=hidden) as bar:
        for batch in loader:
            loss, logs = _split_loss(loss_fn(model, _to_device(batch, procs.device)))
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
        epoch_means = means.across(procs)
        bar.set_postfix(loss=f"{epoch_means['loss']:.4g}")  # the bar left on screen shows the epoch mean
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
        logger.info("epoch %d/%d: %s", run.epoch, config.epochs, _metrics_line(record))
    if procs.world_size > 1:
        dist.barrier()


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
    return "  ".join(f"{name} {value:.6g}" for name, value in record.items() if name not in ("epoch", "step"))
