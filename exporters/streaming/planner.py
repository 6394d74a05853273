"""Planning: walk the sequence graph in order and decide, for every node that touches a tensor
with a time axis, what streaming it takes (``rules.py`` has the per-op rules) and by how many frames
its output lags the input. Branches that meet with different lags get delay lines; every output is
delayed to the graph's largest lag. The result is a ``Plan`` for the rewriter.
"""

from __future__ import annotations

import numpy as np

from edgeaudio.errors import ExportError
from edgeaudio.exporters.streaming.nodes import attr, opset
from edgeaudio.exporters.streaming.plan import Plan, Recurrent
from edgeaudio.exporters.streaming.probe import Facts
from edgeaudio.exporters.streaming.refusals import HINT, refuse
from edgeaudio.exporters.streaming.rules import RULES

RECURRENT = {"GRU", "LSTM", "RNN"}
# Ops computing shapes (integers) from shapes: the step graph recomputes them for each chunk.
SHAPE_MATH = {
    "Abs", "Add", "Cast", "Concat", "ConstantOfShape", "Div", "Equal", "Expand", "Gather", "Greater", "Identity",
    "Less", "Max", "Min", "Mod", "Mul", "Neg", "Not", "ReduceProd", "Reshape", "Slice", "Squeeze", "Sub", "Tile",
    "Unsqueeze", "Where",
}  # fmt: skip


class Planner:
    """Holds what the rules read (the probe's facts, who consumes each tensor, the node being
    visited) and the plan they write (``p``)."""

    def __init__(self, model, facts: Facts):
        self.graph = model.graph
        self.facts = facts
        self.opset = opset(model)
        self.consumers: dict[str, list] = {}
        for node in self.graph.node:
            for i in node.input:
                self.consumers.setdefault(i, []).append(node)
        self.p = Plan(offset={name: 0 for name in facts.input_axes})
        self.index = 0  # of the node being visited, in graph.node

    # small readers over the probe
    def value(self, name: str) -> np.ndarray:
        return self.facts.values[name]

    def rank(self, name: str) -> int:
        return self.facts.values[name].ndim

    def ints(self, node, index: int, attr_name: str, default=None) -> list[int] | None:
        """An int-list parameter, from the attribute (older opsets) or the (probed) input."""
        for a in node.attribute:
            if a.name == attr_name:
                return list(a.ints) if a.ints else [a.i]
        if len(node.input) > index and node.input[index]:
            if node.input[index] in self.facts.by_length:
                return None
            return [int(v) for v in np.atleast_1d(self.value(node.input[index]))]
        return default

    def plan(self) -> Plan:
        for index, node in enumerate(self.graph.node):
            self.index = index
            self.visit(node)
        outputs = [o.name for o in self.graph.output if o.name in self.facts.time]
        for o in self.graph.output:
            if o.name in self.facts.varies:
                raise ExportError(f"output '{o.name}' has no time axis but depends on the whole sequence", hint=HINT)
        self.p.lag = max((self.p.offset[o] for o in outputs), default=0)
        self.p.output_delays = {o: self.p.lag - self.p.offset[o] for o in outputs if self.p.offset[o] < self.p.lag}
        return self.p

    def visit(self, node) -> None:
        f = self.facts
        timed = [(k, i) for k, i in enumerate(node.input) if i in f.time]
        if node.op_type in RECURRENT and timed:
            return self.recurrent(node)
        varied = [i for i in node.input if i in f.varies]
        if varied:
            raise refuse(node, f"its input '{varied[0]}' has no time axis but depends on the whole sequence")
        if not timed:
            if any(i in f.by_length for i in node.input):
                self.shape_math(node)
            return None
        lags = {k: self.p.offset[i] for k, i in timed}
        lag = max(lags.values())
        for k, own in lags.items():
            if own < lag:
                self.p.delays[(self.index, k)] = lag - own
        rule = RULES.get(node.op_type)
        if rule is None:
            raise refuse(node, "this op is not known to work frame by frame on a tensor with a time axis",
                         hint="the streaming pass converts convolutions, GRU/LSTM/RNN and per-frame ops; "
                              "see exporters/README.md")  # fmt: skip
        lag = rule(self, node, lag)
        for o in node.output:
            if o in f.tangled:
                raise refuse(node, f"its output '{o}' grows with the number of frames in more than one way "
                                   f"({f.tangled[o]}): it crosses the time axis with itself (attention over the "
                                   "whole sequence) or merges it into another axis")  # fmt: skip
            if o in f.time:
                self.p.offset[o] = lag
            elif o in f.varies:
                raise refuse(node, f"its output '{o}' has no time axis but depends on every frame "
                                   "(it collapses the time axis)")  # fmt: skip
        return None

    def shape_math(self, node) -> None:
        """Integer shape computations that follow S: allowed, except where they become data."""
        if node.op_type not in SHAPE_MATH:
            raise refuse(node, "it computes values from the number of frames (not only shapes)")
        for o in node.output:
            if o in self.facts.time:
                if node.op_type not in ("ConstantOfShape", "Expand", "Tile"):
                    raise refuse(node, "it builds a time axis whose values depend on the frame position")
                self.p.offset[o] = 0
            elif o in self.facts.varies:
                raise refuse(node, "it turns the number of frames into a value")

    def recurrent(self, node) -> None:
        f = self.facts
        x = node.input[0]
        layout = attr(node, "layout", 0)
        direction = attr(node, "direction", b"forward")
        if direction != b"forward":
            raise refuse(node, f"a {direction.decode()} RNN needs the frames after the current one",
                         hint="use a unidirectional (forward) RNN for streaming")
        if f.time.get(x) != layout:
            raise refuse(node, f"its time axis is {f.time.get(x)}, expected {layout} for layout={layout}")
        extra = [i for i in node.input[1:] if i in f.time or i in f.by_length]
        if extra:
            raise refuse(node, f"its input '{extra[0]}' depends on the number of frames")
        if len(node.input) > 4 and node.input[4]:
            raise refuse(node, "it takes sequence_lens, which a stream cannot know ahead")
        for index in (5, 6):  # initial_h, initial_c
            if len(node.input) > index and node.input[index] and np.any(f.values[node.input[index]] != 0):
                raise refuse(node, f"its initial state '{node.input[index]}' is not zeros",
                             hint="streamed state starts at zeros; fold a learned initial state into the model")
        finals = [o for o in node.output[1:] if o]
        final_users = [o for o in finals if o in self.consumers or o in {g.name for g in self.graph.output}]
        if final_users:
            raise refuse(node, f"its final state '{final_users[0]}' is used: it depends on the whole sequence")
        if self.opset < 12 and self.p.offset[x] > 0:  # integer Min/Max for its warm-up frames
            raise refuse(node, f"a recurrent layer after a look-ahead needs opset 12 or newer (this is {self.opset})",
                         hint="export the model again with a newer opset_version")
        lag = self.p.offset[x]
        self.p.recurrent[self.index] = Recurrent(lag, layout)
        if node.output and node.output[0]:
            self.p.offset[node.output[0]] = lag
