"""The streaming graph around silero's shipped sequence model, built with ``onnx.helper``.

``silero_vad_16k_sequence.onnx`` (in the ``silero-vad`` wheel) takes windows [n, 576]: each
512-sample frame prefixed with the 64 samples before it (its context), and the LSTM state ``h``,
``c``; it returns one speech probability per frame, bit-exact with silero's one-frame-per-call
model. edgeaudio's runtime feeds a streaming graph audio [1, 1, samples] in whole blocks and
carries named state tensors between calls, so this graph:

1. cuts the audio into 512-sample frames and prefixes each with its 64 context samples; the
   first frame's come from the ``context`` state, the previous call's last 64 samples;
2. runs silero's nodes unchanged on those windows, carrying ``h`` and ``c``;
3. runs the hysteresis segmenter frame by frame (an ONNX ``Scan``), carrying ``segmenter`` state
   [in speech, frames since the speech started, silent frames in a row], and outputs per frame,
   where a segment has just closed, how many frames back it started and ended (else -1, -1).

All state lives in the graph, so chunked streaming and one whole-clip call agree exactly, and
``decode`` is a pure function of the outputs. The graph is ordinary ONNX (opset 16) that ONNX
Runtime and OpenVINO both run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FRAME = 512  # samples per silero frame at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous frame silero sees before each frame
HIDDEN = 128  # silero's LSTM size
SILERO_INPUT = "input"  # the sequence model's window input, renamed to WINDOWS here
WINDOWS = "/frames/windows"


@dataclass(frozen=True)
class Hysteresis:
    """Speech starts on a frame with probability >= ``onset``; it ends after ``min_silence``
    frames in a row below ``offset``; segments shorter than ``min_speech`` frames are dropped."""

    onset: float
    offset: float
    min_silence: int
    min_speech: int


def build(silero_sequence: str | os.PathLike, hysteresis: Hysteresis, target: Path) -> Path:
    """Write the streaming graph to ``target`` (atomically: a half-written file is never seen)."""
    silero = onnx.load(str(silero_sequence))
    graph = helper.make_graph(
        _framing_nodes() + _silero_nodes(silero.graph) + _segmenter_nodes(hysteresis),
        "silero_vad_streaming",
        inputs=[
            _tensor("audio", [1, 1, "samples"]),
            _tensor("context", [1, 1, CONTEXT]),
            _tensor("h", [1, 1, HIDDEN]),
            _tensor("c", [1, 1, HIDDEN]),
            _tensor("segmenter", [1, 3]),
        ],
        outputs=[
            _tensor("probs", [1, "frames"]),
            _tensor("segments", [1, "frames", 2]),
            _tensor("context_out", [1, 1, CONTEXT]),
            _tensor("hn", [1, 1, HIDDEN]),
            _tensor("cn", [1, 1, HIDDEN]),
            _tensor("segmenter_out", [1, 3]),
        ],
        initializer=list(silero.graph.initializer) + _constants(),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)], producer_name="edgeaudio-vad")
    model.ir_version = silero.ir_version
    onnx.checker.check_model(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    onnx.save(model, str(partial))
    partial.replace(target)
    return target


def _tensor(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _constants() -> list[onnx.TensorProto]:
    values = {
        "/frames/frame_shape": np.array([-1, FRAME], np.int64),
        "/frames/zero": np.array([0], np.int64),
        "/frames/one": np.array([1], np.int64),
        "/frames/two": np.array([2], np.int64),
        "/frames/context": np.array([CONTEXT], np.int64),
        "/frames/minus_context": np.array([-CONTEXT], np.int64),
        "/frames/end": np.array([np.iinfo(np.int64).max], np.int64),
        "/frames/batch_of_one": np.array([1, -1], np.int64),
        "/segmenter/flat": np.array([3], np.int64),
        "/segmenter/state_shape": np.array([1, 3], np.int64),
        "/segmenter/split": np.array([1, 1, 1], np.int64),
    }
    return [numpy_helper.from_array(value, name) for name, value in values.items()]


def _framing_nodes() -> list[onnx.NodeProto]:
    """audio [1, 1, n*512] + context [1, 1, 64] -> windows [n, 576] and the next context."""
    node = helper.make_node
    return [
        node("Concat", ["context", "audio"], ["/frames/joined"], name="/frames/Concat", axis=2),
        # Frame i's context is joined[i*512 : i*512+64]: the first 64 of row i of joined[:-64] as [n, 512].
        node("Slice", ["/frames/joined", "/frames/zero", "/frames/minus_context", "/frames/two"],
             ["/frames/shifted"], name="/frames/Slice_shifted"),
        node("Reshape", ["/frames/shifted", "/frames/frame_shape"], ["/frames/shifted_rows"], name="/frames/Reshape_shifted"),
        node("Slice", ["/frames/shifted_rows", "/frames/zero", "/frames/context", "/frames/one"],
             ["/frames/contexts"], name="/frames/Slice_contexts"),
        node("Reshape", ["audio", "/frames/frame_shape"], ["/frames/rows"], name="/frames/Reshape_rows"),
        node("Concat", ["/frames/contexts", "/frames/rows"], [WINDOWS], name="/frames/Concat_windows", axis=1),
        node("Slice", ["/frames/joined", "/frames/minus_context", "/frames/end", "/frames/two"],
             ["context_out"], name="/frames/Slice_context_out"),
    ]


def _silero_nodes(silero: onnx.GraphProto) -> list[onnx.NodeProto]:
    """silero's nodes as they are, reading the windows built above instead of its own input."""
    names = {i.name for i in silero.input} | {o.name for o in silero.output}
    expected = {SILERO_INPUT, "h", "c", "speech_probs", "hn", "cn"}
    if names != expected:
        raise ValueError(f"unexpected silero sequence model I/O {sorted(names)}; this plugin knows {sorted(expected)}")
    nodes = []
    for original in silero.node:
        node = onnx.NodeProto()
        node.CopyFrom(original)
        node.input[:] = [WINDOWS if name == SILERO_INPUT else name for name in node.input]
        nodes.append(node)
    nodes.append(helper.make_node("Reshape", ["speech_probs", "/frames/batch_of_one"], ["probs"], name="/frames/Reshape_probs"))
    return nodes


def _segmenter_nodes(hysteresis: Hysteresis) -> list[onnx.NodeProto]:
    """The Scan over frames that turns probabilities into closed segments, carrying its state."""
    node = helper.make_node
    return [
        node("Reshape", ["segmenter", "/segmenter/flat"], ["/segmenter/state"], name="/segmenter/Reshape_state"),
        node("Split", ["/segmenter/state", "/segmenter/split"],
             ["/segmenter/active", "/segmenter/length", "/segmenter/silence"], name="/segmenter/Split", axis=0),
        node("Scan", ["/segmenter/active", "/segmenter/length", "/segmenter/silence", "speech_probs"],
             ["/segmenter/active_out", "/segmenter/length_out", "/segmenter/silence_out", "/segmenter/rows"],
             name="/segmenter/Scan", num_scan_inputs=1, body=_segmenter_step(hysteresis)),
        node("Concat", ["/segmenter/active_out", "/segmenter/length_out", "/segmenter/silence_out"],
             ["/segmenter/state_out"], name="/segmenter/Concat_state", axis=0),
        node("Reshape", ["/segmenter/state_out", "/segmenter/state_shape"], ["segmenter_out"], name="/segmenter/Reshape_out"),
        node("Unsqueeze", ["/segmenter/rows", "/frames/zero"], ["segments"], name="/segmenter/Unsqueeze_rows"),
    ]


def _segmenter_step(h: Hysteresis) -> onnx.GraphProto:
    """One frame: (active, length, silence, p) -> next (active, length, silence) and the row
    [frames back to the segment's start, frames back to its end] if one closes here, else [-1, -1].

    A segment is open from the first frame >= onset; each later frame extends it, counting silent
    frames (< offset) in a row; at ``min_silence`` of them it closes, ending at the first of them.
    """
    node = helper.make_node
    consts = {
        "onset": h.onset, "offset": h.offset, "min_silence": float(h.min_silence),
        "min_speech": float(h.min_speech), "one": 1.0, "none": -1.0,
    }
    nodes = [node("Constant", [], [name], value=numpy_helper.from_array(np.array([value], np.float32), name))
             for name, value in consts.items()]
    nodes += [
        node("GreaterOrEqual", ["p", "onset"], ["is_speech"]),
        node("Less", ["p", "offset"], ["is_silent"]),
        node("Cast", ["is_speech"], ["speech"], to=TensorProto.FLOAT),
        node("Cast", ["is_silent"], ["silent"], to=TensorProto.FLOAT),
        node("Sub", ["one", "active"], ["idle"]),
        node("Mul", ["idle", "speech"], ["starts"]),  # 1 when a segment starts on this frame
        node("Add", ["length", "one"], ["length_plus"]),
        node("Mul", ["active", "length_plus"], ["length_kept"]),
        node("Add", ["length_kept", "starts"], ["length_now"]),
        node("Add", ["silence", "one"], ["silence_plus"]),
        node("Mul", ["silent", "silence_plus"], ["silence_run"]),
        node("Mul", ["active", "silence_run"], ["silence_now"]),
        node("GreaterOrEqual", ["silence_now", "min_silence"], ["is_closing"]),
        node("Sub", ["length_now", "silence_now"], ["speech_frames"]),
        node("GreaterOrEqual", ["speech_frames", "min_speech"], ["is_long"]),
        node("And", ["is_closing", "is_long"], ["is_reported"]),
        node("Sub", ["length_now", "one"], ["start_back"]),
        node("Sub", ["silence_now", "one"], ["end_back"]),
        node("Where", ["is_reported", "start_back", "none"], ["row_start"]),
        node("Where", ["is_reported", "end_back", "none"], ["row_end"]),
        node("Concat", ["row_start", "row_end"], ["row"], axis=0),
        node("Cast", ["is_closing"], ["closing"], to=TensorProto.FLOAT),
        node("Sub", ["one", "closing"], ["stays_open"]),
        node("Add", ["active", "starts"], ["active_now"]),
        node("Mul", ["active_now", "stays_open"], ["active_next"]),
        node("Mul", ["length_now", "stays_open"], ["length_next"]),
        node("Mul", ["silence_now", "stays_open"], ["silence_next"]),
    ]
    return helper.make_graph(
        nodes,
        "segmenter_step",
        inputs=[_tensor("active", [1]), _tensor("length", [1]), _tensor("silence", [1]), _tensor("p", [])],
        outputs=[_tensor("active_next", [1]), _tensor("length_next", [1]), _tensor("silence_next", [1]), _tensor("row", [2])],
    )
