"""Reading ONNX nodes: a name for messages, attributes, the opset, a convolution's padding."""

from __future__ import annotations

from edgeaudio.errors import require


def node_name(node) -> str:
    return node.name or (node.output[0] if node.output else node.op_type) if node is not None else "graph input"


def attr(node, name: str, default=None):
    onnx = require("onnx")
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return list(value) if isinstance(value, (list, tuple)) else value
    return default


def opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def conv_pads(node, spatial: int, dims: int, span: int) -> tuple[int, int]:
    """The padding a Conv puts (before, after) spatial axis ``spatial``, ``auto_pad`` resolved."""
    auto = attr(node, "auto_pad", b"NOTSET")
    if auto in (b"NOTSET", b""):
        pads = attr(node, "pads", [0] * 2 * dims)
        return pads[spatial], pads[spatial + dims]
    if auto == b"VALID":
        return 0, 0
    small = span // 2
    return (span - small, small) if auto == b"SAME_LOWER" else (small, span - small)
