"""The plan: what the planner decided per node, keyed by the node's index in ``graph.node``, and
what the rewriter carries out."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Context:
    """A convolution that needs ``frames`` of past input as state. ``source`` is its unpadded
    input; ``pad`` the absorbed Pad node (its non-time padding is kept), if any."""

    source: str
    frames: int
    axis: int
    pad: object = None
    lag_in: int = 0


@dataclass
class Recurrent:
    lag_in: int
    time_axis: int  # of X (0, or 1 with layout=1)


@dataclass
class Plan:
    offset: dict[str, int]  # time tensor -> frames it lags the input by
    contexts: dict[int, Context] = field(default_factory=dict)  # conv -> the past it keeps
    recurrent: dict[int, Recurrent] = field(default_factory=dict)
    absorbed_pads: set[int] = field(default_factory=set)
    time_slices: dict[int, int] = field(default_factory=dict)  # Slice's index -> its time axis
    delays: dict[tuple[int, int], int] = field(default_factory=dict)  # (node index, input index) -> frames
    output_delays: dict[str, int] = field(default_factory=dict)
    lag: int = 0
