"""Finding time: run the sequence graph in ONNX Runtime on two lengths with every tensor exposed.

The axis that grows with ``S`` is a tensor's time axis; an integer tensor whose values change with
``S`` is a shape computation; a tensor whose shape does not change but whose values do depends on
the whole sequence. Constant subgraphs are read from their computed values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from edgeaudio.errors import ExportError, require
from edgeaudio.exporters.streaming.nodes import node_name
from edgeaudio.exporters.streaming.refusals import HINT

PROBE = (12, 17)  # the two sequence lengths the graph is probed with


@dataclass
class Facts:
    """What running the sequence graph showed about every tensor (``a``: length PROBE[0])."""

    values: dict[str, np.ndarray]  # each tensor at S = PROBE[0], batch 1
    time: dict[str, int]  # tensor -> its time axis
    batch: dict[str, int]  # tensor -> the axis that grows with the batch
    by_length: set[str]  # integer (or boolean) tensors whose values follow S: shape computations
    varies: set[str]  # tensors without a time axis whose values change with the input's length
    tangled: dict[str, str]  # tensors whose shape grows with S other than along one axis -> their shapes
    input_axes: dict[str, int]  # graph input -> time axis


def _input_time_axes(graph, time_axes: str | Mapping[str, int]) -> dict[str, int]:
    if isinstance(time_axes, str):
        axes = {}
        for inp in graph.input:
            dims = [d.dim_param for d in inp.type.tensor_type.shape.dim]
            if time_axes in dims:
                axes[inp.name] = dims.index(time_axes)
    else:
        axes = dict(time_axes)
        unknown = set(axes) - {i.name for i in graph.input}
        if unknown:
            raise ExportError(f"time_axes names inputs the graph does not have: {sorted(unknown)}")
    if not axes:
        raise ExportError(f"no graph input has the time axis {time_axes!r}",
                          hint="pass time_axes={input name: axis}, or the name of the dynamic time dimension")
    return axes


def probe_graph(model, time_axes: str | Mapping[str, int]) -> Facts:
    onnx = require("onnx")
    ort = require("onnxruntime")
    graph = model.graph
    axes = _input_time_axes(graph, time_axes)
    initialized = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialized]
    batched = any(
        (d.dim_param or not d.HasField("dim_value")) and not (i.name in axes and k == axes[i.name])
        for i in inputs for k, d in enumerate(i.type.tensor_type.shape.dim)
    )  # fmt: skip

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    known = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        exposed.graph.output.extend(onnx.ValueInfoProto(name=o) for o in node.output if o and o not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"ONNX Runtime cannot load the sequence graph: {exc}") from exc
    names = [o.name for o in session.get_outputs()]

    rng = np.random.default_rng(0)
    longest = {}
    for inp in inputs:
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in inp.type.tensor_type.shape.dim]
        if inp.name in axes:
            shape[axes[inp.name]] = PROBE[1]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        longest[inp.name] = (rng.standard_normal(shape) if dtype.kind == "f" else np.zeros(shape)).astype(dtype)

    def run(length: int, batch: int) -> dict[str, np.ndarray]:
        feeds = {}
        for inp in inputs:
            x = longest[inp.name]
            if inp.name in axes:  # the shorter run sees a prefix of the longer one's frames
                x = np.take(x, range(length), axis=axes[inp.name])
            for k, d in enumerate(inp.type.tensor_type.shape.dim):
                if batch > 1 and (d.dim_param or not d.HasField("dim_value")) and k != axes.get(inp.name):
                    x = np.concatenate([x] * batch, axis=k)
            feeds[inp.name] = x
        try:
            return {**feeds, **dict(zip(names, session.run(names, feeds)))}
        except Exception as exc:
            raise ExportError(f"the sequence graph fails on {length} frames: {exc}",
                              hint="the pass probes the graph with random inputs: check the declared input shapes"
                              ) from exc

    short, long = run(PROBE[0], 1), run(PROBE[1], 1)
    wide = run(PROBE[0], 2) if batched else short
    for init in graph.initializer:
        short[init.name] = long[init.name] = wide[init.name] = onnx.numpy_helper.to_array(init)
    for node in graph.node:  # constants are folded by the probe too (ORT keeps them as outputs)
        for o in node.output:
            if o and o not in short:
                raise ExportError(f"the probe did not compute tensor '{o}' of node '{node_name(node)}'")
    facts = Facts(short, {}, {}, set(), set(), {}, axes)
    producer = {o: node for node in graph.node for o in node.output}
    for name, a in short.items():
        b, w = long[name], wide[name]
        node = producer.get(name)
        if a.ndim != b.ndim:
            raise ExportError(f"node '{node_name(node)}' changes the rank of '{name}' with the number of frames",
                              hint=HINT)
        grown = [k for k in range(a.ndim) if a.shape[k] != b.shape[k]]
        if len(grown) == 1 and b.shape[grown[0]] - a.shape[grown[0]] == PROBE[1] - PROBE[0]:
            facts.time[name] = grown[0]
        elif grown:
            facts.tangled[name] = f"{a.shape} at S={PROBE[0]}, {b.shape} at S={PROBE[1]}"
        elif a.dtype.kind in "iub" and not np.array_equal(a, b):
            facts.by_length.add(name)
        elif not np.array_equal(a, b):
            facts.varies.add(name)
        widened = [k for k in range(a.ndim) if a.shape[k] != w.shape[k]]
        if len(widened) == 1:
            facts.batch[name] = widened[0]
    return facts
