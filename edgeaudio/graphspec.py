"""How a graph's tensors and streaming state are described: the vocabulary shared by tasks (which
declare graphs), the bundle manifest (which stores them) and backends (which load them).

It sits below the task contract so that a backend can read a manifest's specs without knowing
anything about tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["TensorSpec", "StatePair", "Streaming"]


@dataclass(frozen=True)
class TensorSpec:
    """A named graph input or output. ``shape`` entries are ints or names of dynamic axes."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TensorSpec":
        return cls(data["name"], tuple(data["shape"]), data.get("dtype", "float32"))


@dataclass(frozen=True)
class StatePair:
    """A streaming state carried between calls: output ``output`` feeds input ``input`` next time.

    The initial value is zeros of the input's declared shape, with the dynamic axis named
    ``"batch"`` set to 1 (a GRU state is [layers, batch, hidden]); no other axis may be dynamic.
    """

    input: str
    output: str


@dataclass(frozen=True)
class Streaming:
    """How the generic runtime streams a graph.

    ``audio_input``: input that takes audio shaped [batch, channels, samples].
    ``block``: the graph consumes samples in multiples of this (its hop); the runtime buffers up to it.
    ``time_axes``: for each non-state output, the axis along which successive calls concatenate.
    ``frames_per_block``: output frames produced per ``block`` samples (to check alignment).
    """

    audio_input: str
    block: int
    time_axes: Mapping[str, int]
    frames_per_block: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "audio_input": self.audio_input,
            "block": self.block,
            "time_axes": dict(self.time_axes),
            "frames_per_block": self.frames_per_block,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Streaming":
        return cls(data["audio_input"], int(data["block"]), dict(data["time_axes"]), int(data.get("frames_per_block", 1)))
