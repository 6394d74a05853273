"""The streaming conversion pass: a sequence graph with a time axis -> a stateful step graph.

A model exported for whole sequences (``[B, C, S, F]`` conv tensors, ``[B, S, D]`` embeddings, a
GRU over ``S``) computes every frame from the frames before it, but keeps that past inside the
call: convolutions pad the front of the sequence with zeros, recurrent layers start from a zero
hidden state. ``to_step_graph`` moves that past into state the caller carries, so that the graph
can run on any number of frames ``S >= 1`` per call and chunk after chunk gives what one call on
the whole input gives:

- a GRU, LSTM or RNN takes its hidden (and cell) state as an input and returns it as an output;
- a convolution whose kernel spans ``k > 1`` frames keeps the last ``(k - 1) * dilation`` frames of
  its unpadded input: ``concat(state, x)`` along time replaces the front padding, and the tail of
  that concat is the new state;
- a convolution that also pads the back of the sequence (a look-ahead) can only give frame ``t``
  once frame ``t + look-ahead`` has arrived: its output lags. The lag adds up along the graph,
  branches that meet with different lags are aligned by delay-line state, and every output is
  aligned to the graph's largest lag, which ``StepGraph.lag`` reports. The first ``lag`` frames of
  a stream are warm-up; layers with state after a look-ahead see zeros for them (a frame counter
  is carried for that), so step frame ``n`` equals sequence frame ``n - lag`` exactly.

State is declared as our own streaming graphs declare it (``edgeaudio.graphspec``): input ``X``,
output ``X_out``, initial value zeros of the declared shape, only a ``"batch"`` axis dynamic.

How the pass knows where time is: it runs the sequence graph in ONNX Runtime on two lengths (and,
when an input has a dynamic axis besides time, on two batch sizes) with every tensor exposed. The
axis that grows with ``S`` is a tensor's time axis, an integer tensor whose values change with
``S`` is a shape computation (``Shape -> Gather -> Reshape`` keeps working in the step graph), and
constant subgraphs (a ``Pad``'s pads built from ``Constant/ConstantOfShape/Reshape/Slice``) are read
from their computed values. Each node is then checked against what it does to the time axis, and
anything that mixes frames in a way state cannot carry is refused with an ``ExportError`` naming
the node: attention or a MatMul over time, Softmax/Reduce*/CumSum over time, a Pad on time that
does not feed a convolution, a time stride, a bidirectional RNN, an op not known to work frame by
frame.

The pass in three steps, one module each: ``probe.py`` finds time by running the graph,
``planner.py`` decides per node what streaming it takes (``rules.py``: one rule per op) and
``rewriter.py`` builds the step graph from that ``Plan`` (``plan.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from edgeaudio.errors import ExportError, require
from edgeaudio.exporters.streaming.nodes import opset
from edgeaudio.exporters.streaming.planner import Planner
from edgeaudio.exporters.streaming.probe import probe_graph
from edgeaudio.exporters.streaming.rewriter import Rewriter
from edgeaudio.exporters.streaming.step_graph import StepGraph

if TYPE_CHECKING:  # onnx is an export-time dependency
    import onnx

__all__ = ["StepGraph", "to_step_graph"]


def to_step_graph(
    model: onnx.ModelProto | str | Path,
    time_axes: str | Mapping[str, int] = "S",
    state_prefix: str = "",
) -> StepGraph:
    """Convert a sequence graph into a stateful step graph (see the module docstring).

    ``model``: an ``onnx.ModelProto`` or the path of an ``.onnx`` file (left unchanged).
    ``time_axes``: the name of the dynamic time dimension in the inputs' declared shapes (every
    input with that dimension has a time axis there), or ``{input name: axis}``.
    ``state_prefix``: put before every state name (``h_emb_gru_GRU`` -> ``enc_h_emb_gru_GRU``),
    so that step graphs joined into one do not share names.
    Raises ``ExportError`` naming the node for anything that cannot be streamed.
    """
    onnx = require("onnx")
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    version = opset(model)
    if version < 11:
        raise ExportError(f"the streaming pass needs opset 11 or newer; this graph is opset {version}",
                          hint="export the model again with a newer opset_version")
    facts = probe_graph(model, time_axes)
    plan = Planner(model, facts).plan()
    return Rewriter(model, facts, plan, state_prefix).build()
