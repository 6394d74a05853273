"""What each op does to a tensor with a time axis: one rule per op, called by the planner.

A rule checks that the op keeps frames apart (or that the way it mixes them can become state),
records in the plan what the rewriter must change, and returns the frames by which the op's
output lags the input; anything else is refused with the node's name and why. An op with no
rule here is refused.
"""

from __future__ import annotations

import numpy as np

from edgeaudio.exporters.streaming.nodes import attr, conv_pads
from edgeaudio.exporters.streaming.plan import Context
from edgeaudio.exporters.streaming.refusals import refuse

# Ops that act on each element (or each frame) alone: time passes through them untouched.
ELEMENTWISE = {
    "Abs", "Acos", "Acosh", "Add", "And", "Asin", "Asinh", "Atan", "Atanh", "BatchNormalization", "BitShift", "Cast",
    "CastLike", "Ceil", "Celu", "Clip", "Cos", "Cosh", "Div", "Dropout", "Elu", "Equal", "Erf", "Exp", "Floor", "Gelu",
    "Greater", "GreaterOrEqual", "HardSigmoid", "HardSwish", "Identity", "IsInf", "IsNaN", "LeakyRelu", "Less",
    "LessOrEqual", "Log", "Max", "Mean", "Min", "Mish", "Mod", "Mul", "Neg", "Not", "Or", "Pow", "PRelu", "Reciprocal",
    "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin", "Sinh", "Softplus", "Softsign", "Sqrt", "Sub", "Sum", "Tan",
    "Tanh", "ThresholdedRelu", "Where", "Xor",
}  # fmt: skip
# Ops that move or regroup axes; the time axis must come through as one whole axis.
LAYOUT = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand"}
REDUCE = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
          "ReduceProd", "ReduceSum", "ReduceSumSquare"}  # fmt: skip


def elementwise(planner, node, lag: int) -> int:
    f = planner.facts
    out = node.output[0]
    axis = f.time.get(out)
    for i in node.input:
        if not i:
            continue
        if i in f.by_length:
            raise refuse(node, f"it uses '{i}', a value computed from the number of frames, as data")
        if i in f.time and f.time[i] + planner.rank(out) - planner.rank(i) != axis:
            raise refuse(node, f"'{i}' broadcasts its time axis onto another axis")
    return lag


def layout(planner, node, lag: int) -> int:
    """Regrouping axes keeps frames apart when the elements before the time axis and the time
    axis itself are the same in input and output (row-major: [prefix, S, suffix] either way)."""
    f = planner.facts
    src, out = node.input[0], node.output[0]
    if src not in f.time:
        return lag
    if out not in f.time:
        raise refuse(node, "it merges the time axis into another axis")
    a, b = f.values[src].shape, f.values[out].shape
    ta, tb = f.time[src], f.time[out]
    if node.op_type == "Transpose" or (a[ta] == b[tb] and int(np.prod(a[:ta])) == int(np.prod(b[:tb]))):
        if node.op_type == "Expand" and a[ta] != b[tb]:
            raise refuse(node, "it expands the time axis")
        return lag
    raise refuse(node, f"it regroups the time axis ({a} -> {b})")


def shape(planner, node, lag: int) -> int:
    return lag


def pad(planner, node, lag: int) -> int:
    src = node.input[0]
    axis, rank = planner.facts.time[src], planner.rank(src)
    pads = planner.ints(node, 1, "pads")
    if pads is None:
        raise refuse(node, "its padding depends on the number of frames")
    if pads[axis] == 0 and pads[axis + rank] == 0:  # padding other axes acts per frame
        return lag
    convs = planner.consumers.get(node.output[0], [])
    if not convs or any(c.op_type != "Conv" or c.input[0] != node.output[0] for c in convs) \
            or node.output[0] in {o.name for o in planner.graph.output}:
        raise refuse(node, f"it pads the time axis ({pads[axis]} before, {pads[axis + rank]} after) and does not "
                           "only feed convolutions, so the padding cannot become conv state")  # fmt: skip
    mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "constant")
    fill = planner.value(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(())
    if mode != "constant":
        raise refuse(node, f"it pads the time axis with {mode} padding; only zeros in front can become conv state")
    if np.any(fill != 0):
        raise refuse(node, f"it pads the time axis with the value {fill}; only zeros can become conv state")
    if len(node.input) > 3 and node.input[3]:
        raise refuse(node, "Pad with an axes input is not supported on a time tensor")
    planner.p.absorbed_pads.add(planner.index)
    return lag


def conv(planner, node, lag: int) -> int:
    f = planner.facts
    x, w = node.input[0], node.input[1]
    if w in f.time or (len(node.input) > 2 and node.input[2] in f.time):
        raise refuse(node, "its weights have a time axis")
    absorbed = planner.p.absorbed_pads
    pad_node = next((p for k, p in enumerate(planner.graph.node) if x in p.output and k in absorbed), None)
    source = pad_node.input[0] if pad_node is not None else x
    axis = f.time[source]
    if axis < 2:
        raise refuse(node, f"its time axis is axis {axis}, the batch or channel axis, not a spatial one")
    spatial = axis - 2
    kernel = f.values[w].shape[axis]
    dims = len(f.values[w].shape) - 2
    dilation = attr(node, "dilations", [1] * dims)[spatial]
    stride = attr(node, "strides", [1] * dims)[spatial]
    if stride != 1:
        raise refuse(node, f"it strides the time axis by {stride}", hint="only a time stride of 1 streams")
    span = (kernel - 1) * dilation
    same = attr(node, "auto_pad", b"NOTSET") in (b"SAME_UPPER", b"SAME_LOWER")
    if same and any(v != 1 for v in attr(node, "strides", [1])):
        raise refuse(node, "auto_pad SAME with strides", hint="export with explicit pads")
    front, back = conv_pads(node, spatial, dims, span)
    if pad_node is not None:
        pads = planner.ints(pad_node, 1, "pads")
        rank = planner.rank(source)
        front, back = front + pads[axis], back + pads[axis + rank]
    ahead = span - front
    if ahead < 0:
        raise refuse(node, f"it pads {front} frames in front, more than its kernel spans ({span})")
    if span > 0:
        planner.p.contexts[planner.index] = Context(source, span, axis, pad_node, lag)
    elif front or back:
        planner.p.contexts[planner.index] = Context(source, 0, axis, pad_node, lag)
    return lag + ahead


def conv_transpose(planner, node, lag: int) -> int:
    x, w = node.input[0], node.input[1]
    axis = planner.facts.time[x]
    spatial = axis - 2
    dims = len(planner.facts.values[w].shape) - 2
    if axis < 2:
        raise refuse(node, f"its time axis is axis {axis}, the batch or channel axis")
    kernel = planner.facts.values[w].shape[axis]
    pads = attr(node, "pads", [0] * 2 * dims)
    stride = attr(node, "strides", [1] * dims)[spatial]
    extra = attr(node, "output_padding", [0] * dims)[spatial]
    if kernel != 1 or stride != 1 or pads[spatial] or pads[spatial + dims] or extra:
        raise refuse(node, "a transposed convolution that spans, strides or pads the time axis",
                     hint="only transposed convolutions with a time kernel of 1 stream")
    return lag


def pooling(planner, node, lag: int) -> int:
    axis = planner.facts.time[node.input[0]]
    spatial = axis - 2
    dims = planner.rank(node.input[0]) - 2
    kernel = attr(node, "kernel_shape", [1] * dims)[spatial] if axis >= 2 else 0
    pads = attr(node, "pads", [0] * 2 * dims)
    if axis < 2 or kernel != 1 or attr(node, "strides", [1] * dims)[spatial] != 1 or pads[spatial] \
            or pads[spatial + dims]:
        raise refuse(node, "it pools over the time axis")
    return lag


def slice_(planner, node, lag: int) -> int:
    src, out = node.input[0], node.output[0]
    axis = planner.facts.time[src]
    rank = planner.rank(src)
    axes = planner.ints(node, 3, "axes", list(range(rank)))
    starts, steps = planner.ints(node, 1, "starts"), planner.ints(node, 4, "steps", [1] * rank)
    if axes is None or steps is None or starts is None:
        raise refuse(node, "it slices with values computed from the number of frames")
    axes = [a % rank for a in axes]
    if axis not in axes:
        return lag
    if out not in planner.facts.time:
        raise refuse(node, "it keeps a fixed number of frames")
    k = axes.index(axis)
    length = planner.facts.values[src].shape[axis]
    start = starts[k] + length if starts[k] < 0 else min(starts[k], length)
    dropped_back = length - start - planner.facts.values[out].shape[planner.facts.time[out]]
    if steps[k] != 1 or dropped_back < 0:
        raise refuse(node, "it reverses or strides the time axis")
    if start >= length - dropped_back or starts[k] < 0:
        raise refuse(node, "it keeps frames counted from the end of the sequence")
    # Dropping trailing frames costs nothing in a stream (they never exist); dropping leading
    # frames shifts the output later by as many.
    planner.p.time_slices[planner.index] = axis
    return lag + start


def _refuse_along_time(planner, node, tensor: str, why: str) -> None:
    """Refuse ``node`` when its ``axis`` attribute (default 0) is ``tensor``'s time axis."""
    time = planner.facts.time.get(tensor)
    if time is not None and attr(node, "axis", 0) % max(planner.rank(tensor), 1) == time:
        raise refuse(node, why)


def gather(planner, node, lag: int) -> int:
    _refuse_along_time(planner, node, node.input[0], "it picks frames by index along the time axis")
    if node.input[1] in planner.facts.time:
        raise refuse(node, "its indices have a time axis")
    return lag


def concat(planner, node, lag: int) -> int:
    _refuse_along_time(planner, node, node.output[0], "it concatenates along the time axis")
    return lag


def split(planner, node, lag: int) -> int:
    _refuse_along_time(planner, node, node.input[0], "it splits the time axis")
    return lag


def matmul(planner, node, lag: int) -> int:
    a, b = node.input[0], node.input[1]
    if a in planner.facts.time and planner.facts.time[a] == planner.rank(a) - 1:
        raise refuse(node, "it contracts the time axis of its first input (a matrix product over time)")
    if b in planner.facts.time and planner.facts.time[b] == planner.rank(b) - 2:
        raise refuse(node, "it contracts the time axis of its second input (a matrix product over time, "
                           "as in attention over the whole sequence)")  # fmt: skip
    return lag


def gemm(planner, node, lag: int) -> int:
    if node.input[0] not in planner.facts.time or attr(node, "transA", 0) or \
            any(i in planner.facts.time for i in node.input[1:]):
        raise refuse(node, "it contracts the time axis")
    return lag


def einsum(planner, node, lag: int) -> int:
    equation = attr(node, "equation", b"").decode().replace(" ", "")
    if "..." in equation or "->" not in equation:
        raise refuse(node, f"einsum '{equation}' without explicit axes is not supported on a time tensor")
    terms, result = equation.split("->")
    letters = set()
    for term, name in zip(terms.split(","), node.input):
        if name in planner.facts.time:
            letters.add(term[planner.facts.time[name]])
    if len(letters) != 1 or next(iter(letters)) not in result:
        raise refuse(node, f"einsum '{equation}' sums over or mixes the time axis")
    return lag


def softmax(planner, node, lag: int) -> int:
    src = node.input[0]
    rank = planner.rank(src)
    axis = attr(node, "axis", 1 if planner.opset < 13 else -1) % rank
    axis_t = planner.facts.time[src]
    if axis == axis_t or (planner.opset < 13 and axis_t >= axis):
        raise refuse(node, "it normalizes over the time axis")
    return lag


def reduce(planner, node, lag: int) -> int:
    src = node.input[0]
    axes = planner.ints(node, 1, "axes", [])
    if axes is None:
        raise refuse(node, "its axes depend on the number of frames")
    if not axes and not attr(node, "noop_with_empty_axes", 0):
        axes = list(range(planner.rank(src)))
    if planner.facts.time[src] in [a % planner.rank(src) for a in axes]:
        raise refuse(node, "it reduces over the time axis")
    return lag


def arg(planner, node, lag: int) -> int:
    _refuse_along_time(planner, node, node.input[0], "it picks along the time axis")
    return lag


def cumsum(planner, node, lag: int) -> int:
    src = node.input[0]
    if int(planner.value(node.input[1])) % planner.rank(src) == planner.facts.time[src]:
        raise refuse(node, "it accumulates along the time axis", hint="carry the running sum as state by hand")
    return lag


def layer_normalization(planner, node, lag: int) -> int:
    src = node.input[0]
    if planner.facts.time[src] >= attr(node, "axis", -1) % planner.rank(src):
        raise refuse(node, "it normalizes over the time axis")
    return lag


def instance_normalization(planner, node, lag: int) -> int:
    raise refuse(node, "instance normalization averages over the time axis")


RULES = {
    **dict.fromkeys(ELEMENTWISE, elementwise),
    **dict.fromkeys(LAYOUT, layout),
    **dict.fromkeys(REDUCE, reduce),
    **dict.fromkeys(("Shape", "Size"), shape),
    **dict.fromkeys(("MaxPool", "AveragePool", "LpPool"), pooling),
    **dict.fromkeys(("Softmax", "LogSoftmax", "Hardmax"), softmax),
    **dict.fromkeys(("ArgMax", "ArgMin"), arg),
    "Pad": pad,
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "Slice": slice_,
    "Gather": gather,
    "Concat": concat,
    "Split": split,
    "MatMul": matmul,
    "Gemm": gemm,
    "Einsum": einsum,
    "CumSum": cumsum,
    "LayerNormalization": layer_normalization,
    "InstanceNormalization": instance_normalization,
}
