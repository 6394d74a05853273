"""Rewriting: the sequence graph, rewritten node by node as the plan says, into the step graph.

Every piece of state is a pair (``X`` in, ``X_out`` out): a convolution's context is
``concat(state, x)`` along time with the tail of that concat as the new state; a recurrent layer's
initial and final hidden state; a delay line's last frames. A layer with state after a look-ahead
is kept out of the warm-up frames by a frame counter (``frame_index``) carried as state too.
"""

from __future__ import annotations

import re

import numpy as np

from edgeaudio.errors import ExportError, require
from edgeaudio.exporters.streaming.nodes import attr, conv_pads, node_name
from edgeaudio.exporters.streaming.plan import Context, Plan, Recurrent
from edgeaudio.exporters.streaming.probe import Facts
from edgeaudio.exporters.streaming.step_graph import StepGraph
from edgeaudio.graphspec import StatePair, TensorSpec

INT64_MAX = np.iinfo(np.int64).max


class Rewriter:
    """Builds the step graph: the sequence graph's nodes in order, each rewritten as the plan says,
    with the state inputs and outputs it declares on the way."""

    def __init__(self, model, facts: Facts, plan: Plan, prefix: str):
        self.onnx = require("onnx")
        self.prefix = prefix
        self.model = model
        self.facts = facts
        self.p = plan
        self.nodes: list = []
        self.initializers: list = []
        self.state_in: list[TensorSpec] = []
        self.state_out: list[TensorSpec] = []
        self.used = {n for node in model.graph.node for n in (*node.input, *node.output)} | \
            {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer}
        self._frames: tuple[str, str] | None = None
        self.renamed: dict[str, str] = {}

    # helpers that add nodes and constants
    def fresh(self, hint: str) -> str:
        base = "stream/" + hint
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def const(self, value, hint: str = "const") -> str:
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def add(self, op: str, inputs: list[str], hint: str, outputs: list[str] | None = None, **attrs) -> str:
        outputs = outputs or [self.fresh(hint)]
        self.nodes.append(self.onnx.helper.make_node(op, inputs, outputs, name=self.fresh(hint + "/" + op), **attrs))
        return outputs[0]

    def slice(self, x: str, start: str, end: str, axis: int, hint: str, output: str | None = None) -> str:
        return self.add("Slice", [x, start, end, self.const(np.array([axis], np.int64), "axis")], hint,
                        [output] if output else None)

    def shaped_like(self, tensor: str, axis: int | None = None, frames: int | None = None) -> tuple:
        """``tensor``'s probed shape with its time axis set to ``frames`` and its batch axis named."""
        shape: list[int | str] = list(self.facts.values[tensor].shape)
        if axis is not None:
            shape[axis] = frames
        batch = self.facts.batch.get(tensor)
        if batch is not None and batch != axis:
            shape[batch] = "batch"
        return tuple(shape)

    def state(self, hint: str, shape: tuple, dtype: str = "float32") -> tuple[str, str]:
        """Declare a state pair ``(X, X_out)`` of ``shape``; zeros of it start a stream."""
        base = self.prefix + re.sub(r"[^A-Za-z0-9]+", "_", hint).strip("_")
        name, k = base, 1
        while name in self.used or name + "_out" in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.update((name, name + "_out"))
        self.state_in.append(TensorSpec(name, shape, dtype))
        self.state_out.append(TensorSpec(name + "_out", shape, dtype))
        return name, name + "_out"

    def frames(self) -> tuple[str, str]:
        """(index of the chunk's first frame in the stream, frames in this chunk), both scalars;
        the index is carried as state ``frame_index``."""
        if self._frames is None:
            source, axis = next(iter(self.facts.input_axes.items()))
            index, index_out = self.state("frame_index", (1,), "int64")
            shape = self.add("Shape", [source], "chunk")
            count = self.add("Gather", [shape, self.const(np.array([axis], np.int64))], "chunk")
            self.add("Add", [index, count], "chunk", [index_out])
            scalar = self.const(np.array([], np.int64), "scalar")
            self._frames = (self.add("Reshape", [index, scalar], "chunk"),
                            self.add("Reshape", [count, scalar], "chunk"))
        return self._frames

    def delay(self, x: str, frames: int, hint: str, output: str | None = None) -> str:
        """``x`` later by ``frames`` frames: the last frames of the previous chunk come first."""
        axis = self.facts.time[x]
        state, state_out = self.state("delay_" + hint, self.shaped_like(x, axis, frames), self.dtype(x))
        joined = self.add("Concat", [state, x], "delay", axis=axis)
        self.slice(joined, self.const(np.array([-frames], np.int64)), self.const(np.array([INT64_MAX], np.int64)),
                   axis, "delay", state_out)
        return self.slice(joined, self.const(np.array([0], np.int64)), self.const(np.array([-frames], np.int64)),
                          axis, "delay", output)

    def warmup_mask(self, x: str, lag: int, axis: int) -> str:
        """``x`` with its first ``lag`` stream frames (warm-up, before the look-ahead filled) set
        to zero: what the sequence graph's front padding holds there."""
        index, count = self.frames()
        positions = self.add("Range", [index, self.add("Add", [index, count], "mask"),
                                       self.const(np.array(1, np.int64))], "mask")
        early = self.add("Less", [positions, self.const(np.array(lag, np.int64))], "mask")
        dtype = self.onnx.helper.np_dtype_to_tensor_dtype(self.facts.values[x].dtype)
        keep = self.add("Cast", [self.add("Not", [early], "mask")], "mask", to=dtype)
        shape = [1] * self.facts.values[x].ndim
        shape[axis] = -1
        return self.add("Mul", [x, self.add("Reshape", [keep, self.const(np.array(shape, np.int64))], "mask")], "mask")

    # the rewrite
    def build(self) -> StepGraph:
        onnx = self.onnx
        graph = self.model.graph
        outputs = {o.name for o in graph.output}
        renamed = {o: o + "/unaligned" for o in self.p.output_delays}
        self.used.update(renamed.values())
        self.renamed = renamed
        for old, new_name in renamed.items():  # the facts of an output hold for its unaligned self
            for table in (self.facts.values, self.facts.time, self.facts.batch):
                if old in table:
                    table[new_name] = table[old]
        for key, node in enumerate(graph.node):
            node = _copy(node)
            for k, name in enumerate(node.input):
                if name in renamed:
                    node.input[k] = renamed[name]
            for k, name in enumerate(node.output):
                if name in renamed:
                    node.output[k] = renamed[name]
            for (owner, k), frames in self.p.delays.items():
                if owner == key:
                    node.input[k] = self.delay(node.input[k], frames, f"{node_name(node)}_in{k}")
            if key in self.p.absorbed_pads:
                continue
            if key in self.p.contexts:
                self.context(node, self.p.contexts[key])
            elif key in self.p.recurrent:
                self.recurrent(node, self.p.recurrent[key])
            elif key in self.p.time_slices:
                self.time_slice(node, self.p.time_slices[key])
            else:
                self.nodes.append(node)
        for name, frames in self.p.output_delays.items():
            self.delay(renamed[name], frames, name, name)

        new = onnx.GraphProto(name=graph.name + "_step", doc_string=graph.doc_string)
        new.node.extend(self.nodes)
        new.initializer.extend([*graph.initializer, *self.initializers])
        new.input.extend(graph.input)
        new.output.extend(graph.output)
        for spec in self.state_in:
            new.input.append(_value_info(onnx, spec))
        for spec in self.state_out:
            new.output.append(_value_info(onnx, spec))
        _prune(new, outputs | {s.name for s in self.state_out})
        step = onnx.helper.make_model(new, opset_imports=list(self.model.opset_import),
                                      ir_version=self.model.ir_version, producer_name="edgeaudio.streaming")
        step.graph.ClearField("value_info")
        try:
            onnx.checker.check_model(step)
        except Exception as exc:
            raise ExportError(f"the step graph the streaming pass built is invalid: {exc}") from exc
        return StepGraph(
            model=step,
            state=[StatePair(i.name, o.name) for i, o in zip(self.state_in, self.state_out)],
            state_inputs=self.state_in,
            state_outputs=self.state_out,
            lag=self.p.lag,
            time_axes={o.name: self.facts.time[o.name] for o in graph.output if o.name in self.facts.time},
        )

    def context(self, node, ctx: Context) -> None:
        x = self.renamed.get(ctx.source, ctx.source)
        dims = len(self.facts.values[node.input[1]].shape) - 2
        spatial = ctx.axis - 2
        if ctx.lag_in and ctx.frames:
            x = self.warmup_mask(x, ctx.lag_in, ctx.axis)
        if ctx.frames:
            shape = self.shaped_like(ctx.source, ctx.axis, ctx.frames)
            state, state_out = self.state("ctx_" + node_name(node), shape, self.dtype(ctx.source))
            x = self.add("Concat", [state, x], "ctx", axis=ctx.axis)
            self.slice(x, self.const(np.array([-ctx.frames], np.int64)), self.const(np.array([INT64_MAX], np.int64)),
                       ctx.axis, "ctx", state_out)
        if ctx.pad is not None:
            pads = [int(v) for v in self.facts.values[ctx.pad.input[1]]]
            rank = self.facts.values[ctx.source].ndim
            pads[ctx.axis] = pads[ctx.axis + rank] = 0
            if any(pads):
                inputs = [x, self.const(np.array(pads, np.int64), "pads"), *ctx.pad.input[2:3]]
                x = self.add("Pad", inputs, "ctx", mode="constant")
        node.input[0] = x
        pads = attr(node, "pads", [0] * 2 * dims)
        if attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b""):
            pads = [0] * 2 * dims  # resolved per axis below; other axes keep what SAME would give
            for k in range(dims):
                span = (self.facts.values[node.input[1]].shape[k + 2] - 1) * attr(node, "dilations", [1] * dims)[k]
                pads[k], pads[k + dims] = conv_pads(node, k, dims, span)
        pads[spatial] = pads[spatial + dims] = 0
        kept = [a for a in node.attribute if a.name not in ("pads", "auto_pad")]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.attribute.append(self.onnx.helper.make_attribute("pads", pads))
        self.nodes.append(node)

    def recurrent(self, node, rnn: Recurrent) -> None:
        lstm = node.op_type == "LSTM"
        inputs = list(node.input) + [""] * (8 - len(node.input))
        outputs = list(node.output) + [""] * (3 - len(node.output))
        # [num_directions, batch, hidden], or [batch, num_directions, hidden] with layout=1
        x = node.input[0]
        batch_axis = 1 - rnn.time_axis
        batch = "batch" if self.facts.batch.get(x) == batch_axis else self.facts.values[x].shape[batch_axis]
        shape = (1, batch, attr(node, "hidden_size")) if rnn.time_axis == 0 else (batch, 1, attr(node, "hidden_size"))
        for index, out, letter in [(5, 1, "h")] + ([(6, 2, "c")] if lstm else []):
            inputs[index], outputs[out] = self.state(f"{letter}_{node_name(node)}", shape, self.dtype(x))
        if rnn.lag_in:
            self.recurrent_after_lookahead(node, rnn, inputs, outputs)
            return
        self.rewire(node, inputs, outputs)

    def rewire(self, node, inputs: list[str], outputs: list[str]) -> None:
        """Give ``node`` these inputs and outputs (trailing empty optional ones dropped) and keep it."""
        while inputs and not inputs[-1]:
            inputs.pop()
        while outputs and not outputs[-1]:
            outputs.pop()
        del node.input[:]
        node.input.extend(inputs)
        del node.output[:]
        node.output.extend(outputs)
        self.nodes.append(node)

    def dtype(self, tensor: str) -> str:
        return np.dtype(self.facts.values[tensor].dtype).name

    def recurrent_after_lookahead(self, node, rnn: Recurrent, inputs: list[str], outputs: list[str]) -> None:
        """The layer must start at the first real frame, not on the warm-up frames: the chunk's
        warm-up frames are rotated to its end and left out through sequence_lens (the hidden state
        stays zero through them), and its outputs rotated back (zeros in the warm-up frames)."""
        index, count = self.frames()
        axis = rnn.time_axis
        one = np.array([1], np.int64)
        lag = self.const(np.array(rnn.lag_in, np.int64))
        warm = self.add("Max", [self.add("Min", [self.add("Sub", [lag, index], "rnn"), count], "rnn"),
                                self.const(np.array(0, np.int64))], "rnn")
        real = self.add("Sub", [count, warm], "rnn")
        warm1, real1 = (self.add("Reshape", [v, self.const(one)], "rnn") for v in (warm, real))
        end, start = self.const(np.array([INT64_MAX], np.int64)), self.const(np.array([0], np.int64))
        x = inputs[0]
        rotated = [self.slice(x, warm1, end, axis, "rnn"), self.slice(x, start, warm1, axis, "rnn")]
        inputs[0] = self.add("Concat", rotated, "rnn", axis=axis)
        batch = self.add("Gather", [self.add("Shape", [x], "rnn"), self.const(np.array([1 - axis], np.int64))], "rnn")
        inputs[4] = self.add("Cast", [self.add("Expand", [real1, batch], "rnn")], "rnn", to=self.onnx.TensorProto.INT32)
        y = outputs[0]
        outputs[0] = self.fresh("rnn/rotated") if y else ""
        self.rewire(node, inputs, outputs)
        if y:
            self.add("Concat", [self.slice(outputs[0], real1, end, axis, "rnn"),
                                self.slice(outputs[0], start, real1, axis, "rnn")], "rnn", [y], axis=axis)

    def time_slice(self, node, axis: int) -> None:
        """The same slice without its time-axis part (the frames it dropped at the front are the
        lag it adds, those at the back never exist in a stream)."""
        src = node.input[0]
        rank = self.facts.values[src].ndim
        given = [[int(v) for v in np.atleast_1d(self.facts.values[i])] if i else None for i in node.input[1:5]]
        starts, ends = given[0], given[1]
        axes = [a % rank for a in (given[2] if len(given) > 2 and given[2] else range(len(starts)))]
        steps = given[3] if len(given) > 3 and given[3] else [1] * len(axes)
        keep = [k for k, a in enumerate(axes) if a != axis]
        if not keep:
            self.add("Identity", [src], "slice", [node.output[0]])
            return

        def pick(values: list[int]) -> str:
            return self.const(np.array([values[k] for k in keep], np.int64))

        self.add("Slice", [src, pick(starts), pick(ends), pick(axes), pick(steps)], "slice", [node.output[0]])


def _copy(node):
    onnx = require("onnx")
    twin = onnx.NodeProto()
    twin.CopyFrom(node)
    return twin


def _value_info(onnx, spec: TensorSpec):
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
    return onnx.helper.make_tensor_value_info(spec.name, elem, list(spec.shape))


def _prune(graph, keep: set[str]) -> None:
    """Drop nodes and initializers nothing needs any more (the zero initial states, absorbed pads' pads)."""
    needed = set(keep)
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
