"""What the pass returns: the step graph and what a caller needs to run it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgeaudio.graphspec import StatePair, TensorSpec

if TYPE_CHECKING:  # onnx is an export-time dependency
    import onnx


@dataclass
class StepGraph:
    """The converted graph and what a caller needs to run it chunk by chunk.

    ``model``: the step graph (inputs: the sequence graph's inputs, then ``state_inputs``;
    outputs: its outputs, then ``state_outputs``, in the same order as the inputs).
    ``state``: one ``StatePair(X, X_out)`` per carried state; start each stream with zeros of
    ``state_inputs``' shapes (``"batch"`` set to the batch size).
    ``lag``: frames by which every time output lags the input: step output frame ``n`` is
    sequence output frame ``n - lag``; the first ``lag`` frames of a stream are warm-up.
    ``time_axes``: the time axis of each (non-state) output that has one.
    """

    model: onnx.ModelProto
    state: list[StatePair]
    state_inputs: list[TensorSpec]
    state_outputs: list[TensorSpec]
    lag: int
    time_axes: dict[str, int] = field(default_factory=dict)
