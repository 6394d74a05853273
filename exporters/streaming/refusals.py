"""How the pass refuses what cannot stream: an ``ExportError`` naming the node, why, and a hint."""

from __future__ import annotations

from edgeaudio.errors import ExportError
from edgeaudio.exporters.streaming.nodes import node_name

HINT = "make the layer causal in time (a causal conv, a forward RNN), or keep it out of the streamed graph"


def refuse(node, why: str, hint: str = HINT) -> ExportError:
    return ExportError(f"cannot stream node '{node_name(node)}' ({node.op_type}): {why}", hint=hint)
