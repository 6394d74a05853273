"""Model weights as safetensors files: writing them, and loading them strictly.

Training, inference and export all load weights through here, so importing this module imports no
torch (and nothing of the training loop); torch and safetensors' torch half load when a function runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from safetensors import SafetensorError

from edgeaudio.errors import EdgeAudioError, UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn


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
