"""Checkpoints of a training run, written after every epoch and read back to resume.

Safetensors plus JSON only, never pickle, so opening one cannot run code:

- ``last.safetensors``        model weights after the latest finished epoch
- ``last.optim.safetensors``  the optimizer's tensors (moments, step counts)
- ``last.json``               everything else: epoch, step, best metric, config, history, the
                              ranges of epochs run with the same options, and the optimizer's
                              non-tensor state and param groups
- ``best.safetensors``        weights of the epoch with the best ``config.best_metric``
- ``ema.safetensors``         the weight average after the latest epoch, when ``config.ema`` keeps one
- ``history.json``            per-epoch train loss, validation metrics and seconds, for people
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from edgeaudio.errors import EdgeAudioError
from edgeaudio.staging import write_atomically
from edgeaudio.training.distributed import say
from edgeaudio.weights import load_weights, save_weights

if TYPE_CHECKING:
    from edgeaudio.training.loop import TrainConfig

LAST_WEIGHTS = "last.safetensors"
LAST_OPTIMIZER = "last.optim.safetensors"
LAST_STATE = "last.json"
BEST_WEIGHTS = "best.safetensors"
EMA_WEIGHTS = "ema.safetensors"
HISTORY = "history.json"

# Settings that change the maths of training: resuming with a different value is allowed but the
# result will no longer match an uninterrupted run, so the user is told and the run records which
# epochs ran with which (when the trainer passes its own options, those are compared instead).
_RESUME_SENSITIVE = ("epochs", "batch_size", "lr", "weight_decay", "seed", "grad_clip", "best_metric", "best_mode", "ema")
_COSMETIC_OPTIONS = ("progress",)  # trainer options that change how a run looks, not what it computes


@dataclass
class RunState:
    """The scalars that must survive a restart, mirrored into ``last.json``."""

    epoch: int = 0  # finished epochs
    step: int = 0  # optimizer steps taken
    best_value: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)  # [{"epochs": [first, last], "options": {...}}]


def save_checkpoint(model, optimizer, config: TrainConfig, run: RunState, save_best: bool, ema=None) -> None:
    """Write weights, optimizer tensors, then ``last.json`` last: the JSON is the commit point."""
    out = config.out_dir
    stamp = {"epoch": str(run.epoch)}
    write_atomically(out / LAST_WEIGHTS, lambda tmp: save_weights(model, tmp, stamp))
    if ema is not None:
        write_atomically(out / EMA_WEIGHTS, lambda tmp: save_weights(ema.shadow, tmp, stamp))
    tensors, optimizer_rest = _split_optimizer_state(optimizer.state_dict())
    write_atomically(out / LAST_OPTIMIZER, lambda tmp: save_file(tensors, str(tmp), metadata=stamp))
    if save_best:
        best_stamp = {**stamp, "metric": config.best_metric, "value": repr(run.best_value)}
        write_atomically(out / BEST_WEIGHTS, lambda tmp: save_weights(model, tmp, best_stamp))
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
        "segments": run.segments,
        "optimizer": optimizer_rest,
    }
    write_atomically(out / HISTORY, lambda tmp: tmp.write_text(json.dumps(run.history, indent=1)))
    write_atomically(out / LAST_STATE, lambda tmp: tmp.write_text(json.dumps(state, indent=1)))


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


def resume_from_checkpoint(model, optimizer, config: TrainConfig, ema=None) -> RunState | None:
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
    saved_lr = state["config"].get("lr")
    if saved_lr and saved_lr != config.lr:  # the saved param groups carry the old rate (and its schedule)
        for group in optimizer.param_groups:
            group["lr"] *= config.lr / saved_lr
    if state["epoch"] >= config.epochs:
        say(f"{config.prefix}all {state['epoch']} epochs are done in {out}: nothing left to train "
            "(raise --epochs to train on, or use another output folder to start over)")
    else:
        say(f"{config.prefix}resuming from epoch {state['epoch']} of {config.epochs}: epoch {state['epoch'] + 1} is next "
            f"(checkpoint in {out})")
    best = state["best"]
    same_best = (best["metric"], best["mode"]) == (config.best_metric, config.best_mode)
    return RunState(
        epoch=state["epoch"],
        step=state["step"],
        best_value=best["value"] if same_best else None,
        best_epoch=best["epoch"] if same_best else None,
        history=state["history"],
        segments=state.get("segments") or [{"epochs": [1, state["epoch"]], "options": None}],
    )


def start_segment(run: RunState, config: TrainConfig) -> None:
    """Open a new range of epochs when this run's options differ from those the last epochs ran
    with (or when nothing ran yet), and say what changed."""
    options = _segment_options(config)
    last = run.segments[-1] if run.segments else None
    if last is not None and last["options"] == options:
        return
    if last is not None and last["options"] is not None and run.epoch < config.epochs:
        changed = [f"{name} {last['options'].get(name)!r} -> {options.get(name)!r}"
                   for name in sorted(set(options) | set(last["options"])) if options.get(name) != last["options"].get(name)]
        say(f"{config.prefix}options changed since epoch {run.epoch}: {', '.join(changed)}; epochs {run.epoch + 1}-{config.epochs} "
            "run with the new values (the run records each range; the result will differ from an uninterrupted run)")
    run.segments.append({"epochs": [run.epoch + 1, run.epoch], "options": options})


def _segment_options(config: TrainConfig) -> dict[str, Any]:
    """What a range of epochs records: the trainer's options when it passed them, else the loop's
    settings that change the maths."""
    if config.options is not None:
        return {name: value for name, value in config.options.items() if name not in _COSMETIC_OPTIONS}
    current = config.to_json()
    return {name: current[name] for name in _RESUME_SENSITIVE}


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

