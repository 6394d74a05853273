"""The folder every trainer writes, the same for every task:

    OUT/weights.safetensors   the trained model: what ``edgeaudio export TASK --checkpoint OUT`` takes
    OUT/weights.json          its sidecar: task, config (what export builds the model from), command,
                              options, data provenance, metrics, and per trained part the epochs,
                              the best one, the option ranges and the history
    OUT/log.jsonl             one JSON line per finished epoch (also printed on stderr)
    OUT/checkpoints/          the trainer's state to resume from (``checkpoints/<part>/`` for trainers
                              that train several models, e.g. a vocoder and a generator)
    OUT/parts/                finished parts of such trainers (``<part>.safetensors`` + ``.json``)
    OUT/data/                 data the trainer synthesized, when it synthesizes any

A trainer opens a :class:`TrainingRun` around everything it does. The run checks the options
before any data is made, joins the torchrun process group (so data parallel works the same for
every trainer: rank 0 prepares data on disk first, every rank trains its shard, rank 0 alone writes
and prints), builds each :class:`TrainConfig` for this layout, and writes the weights and sidecar
once. Running the same command again resumes.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from edgeaudio.options import check, to_args, to_json
from edgeaudio.training.distributed import is_main_process, process_group, say
from edgeaudio.training.loop import TrainConfig, TrainResult
from edgeaudio.weights import RUN_CHECKPOINTS, RUN_WEIGHTS, save_weights

if TYPE_CHECKING:
    from torch import nn

    from edgeaudio.task import Task

LOG = "log.jsonl"
DATA = "data"
PARTS = "parts"


class TrainingRun:
    """One training run of ``task`` into ``out_dir`` with ``options`` (its ``train_options``
    instance, or None). Use as a context manager around the whole trainer."""

    def __init__(self, task: Task, out_dir: str | Path, options: Any = None):
        if options is not None:
            check(options)  # before any data is made: a bad value fails in a second, not after synthesis
        self.task, self.root, self.options = task, Path(out_dir), options
        args = to_args(options) if options is not None else []
        self.command = shlex.join(["edgeaudio", "train", task.name, "-o", str(self.root), *args])
        self._stack = ExitStack()

    def __enter__(self) -> TrainingRun:
        self._stack.enter_context(process_group(self.device))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # -- where things go ----------------------------------------------------------------------
    @property
    def device(self) -> str:
        return str(getattr(self.options, "device", "auto"))

    @property
    def main(self) -> bool:
        """Whether this process writes and prints (rank 0, or the only process)."""
        return is_main_process()

    @property
    def progress(self) -> bool:
        return bool(getattr(self.options, "progress", True)) and self.main

    @property
    def weights(self) -> Path:
        return self.root / RUN_WEIGHTS

    @property
    def data_dir(self) -> Path:
        return self.root / DATA

    def checkpoints(self, part: str | None = None) -> Path:
        return self.root / RUN_CHECKPOINTS / part if part else self.root / RUN_CHECKPOINTS

    def part_weights(self, part: str) -> Path:
        return self.root / PARTS / f"{part}.safetensors"

    def say(self, message: str) -> None:
        """A line on stderr from the main process (stdout stays for the result)."""
        say(message)

    def config(self, part: str | None = None, **settings: Any) -> TrainConfig:
        """A TrainConfig for this run's layout: checkpoints in ``checkpoints/[part]``, epochs logged
        to ``log.jsonl``, the trainer's options recorded per range of epochs, progress bars as
        the options say. ``settings``: the rest of TrainConfig (epochs, batch_size, lr, ...)."""
        settings.setdefault("progress", self.progress)
        options = to_json(self.options) if self.options is not None else None
        return TrainConfig(self.checkpoints(part), log_file=self.root / LOG, part=part, options=options, **settings)

    # -- the result -------------------------------------------------------------------------------
    def sidecar(
        self,
        config: Mapping[str, Any],
        training: TrainResult | Mapping[str, TrainResult | Mapping[str, Any]],
        data: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        details: Mapping[str, Any] | None = None,
        init: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The JSON that goes beside a weights file. ``config``: the task config the model is built
        from (export reads it back through ``Task.trained_config``). ``training``: the fit result,
        or one per part (a part trained by an earlier command of this run: its recorded summary).
        ``metrics``: the headline numbers, flat (the table the command prints); ``details``: the
        rest of the evaluation, any shape."""
        from importlib.metadata import version

        parts = {"model": training} if isinstance(training, TrainResult) else dict(training)
        return {
            "task": self.task.name,
            "version": self.task.version,
            "config": dict(config),
            "command": self.command,
            "options": to_json(self.options) if self.options is not None else {},
            "seed": getattr(self.options, "seed", None),
            "init": dict(init) if init else None,
            "data": dict(data or {}),
            "metrics": {name: float(value) for name, value in (metrics or {}).items()},
            "details": dict(details or {}),
            "training": {name: r.summary() if isinstance(r, TrainResult) else dict(r) for name, r in parts.items()},
            "processes": int(os.environ.get("WORLD_SIZE", "1")),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "edgeaudio_version": version("edgeaudio"),
        }

    def write(self, model: nn.Module, path: Path, sidecar: Mapping[str, Any]) -> None:
        """Weights (stamped with the command that made them) and their sidecar; main process only."""
        if not self.main:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        save_weights(model, path, {"task": self.task.name, "command": self.command, "run": str(self.root)})
        path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1, default=str) + "\n")

    def finish(self, model: nn.Module | None, sidecar: Mapping[str, Any] | None, **extra: Any) -> dict[str, Any]:
        """Write ``weights.safetensors`` + ``weights.json`` (main process; ``model`` None: no weights
        this time, say a trainer that trained one part of several) and return what ``edgeaudio
        train`` prints: the run, the weights, epochs and the headline metrics (``extra``: more
        entries, e.g. the parts written)."""
        written = model is not None and sidecar is not None
        if written:
            self.write(model, self.weights, sidecar)
        result = {
            "task": self.task.name,
            "run": str(self.root),
            "weights": str(self.weights) if written else None,
            "sidecar": str(self.weights.with_suffix(".json")) if written else None,
            "epochs": {name: part["epochs"] for name, part in (sidecar or {}).get("training", {}).items()},
            "metrics": dict((sidecar or {}).get("metrics", {})) if self.main else {},
            **extra,
        }
        if written:
            self.say(f"weights: {self.weights} (export with: edgeaudio export {self.task.name} --checkpoint {self.root})")
        return result
