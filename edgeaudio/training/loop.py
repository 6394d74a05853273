"""The one training loop every task trainer uses.

A task plugin supplies a model, a dataset and a loss; ``fit`` owns everything around them so that
every task gets the same seeding, progress bar, checkpoints, resume and multi-process behaviour.

Checkpoints are safetensors plus JSON only, never pickle, so opening one cannot run code:

- ``last.safetensors``        model weights after the latest finished epoch
- ``last.optim.safetensors``  the optimizer's tensors (moments, step counts)
- ``last.json``               everything else: epoch, step, best metric, config, history and the
                              optimizer's non-tensor state and param groups
- ``best.safetensors``        weights of the epoch with the best ``config.best_metric``
- ``history.json``            per-epoch train loss, validation metrics and seconds, for people

Every random generator is reseeded at the start of each epoch from ``(seed, epoch, rank)``. That is
what makes a resumed run bit-identical to an uninterrupted one without storing generator states: no
state carries over an epoch boundary, so validation, callbacks or another rank drawing random numbers
cannot shift what the next epoch sees.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file, save_model
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from edgeaudio.errors import EdgeAudioError, UsageError
from edgeaudio.training.ema import WeightAverage

logger = logging.getLogger(__name__)

LAST_WEIGHTS = "last.safetensors"
LAST_OPTIMIZER = "last.optim.safetensors"
LAST_STATE = "last.json"
BEST_WEIGHTS = "best.safetensors"
EMA_WEIGHTS = "ema.safetensors"
HISTORY = "history.json"

# Settings that change the maths of training: resuming with a different value is allowed but the
# result will no longer match an uninterrupted run, so the user is told.
_RESUME_SENSITIVE = ("batch_size", "lr", "weight_decay", "seed", "grad_clip", "best_metric", "best_mode", "ema")

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


@dataclass
class _RunState:
    """The scalars that must survive a restart, mirrored into ``last.json``."""

    epoch: int = 0  # finished epochs
    step: int = 0  # optimizer steps taken
    best_value: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class _Processes:
    """Where this process sits in a (possibly single-process) data-parallel run."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """True on the process that should write files and print: rank 0, or the only process.

    Before ``fit`` has set up the process group this falls back to torchrun's ``RANK`` variable, so
    scripts can ask it at any point.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) at once; call it before building a model."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_weights(model: nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None) -> None:
    """Write a model's weights as safetensors; tied (shared) tensors are stored once."""
    save_model(model, str(path), metadata=dict(metadata or {}))


def load_weights(model: nn.Module, path: str | Path, new: tuple[str, ...] = ()) -> None:
    """Load safetensors weights strictly, checking every name and shape before touching the model.

    Checking first means a mismatch leaves the model as it was instead of half-loaded. ``new``:
    prefixes of names that may be absent from the file (parts added to a trained model, which
    keep their fresh initialisation).
    """
    path = Path(path)
    if not path.is_file():
        raise EdgeAudioError(f"no weights file at {path}", hint="check the path, or train the model first")
    try:
        tensors = load_file(path)
    except SafetensorError as exc:
        raise EdgeAudioError(f"{path} is not a readable safetensors file ({exc})") from exc
    expected = {k: v for k, v in model.state_dict().items() if k in tensors or not (new and k.startswith(new))}
    problems = _weight_mismatches(expected, tensors)
    if problems:
        raise EdgeAudioError(
            f"weights in {path} do not fit {type(model).__name__}: {'; '.join(problems)}",
            hint="check that the checkpoint was trained for this model and configuration",
        )
    model.load_state_dict(tensors, strict=False)


def load_init(model: nn.Module, init: str | Path, shipped: str | Path | None, new: tuple[str, ...] = ()) -> dict[str, str]:
    """Load the weights a fine-tuning run starts from: ``init`` is a .safetensors file, or
    ``default`` for ``shipped`` (the task's shipped checkpoint, None when there is none);
    ``new`` as for ``load_weights``. Returns their path and sha256, for the run's sidecar."""
    from edgeaudio.bundle import sha256_file

    path = shipped if init == "default" else init
    if not path or not Path(path).is_file():
        raise UsageError(f"no weights to start from at {path or 'the shipped location'}",
                         hint="pass a .safetensors file, or 'default' for the shipped weights")  # fmt: skip
    load_weights(model, path, new)
    return {"path": str(path), "sha256": sha256_file(path)}


def _weight_mismatches(expected: Mapping[str, torch.Tensor], loaded: Mapping[str, torch.Tensor]) -> list[str]:
    """Describe missing, unexpected and wrongly shaped names; names tied to a loaded tensor are fine."""
    loaded_storage = {_storage_key(expected[name]) for name in loaded if name in expected}
    missing = [n for n in expected if n not in loaded and _storage_key(expected[n]) not in loaded_storage]
    unexpected = [n for n in loaded if n not in expected]
    reshaped = [
        f"{n} (file {tuple(loaded[n].shape)}, model {tuple(expected[n].shape)})"
        for n in loaded
        if n in expected and loaded[n].shape != expected[n].shape
    ]
    groups = [("missing", missing), ("unexpected", unexpected), ("wrong shape", reshaped)]
    return [_name_sample(label, names) for label, names in groups if names]


def _storage_key(tensor: torch.Tensor) -> tuple:
    return tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape)


def _name_sample(label: str, names: list[str], shown: int = 5) -> str:
    more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
    return f"{len(names)} {label}: {', '.join(names[:shown])}{more}"


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
    with _joined_processes(config) as procs:
        model.to(procs.device)
        optimizer = optimizer_factory(model) if optimizer_factory else _default_optimizer(model, config)
        ema = WeightAverage(model, config.ema) if config.ema else None
        run = (_resume(model, optimizer, config, ema) if config.resume else None) or _RunState()
        first_epoch = run.epoch
        if procs.main:
            config.out_dir.mkdir(parents=True, exist_ok=True)
        trained = _wrap_for_processes(model, procs)
        batches = _SeededBatches.create(train_dataset, config, procs, collate_fn)
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


@contextmanager
def process_group(device: str = "auto") -> Iterator[torch.device]:
    """Join the torchrun process group when there is one (gloo on CPU, nccl on CUDA) for the
    block, and leave it afterwards, also on error; yields this process's device.

    ``fit`` joins on its own. A trainer that also prepares data or writes results around ``fit``
    wraps all of it, so that :func:`main_process_first` can hold the other ranks while rank 0
    writes. A group someone else set up is used as is and left to them; in one process this
    only resolves the device.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = _resolve_device(device, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    owns_group = world_size > 1 and not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    try:
        yield resolved
    finally:
        if owns_group:
            dist.destroy_process_group()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block on rank 0 first and on the other ranks once it is done there.

    For work whose result lands on disk, such as synthesizing a data set: rank 0 writes it while
    the others wait at a barrier, then they run the same block and find it written. Inside
    :func:`process_group`; without a group (one process) it just runs the block.
    """
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if distributed and not is_main_process():
        dist.barrier()
    yield
    if distributed and is_main_process():
        dist.barrier()


@contextmanager
def _joined_processes(config: TrainConfig) -> Iterator[_Processes]:
    with process_group(config.device) as device:
        rank = dist.get_rank() if dist.is_initialized() else 0
        yield _Processes(rank=rank, world_size=int(os.environ.get("WORLD_SIZE", "1")), device=device)


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise UsageError(
            f"device '{name}' was asked for but torch sees no CUDA GPU", hint="use device='auto' or 'cpu'"
        )
    if device.index is None:
        device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


def _default_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _wrap_for_processes(model: nn.Module, procs: _Processes) -> nn.Module:
    if procs.world_size == 1:
        return model
    device_ids = [procs.device.index] if procs.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


@dataclass
class _SeededBatches:
    """A shuffling loader whose order and worker seeds depend only on (seed, epoch, rank).

    The generator shuffles (the DistributedSampler does under torchrun, seeded with ``config.seed``)
    and draws the base seed from which torch seeds each worker's python, numpy and torch
    generators, so augmentation inside workers is reproducible too.
    """

    loader: DataLoader
    generator: torch.Generator
    seed: int
    rank: int

    @classmethod
    def create(cls, dataset, config: TrainConfig, procs: _Processes, collate_fn) -> _SeededBatches:
        sampler = None
        if procs.world_size > 1:
            sampler = DistributedSampler(dataset, procs.world_size, procs.rank, seed=config.seed)
        generator = torch.Generator()
        loader = DataLoader(
            dataset,
            batch_size=config.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=config.num_workers,
            collate_fn=collate_fn,
            generator=generator,
            pin_memory=procs.device.type == "cuda",
        )
        if len(loader) == 0:
            raise UsageError("the training dataset is empty")
        return cls(loader, generator, config.seed, procs.rank)

    def for_epoch(self, epoch: int) -> DataLoader:
        """Reseed the global generators and the loader for ``epoch``; nothing carries over epochs."""
        global_seed, loader_seed = np.random.SeedSequence([self.seed, epoch, self.rank]).generate_state(2)
        seed_everything(int(global_seed))
        self.generator.manual_seed(int(loader_seed))
        if isinstance(self.loader.sampler, DistributedSampler):
            self.loader.sampler.set_epoch(epoch)
        return self.loader


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

    def across(self, procs: _Processes) -> dict[str, float]:
        """Average over every batch of every rank, so all ranks record the same numbers."""
        names = sorted(self.sums)
        values = [self.sums[name] for name in names] + [torch.tensor(float(self.count), dtype=torch.float64)]
        totals = torch.stack([value.to(procs.device) for value in values])
        if procs.world_size > 1:
            dist.all_reduce(totals)
        return {name: (totals[i] / totals[-1]).item() for i, name in enumerate(names)}


def _validate(model: nn.Module, val_fn: ValFn, procs: _Processes) -> dict[str, float]:
    metrics: dict[str, float] = {}
    if procs.main:
        model.eval()
        with torch.no_grad():
            metrics = {f"val_{name}": float(value) for name, value in val_fn(model).items()}
        model.train()
    return _share_from_main(metrics, procs)


def _share_from_main(metrics: dict[str, float], procs: _Processes) -> dict[str, float]:
    """Send rank 0's metrics to every rank as JSON bytes (broadcast_object_list would pickle)."""
    if procs.world_size == 1:
        return metrics
    payload = torch.tensor(list(json.dumps(metrics).encode()), dtype=torch.uint8, device=procs.device)
    size = torch.tensor([payload.numel()], dtype=torch.int64, device=procs.device)
    dist.broadcast(size, src=0)
    if not procs.main:
        payload = torch.empty(int(size.item()), dtype=torch.uint8, device=procs.device)
    dist.broadcast(payload, src=0)
    return json.loads(bytes(payload.cpu().tolist()).decode())


def _finish_epoch(model, optimizer, config: TrainConfig, procs: _Processes, run: _RunState, record, ema=None) -> None:
    """Track the best epoch, let rank 0 write the checkpoint, then hold every rank until it is on disk."""
    value = _best_candidate(record, config)
    improved = value is not None and (
        run.best_value is None or _better(value, run.best_value, config.best_mode)
    )
    if improved:
        run.best_value, run.best_epoch = value, run.epoch
    if procs.main:
        _save_checkpoint(model, optimizer, config, run, save_best=improved, ema=ema)
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


def _save_checkpoint(model, optimizer, config: TrainConfig, run: _RunState, save_best: bool, ema=None) -> None:
    """Write weights, optimizer tensors, then ``last.json`` last: the JSON is the commit point."""
    out = config.out_dir
    stamp = {"epoch": str(run.epoch)}
    _write_atomically(out / LAST_WEIGHTS, lambda tmp: save_weights(model, tmp, stamp))
    if ema is not None:
        _write_atomically(out / EMA_WEIGHTS, lambda tmp: save_weights(ema.shadow, tmp, stamp))
    tensors, optimizer_rest = _split_optimizer_state(optimizer.state_dict())
    _write_atomically(out / LAST_OPTIMIZER, lambda tmp: save_file(tensors, str(tmp), metadata=stamp))
    if save_best:
        best_stamp = {**stamp, "metric": config.best_metric, "value": repr(run.best_value)}
        _write_atomically(out / BEST_WEIGHTS, lambda tmp: save_weights(model, tmp, best_stamp))
    state = {
        "epoch": run.epoch,
        "step": run.step,
        "best": {
            "metric": config.best_metric,
            "mode": config.best_mode,
            "value": run.best_value,
            "epoch": run.best_epoch,
        },
        "config": config.to_json(),
        "history": run.history,
        "optimizer": optimizer_rest,
    }
    _write_atomically(out / HISTORY, lambda tmp: tmp.write_text(json.dumps(run.history, indent=1)))
    _write_atomically(out / LAST_STATE, lambda tmp: tmp.write_text(json.dumps(state, indent=1)))


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write beside the target and rename, so a crash never leaves a half-written file behind."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _split_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors keyed ``<param index>.<name>`` for safetensors; scalars and param groups for JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"state": scalars, "param_groups": state_dict["param_groups"]}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict, template: dict) -> dict:
    """Inverse of ``_split_optimizer_state``; JSON turned tuples (Adam's betas) into lists, so the
    fresh optimizer's own param groups say which values to turn back."""
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    for index, values in rest["state"].items():
        state.setdefault(int(index), {}).update(values)
    saved_groups, fresh_groups = rest["param_groups"], template["param_groups"]
    if len(saved_groups) != len(fresh_groups):
        raise EdgeAudioError(
            f"the checkpoint's optimizer has {len(saved_groups)} parameter groups, "
            f"this optimizer {len(fresh_groups)}",
            hint="resume with the same optimizer_factory, or pass resume=False",
        )
    groups = [
        {key: tuple(value) if isinstance(fresh.get(key), tuple) else value for key, value in saved.items()}
        for saved, fresh in zip(saved_groups, fresh_groups)
    ]
    return {"state": state, "param_groups": groups}


def _resume(model, optimizer, config: TrainConfig, ema=None) -> _RunState | None:
    """Load the last checkpoint in ``out_dir`` into model, optimizer and weight average; None when
    there is none. A run that kept no average starts one from the loaded weights."""
    out = config.out_dir
    if not (out / LAST_STATE).is_file():
        return None
    state = json.loads((out / LAST_STATE).read_text())
    for name in (LAST_WEIGHTS, LAST_OPTIMIZER):
        _check_stamp(out / name, state["epoch"])
    load_weights(model, out / LAST_WEIGHTS)
    if ema is not None:
        if (out / EMA_WEIGHTS).is_file():
            _check_stamp(out / EMA_WEIGHTS, state["epoch"])
            load_weights(ema.shadow, out / EMA_WEIGHTS)
        else:
            ema.shadow.load_state_dict(model.state_dict())
    tensors = load_file(out / LAST_OPTIMIZER)
    try:
        optimizer.load_state_dict(_join_optimizer_state(tensors, state["optimizer"], optimizer.state_dict()))
    except (ValueError, KeyError) as exc:
        raise EdgeAudioError(
            f"the optimizer state in {out} does not fit this optimizer ({exc})",
            hint="resume with the same model and optimizer_factory, or pass resume=False",
        ) from exc
    _warn_on_changed_config(state["config"], config)
    if is_main_process():
        logger.info("resuming from %s after epoch %d", out, state["epoch"])
    best = state["best"]
    same_best = (best["metric"], best["mode"]) == (config.best_metric, config.best_mode)
    return _RunState(
        epoch=state["epoch"],
        step=state["step"],
        best_value=best["value"] if same_best else None,
        best_epoch=best["epoch"] if same_best else None,
        history=state["history"],
    )


def _check_stamp(path: Path, epoch: int) -> None:
    """A crash between writing the weights and ``last.json`` leaves epochs that disagree; refuse those."""
    if not path.is_file():
        raise EdgeAudioError(f"checkpoint file {path} is missing", hint="pass resume=False to start over")
    with safe_open(str(path), framework="pt") as handle:
        stamped = (handle.metadata() or {}).get("epoch")
    if stamped != str(epoch):
        raise EdgeAudioError(
            f"{path} is from epoch {stamped} but last.json from epoch {epoch}; the checkpoint is incomplete",
            hint="delete the directory or pass resume=False to start over",
        )


def _warn_on_changed_config(saved: Mapping[str, Any], config: TrainConfig) -> None:
    current = config.to_json()
    changed = [name for name in _RESUME_SENSITIVE if saved.get(name) != current[name]]
    if changed and is_main_process():
        logger.warning(
            "resuming with changed %s; the result will differ from an uninterrupted run", ", ".join(changed)
        )
