"""Model weights as safetensors files: writing them, and loading them strictly.

Training, inference and export all load weights through here, so importing this module imports no
torch (and nothing of the training loop); torch and safetensors' torch half load when a function runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from safetensors import SafetensorError, safe_open

from edgeaudio.errors import EdgeAudioError, UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

# The folder every trainer writes (edgeaudio.training.run): the trained weights with their JSON
# sidecar at the top, the trainer's state for resuming under checkpoints/.
RUN_WEIGHTS = "weights.safetensors"
RUN_SIDECAR = "weights.json"
RUN_CHECKPOINTS = "checkpoints"


def save_weights(model: nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None) -> None:
    """Write a model's weights as safetensors; tied (shared) tensors are stored once."""
    from safetensors.torch import save_model

    save_model(model, str(path), metadata=dict(metadata or {}))


def load_weights(model: nn.Module, path: str | Path, new: tuple[str, ...] = ()) -> None:
    """Load safetensors weights strictly, checking every name and shape before touching the model.

    Checking first means a mismatch leaves the model as it was instead of half-loaded. ``new``:
    prefixes of names that may be absent from the file (parts added to a trained model, which
    keep their fresh initialisation).
    """
    from safetensors.torch import load_file

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
        made_by = written_by(path)
        raise EdgeAudioError(
            f"weights in {path}{f' (written by `{made_by}`)' if made_by else ''} do not fit "
            f"{type(model).__name__}: {'; '.join(problems)}",
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


def written_by(path: str | Path) -> str | None:
    """The command that wrote a weights file, as a training run stamps it; None when unstamped."""
    try:
        with safe_open(str(path), framework="numpy") as handle:
            return (handle.metadata() or {}).get("command")
    except (SafetensorError, OSError):
        return None


@dataclass
class TrainedWeights:
    """What ``--checkpoint`` names, resolved: the weights file, and the sidecar that says how the
    model was configured (None when there is none); ``note`` says where the config comes from."""

    path: Path
    sidecar: dict[str, Any] | None
    note: str


def trained_weights(checkpoint: str | Path) -> TrainedWeights:
    """Resolve a run folder, a weights file with its sidecar, or a trainer checkpoint.

    A run folder means its ``weights.safetensors``. A file inside a run's ``checkpoints/`` is trainer
    state: the JSON beside it holds the optimizer and the epoch, never the model's config, so the
    config comes from the run's own ``weights.json`` (the model is the same at every epoch).
    """
    path = Path(checkpoint)
    if path.is_dir():
        if (path / RUN_WEIGHTS).is_file():
            return _with_sidecar(path / RUN_WEIGHTS, path / RUN_SIDECAR)
        if (path / RUN_CHECKPOINTS).is_dir():
            raise UsageError(f"the training run in {path} has not finished: it has no {RUN_WEIGHTS} yet",
                             hint="run the same train command again (it resumes), then export the folder")
        raise UsageError(f"{path} is not a training run folder (no {RUN_WEIGHTS} in it)",
                         hint="give the folder `edgeaudio train -o` wrote, or a .safetensors file")
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}", hint="give a training run folder or a .safetensors file")
    if path.suffix != ".safetensors":
        raise UsageError(f"{path} is not a .safetensors file", hint="give a training run folder or its weights.safetensors")
    beside = path.with_suffix(".json")
    state = _read_json(beside) if beside.is_file() else None
    if _is_trainer_state(state) or RUN_CHECKPOINTS in path.parent.parts[-2:]:
        run = next((p for p in path.parents[:3] if (p / RUN_SIDECAR).is_file()), None)
        if run is None:
            raise UsageError(
                f"{path} is a trainer checkpoint (the state a run resumes from), and its run has no {RUN_SIDECAR} "
                "saying how the model is configured",
                hint="finish the run (rerun its train command) and export its folder")
        found = _with_sidecar(path, run / RUN_SIDECAR)
        found.note = f"config: from {run / RUN_SIDECAR} ({path.name} is a trainer checkpoint of that run)"
        return found
    return _with_sidecar(path, beside)


def _with_sidecar(weights: Path, sidecar: Path) -> TrainedWeights:
    if not sidecar.is_file():
        return TrainedWeights(weights, None, f"config: the task's default ({weights} has no sidecar {sidecar.name})")
    return TrainedWeights(weights, _read_json(sidecar), f"config: as {weights} was trained ({sidecar})")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EdgeAudioError(f"cannot read the sidecar {path} ({exc})") from exc
    if not isinstance(data, dict):
        raise EdgeAudioError(f"the sidecar {path} is not a JSON object")
    return data


def _is_trainer_state(data: Mapping[str, Any] | None) -> bool:
    """The JSON a training loop writes beside a checkpoint (epoch, step, optimizer state)."""
    return isinstance(data, Mapping) and "optimizer" in data and "step" in data
