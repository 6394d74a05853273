"""TensorRT: what can be checked without a GPU is checked here (engine fingerprint and cache,
precision flags, profile shapes, long-input splitting, the target's ONNX artifacts and their ONNX
Runtime proxy); the engine itself is built and compared with ONNX Runtime on a machine that has
TensorRT and a CUDA GPU (``-m hardware`` on a Jetson), and skipped with the reason elsewhere."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgeaudio.backends import tensorrt as trt_backend
from edgeaudio.backends.base import backends
from edgeaudio.backends.onnxruntime import OnnxRuntimeBackend
from edgeaudio.backends.tensorrt import (
    EngineCache,
    TensorRTBackend,
    builder_flags_for,
    device_info,
    engine_fingerprint,
    optimization_shapes,
    run_in_pieces,
)
from edgeaudio.bundle import load_bundle, write_manifest
from edgeaudio.errors import BackendUnavailable, ExportError, UsageError
from edgeaudio.exporters.base import export_targets
from edgeaudio.exporters.onnx import export_onnx
from edgeaudio.exporters.pipeline import _graph_entry, _runner_for
from edgeaudio.exporters.tensorrt import TensorRTTarget
from edgeaudio.task import Graph, Streaming, TensorSpec

BLOCK = 16
FEATURES = 4
DIGEST = "ab" * 32
ORIN = {"gpu": "Orin", "capability": "8.7", "tensorrt": "10.3.0", "cuda": "12.6"}
SHAPES = {"audio": ((1, 1, 16), (1, 1, 16), (1, 1, 1024))}


# -- a tiny graph: Conv1d + ReLU over [batch, 1, samples], one frame per block --------------------
class ConvReLU(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(1, FEATURES, kernel_size=BLOCK, stride=BLOCK)

    def forward(self, audio):
        return torch.relu(self.conv(audio))


def _audio(seed: int, blocks: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 1, blocks * BLOCK)).astype(np.float32)


@pytest.fixture
def graph(tmp_path) -> Graph:
    return Graph(
        name="tiny",
        module=ConvReLU().eval(),
        inputs=[TensorSpec("audio", ("batch", 1, "samples"))],
        outputs=[TensorSpec("features", ("batch", FEATURES, "frames"))],
        example_inputs={"audio": _audio(0, 8)},
        streaming=Streaming("audio", block=BLOCK, time_axes={"features": 2}),
    )


@pytest.fixture
def onnx_path(graph, tmp_path) -> Path:
    return export_onnx(graph, tmp_path / "tiny.onnx")


CALIBRATION = [{"audio": _audio(seed, 8)} for seed in range(1, 9)]


def _bundle(graph: Graph, onnx_path: Path, root: Path, precisions=("fp32", "fp16", "int8")):
    """A bundle holding only the tensorrt artifacts, written as the pipeline writes them."""
    artifacts = [
        {"backend": "tensorrt", "precision": p, "files": TensorRTTarget().build(graph, onnx_path, p, root, CALIBRATION)}
        for p in precisions
    ]
    manifest = {"task": {"name": "tiny", "version": "1"}, "audio": {"sample_rate": 8000, "channels": 1},
                "graphs": [_graph_entry(graph, artifacts)]}
    write_manifest(root, manifest)
    return load_bundle(root)


# -- fingerprint ---------------------------------------------------------------------------------
def test_fingerprint_is_stable_and_ignores_key_order():
    first = engine_fingerprint(DIGEST, "fp16", ORIN, SHAPES)
    reordered = dict(reversed(list(ORIN.items())))
    assert first == engine_fingerprint(DIGEST, "fp16", reordered, dict(SHAPES))
    assert len(first) == 64 and int(first, 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        {"onnx_sha256": "cd" * 32},
        {"precision": "int8"},
        {"device_info": dict(ORIN, tensorrt="10.7.0")},
        {"device_info": dict(ORIN, gpu="NVIDIA GeForce RTX 4090")},
        {"device_info": dict(ORIN, capability="8.9")},
        {"device_info": dict(ORIN, cuda="12.2")},
        {"shapes": {"audio": ((1, 1, 16), (1, 1, 16), (1, 1, 2048))}},
        {"shapes": {"audio": ((1, 1, 16), (1, 1, 64), (1, 1, 1024))}},
    ],
    ids=["onnx", "precision", "tensorrt", "gpu", "capability", "cuda", "max-shape", "opt-shape"],
)
def test_fingerprint_changes_with_every_ingredient(change):
    base = {"onnx_sha256": DIGEST, "precision": "fp16", "device_info": ORIN, "shapes": SHAPES}
    assert engine_fingerprint(**base) != engine_fingerprint(**{**base, **change})


# -- engine cache --------------------------------------------------------------------------------
def test_cache_miss_then_hit(tmp_path):
    cache = EngineCache(tmp_path / "engines")
    key = engine_fingerprint(DIGEST, "fp32", ORIN, SHAPES)
    assert cache.get(key) is None
    path = cache.put(key, b"\x00engine\n\nbytes")
    assert path == cache.path(key) == tmp_path / "engines" / f"{key}.engine"
    assert cache.get(key) == b"\x00engine\n\nbytes"
    assert [p.name for p in (tmp_path / "engines").iterdir()] == [path.name], "no temporary files left"


def test_default_cache_root_follows_edgeaudio_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEAUDIO_CACHE", str(tmp_path))
    assert trt_backend.default_cache_root() == tmp_path / "engines"


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob, other: blob[:-3],  # truncated write
        lambda blob, other: blob[:-1] + b"X",  # flipped byte in the engine
        lambda blob, other: other,  # a file copied from another key
        lambda blob, other: b"raw engine from trtexec",  # a foreign file
        lambda blob, other: b"",
    ],
    ids=["truncated", "flipped", "other-key", "foreign", "empty"],
)
def test_damaged_cache_file_is_a_miss_and_is_replaced(tmp_path, damage):
    cache = EngineCache(tmp_path)
    key, other = (engine_fingerprint(DIGEST, p, ORIN, SHAPES) for p in ("fp32", "fp16"))
    cache.put(key, b"engine-bytes")
    cache.put(other, b"other-engine")
    cache.path(key).write_bytes(damage(cache.path(key).read_bytes(), cache.path(other).read_bytes()))
    assert cache.get(key) is None
    cache.put(key, b"rebuilt")
    assert cache.get(key) == b"rebuilt"


def test_unreadable_cache_entry_is_a_miss(tmp_path):
    cache = EngineCache(tmp_path)
    cache.path("abc").mkdir()
    assert cache.get("abc") is None


# -- precision flags and profile shapes ----------------------------------------------------------
def test_builder_flags_per_precision():
    assert builder_flags_for("fp32") == []
    assert builder_flags_for("fp16") == ["FP16"]
    assert builder_flags_for("int8") == ["INT8", "FP16"]


@pytest.mark.parametrize("precision", ["int4", "bf16", "FP16", ""])
def test_unknown_precision_is_a_usage_error(precision):
    with pytest.raises(UsageError, match="fp32, fp16, int8"):
        builder_flags_for(precision)


def test_optimization_shapes_from_specs():
    specs = [
        TensorSpec("audio", ("batch", 2, "samples")),
        TensorSpec("tail", ("batch", 2, 80)),
        TensorSpec("hidden", (1, "batch", 24)),
        TensorSpec("fixed", (3, 5)),
    ]
    assert optimization_shapes(specs, block=80, max_blocks=64) == {
        "audio": ((1, 2, 80), (1, 2, 80), (1, 2, 80 * 64)),
        "tail": ((1, 2, 80), (1, 2, 80), (1, 2, 80)),
        "hidden": ((1, 1, 24), (1, 1, 24), (1, 1, 24)),
        "fixed": ((3, 5), (3, 5), (3, 5)),
    }


def test_optimization_shapes_refuse_empty_ranges():
    with pytest.raises(UsageError, match="must be positive"):
        optimization_shapes([TensorSpec("audio", ("batch", 1, "samples"))], block=16, max_blocks=0)


def test_backend_profile_shapes_from_the_manifest_and_options(graph):
    entry = _graph_entry(graph, [])
    assert TensorRTBackend().profile_shapes(entry) == {"audio": ((1, 1, 16), (1, 1, 16), (1, 1, 16 * 64))}
    assert TensorRTBackend({"max_blocks": 8}).profile_shapes(entry)["audio"][2] == (1, 1, 128)
    custom = TensorRTBackend({"shapes": {"audio": [[1, 1, 16], [1, 1, 160], [1, 1, 1600]]}})
    assert custom.profile_shapes(entry) == {"audio": ((1, 1, 16), (1, 1, 160), (1, 1, 1600))}


def test_non_streaming_graph_needs_a_block_or_shapes(graph):
    entry = dict(_graph_entry(graph, []), streaming=None)
    with pytest.raises(UsageError, match="not a streaming graph") as caught:
        TensorRTBackend().profile_shapes(entry)
    assert "shapes" in caught.value.hint
    assert TensorRTBackend({"block": 100, "max_blocks": 10}).profile_shapes(entry)["audio"][2] == (1, 1, 1000)


def test_declared_axes_give_a_non_streaming_graph_its_profile(graph):
    """Whole-clip graphs (encoders, beam-search decoder steps, generators) declare their ranges."""
    specs = [
        {"name": "tokens", "shape": ["batch", "tokens"], "dtype": "int64"},
        {"name": "mel", "shape": ["batch", 64, "frames"], "dtype": "float32"},
        {"name": "t", "shape": ["batch"], "dtype": "float32"},
    ]
    entry = dict(_graph_entry(graph, []), streaming=None, inputs=specs,
                 axes={"batch": [1, 2, 2], "tokens": [2, 16, 32], "frames": [4, 316, 628]})  # fmt: skip
    assert TensorRTBackend().profile_shapes(entry) == {
        "tokens": ((1, 2), (2, 16), (2, 32)),
        "mel": ((1, 64, 4), (2, 64, 316), (2, 64, 628)),
        "t": ((1,), (2,), (2,)),
    }
    custom = TensorRTBackend({"shapes": {"t": [[1], [1], [1]]}}).profile_shapes(entry)
    assert custom["t"] == ((1,), (1,), (1,)) and custom["mel"][2] == (2, 64, 628)


def test_export_records_declared_axes_in_the_manifest(graph):
    graph.axes = {"samples": (16, 160, 1600)}
    assert _graph_entry(graph, [])["axes"] == {"samples": [16, 160, 1600]}


# -- long inputs run in pieces, carrying state ---------------------------------------------------
def _running_sum(feeds):
    """A stateful streaming "graph": per block, the sum of everything seen so far."""
    audio, total = feeds["audio"], feeds["total"]
    sums = audio.reshape(1, -1, BLOCK).sum(axis=2)
    running = total + np.cumsum(sums, axis=1)
    return {"sums": running[:, :, None], "total_out": running[:, -1:]}


def test_long_input_runs_in_pieces_like_one_call():
    audio = _audio(3, 37)
    feeds = {"audio": audio, "total": np.full((1, 1), 2.0, np.float32)}
    state = [{"input": "total", "output": "total_out"}]
    calls = []

    def execute(piece):
        assert piece["audio"].shape[-1] <= 5 * BLOCK
        calls.append(piece["audio"].shape[-1])
        return _running_sum(piece)

    pieces = run_in_pieces(execute, feeds, "audio", 5 * BLOCK, state, {"sums": 1})
    whole = _running_sum(feeds)
    assert calls == [80] * 7 + [32]
    assert pieces.keys() == whole.keys()
    for name in whole:
        np.testing.assert_allclose(pieces[name], whole[name], rtol=1e-5)


def test_short_input_is_one_call():
    feeds = {"audio": _audio(4, 3), "total": np.zeros((1, 1), np.float32)}
    calls = []
    run_in_pieces(lambda f: calls.append(f) or _running_sum(f), feeds, "audio", 3 * BLOCK, [], {})
    assert len(calls) == 1 and calls[0] is feeds


# -- the build and cache orchestration, against a stand-in for the TensorRT API -------------------
class FakeTensorRT:
    """Just enough of the TensorRT 10 Python API to record what ``build_engine`` asks for. It checks
    our orchestration (flags, profile, parser errors, cache reuse), not TensorRT itself."""

    __version__ = "10.3.0"
    MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    BuilderFlag = SimpleNamespace(FP16="FP16", INT8="INT8")

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity):
            self.severity = severity

    def __init__(self, inputs=("audio",), parse_errors=()):
        self.inputs, self.parse_errors = inputs, parse_errors
        self.flags, self.shapes, self.pool, self.builds = [], {}, None, 0

    def Builder(self, logger):
        fake = self
        fake.flags = []  # one builder config per build
        network = SimpleNamespace(num_inputs=len(self.inputs), get_input=lambda i: SimpleNamespace(name=self.inputs[i]))

        def build(net, config):
            fake.builds += 1
            return b"engine:" + ",".join(fake.flags).encode()

        config = SimpleNamespace(
            set_memory_pool_limit=lambda pool, size: setattr(fake, "pool", (pool, size)),
            set_flag=fake.flags.append,
            add_optimization_profile=lambda profile: None,
        )
        profile = SimpleNamespace(set_shape=lambda name, *bounds: fake.shapes.__setitem__(name, bounds))
        return SimpleNamespace(
            create_network=lambda flags: network,
            create_builder_config=lambda: config,
            create_optimization_profile=lambda: profile,
            build_serialized_network=build,
        )

    def OnnxParser(self, network, logger):
        errors = [SimpleNamespace(desc=lambda d=d: d, node=lambda i=i: i) for i, d in enumerate(self.parse_errors)]
        return SimpleNamespace(
            parse_from_file=lambda path: not errors, num_errors=len(errors), get_error=errors.__getitem__
        )

    def Runtime(self, logger):
        return SimpleNamespace(deserialize_cuda_engine=lambda data: data if data.startswith(b"engine:") else None)


@pytest.fixture
def fake_trt(monkeypatch):
    fake = FakeTensorRT()
    monkeypatch.setattr(trt_backend, "_tensorrt", lambda: fake)
    trt_backend._trt_logger.cache_clear()
    trt_backend._trt_runtime.cache_clear()
    yield fake
    trt_backend._trt_logger.cache_clear()
    trt_backend._trt_runtime.cache_clear()


def test_build_sets_precision_flags_workspace_and_profile(fake_trt, tmp_path):
    engine = trt_backend.build_engine(tmp_path / "tiny.onnx", "int8", SHAPES, workspace_mb=256)
    assert engine == b"engine:INT8,FP16"
    assert fake_trt.pool == ("WORKSPACE", 256 << 20)
    assert fake_trt.shapes == SHAPES


def test_parser_errors_are_reported_with_their_descriptions(fake_trt, tmp_path):
    fake_trt.parse_errors = ("Unsupported ONNX op: STFT", "could not infer shape")
    with pytest.raises(ExportError, match=r"cannot parse tiny.onnx: Unsupported ONNX op: STFT \(node 0\); could not"):
        trt_backend.build_engine(tmp_path / "tiny.onnx", "fp32", SHAPES, workspace_mb=256)


def test_undeclared_onnx_input_is_an_error(fake_trt, tmp_path):
    fake_trt.inputs = ("audio", "extra")
    with pytest.raises(ExportError, match="input 'extra' that the manifest does not declare"):
        trt_backend.build_engine(tmp_path / "tiny.onnx", "fp32", SHAPES, workspace_mb=256)


def test_engine_is_built_once_then_cached_and_rebuilt_when_refused(fake_trt, tmp_path):
    cache = EngineCache(tmp_path / "engines")
    key = engine_fingerprint(DIGEST, "fp16", ORIN, SHAPES)

    def load():
        return TensorRTBackend()._cached_or_built(cache, key, tmp_path / "tiny.onnx", "tiny", "fp16", SHAPES)

    assert load() == b"engine:FP16" and fake_trt.builds == 1
    assert cache.get(key) == b"engine:FP16"
    assert load() == b"engine:FP16" and fake_trt.builds == 1, "second load must come from the cache"
    cache.put(key, b"an engine from another TensorRT")  # intact file, but TensorRT refuses it
    assert load() == b"engine:FP16" and fake_trt.builds == 2
    assert cache.get(key) == b"engine:FP16"


# -- this host: no TensorRT, no GPU --------------------------------------------------------------
def test_backend_and_target_are_registered_plugins():
    assert backends()["tensorrt"] is TensorRTBackend
    assert export_targets()["tensorrt"] is TensorRTTarget


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_unavailable_without_tensorrt_says_where_to_get_it():
    ok, why = TensorRTBackend.available()
    assert not ok
    assert "TensorRT is not installed" in why and "JetPack" in why
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed") as caught:
        device_info()
    assert "JetPack" in caught.value.hint


def _tensorrt_but(monkeypatch, *, cuda: bool, node: str | None):
    monkeypatch.setattr(trt_backend, "_tensorrt", lambda: object())
    monkeypatch.setattr(trt_backend, "_gpu_node", lambda: node)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)


def test_unavailable_without_gpu_says_so(monkeypatch):
    _tensorrt_but(monkeypatch, cuda=False, node=None)
    ok, why = TensorRTBackend.available()
    assert not ok and "no CUDA GPU is visible" in why and "onnxruntime" in why


def test_unavailable_with_cpu_only_torch_names_the_fix(monkeypatch):
    _tensorrt_but(monkeypatch, cuda=False, node="/dev/nvhost-ctrl-gpu")
    ok, why = TensorRTBackend.available()
    assert not ok
    assert "a GPU is present (/dev/nvhost-ctrl-gpu)" in why and "CPU-only" in why
    assert "torch wheel for your JetPack" in why


# -- the export target ---------------------------------------------------------------------------
def test_target_declares_on_device_build():
    ok, why = TensorRTTarget.available()
    assert ok and "built on the device" in why
    assert TensorRTTarget.runs_here is False and TensorRTTarget.proxy_backend == "onnxruntime"
    assert TensorRTTarget.precisions == ("fp32", "fp16", "int8")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_float_artifacts_are_the_checked_onnx(graph, onnx_path, tmp_path, precision):
    files = TensorRTTarget().build(graph, onnx_path, precision, tmp_path / "out", [])
    assert files == {"model": f"tensorrt/tiny.{precision}.onnx"}
    assert (tmp_path / "out" / files["model"]).read_bytes() == onnx_path.read_bytes()


def test_int8_artifact_is_symmetric_qdq(graph, onnx_path, tmp_path):
    files = TensorRTTarget().build(graph, onnx_path, "int8", tmp_path, CALIBRATION)
    assert files == {"model": "tensorrt/tiny.int8.onnx"}
    model = onnx.load(str(tmp_path / files["model"]))
    initializers = {t.name: t for t in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize, "no QuantizeLinear nodes: the graph was not quantized"
    for node in quantize:
        zero_point = initializers[node.input[2]]
        assert zero_point.data_type == onnx.TensorProto.INT8, f"{node.name} is not int8"
        assert not numpy_helper.to_array(zero_point).any(), f"{node.name} is not symmetric"


def test_target_refuses_what_it_cannot_build(graph, onnx_path, tmp_path):
    with pytest.raises(ExportError, match="cannot build bf16"):
        TensorRTTarget().build(graph, onnx_path, "bf16", tmp_path, CALIBRATION)
    with pytest.raises(ExportError, match="calibration data"):
        TensorRTTarget().build(graph, onnx_path, "int8", tmp_path, [])


def test_onnxruntime_runs_the_int8_artifact_as_proxy(graph, onnx_path, tmp_path):
    bundle = _bundle(graph, onnx_path, tmp_path / "bundle", precisions=("int8",))
    audio = _audio(42, 12)
    got = _runner_for(bundle, None, "tensorrt", "onnxruntime", "int8").graph("tiny").run({"audio": audio})
    want = graph.module(torch.from_numpy(audio)).detach().numpy()
    assert got["features"].shape == want.shape == (1, FEATURES, 12)
    assert np.abs(got["features"] - want).max() <= 0.05 * np.abs(want).max()


# -- on the device: build, cache and run the engine ----------------------------------------------
def _ort_outputs(bundle, precision: str, audio: np.ndarray) -> np.ndarray:
    spec = bundle.graph("tiny")
    artifact = next(a for a in spec["artifacts"] if a["precision"] == precision)
    return OnnxRuntimeBackend({"providers": ["CPUExecutionProvider"]}).load_graph(bundle, spec, artifact).run(
        {"audio": audio}
    )["features"]


@pytest.mark.hardware
def test_engine_builds_caches_and_matches_onnxruntime(graph, onnx_path, tmp_path, monkeypatch):
    ok, why = TensorRTBackend.available()
    if not ok:
        pytest.skip(f"TensorRT is not installed / no CUDA GPU: {why}")
    monkeypatch.setenv("EDGEAUDIO_CACHE", str(tmp_path / "cache"))
    builds = []
    build = trt_backend.build_engine
    monkeypatch.setattr(trt_backend, "build_engine", lambda *args: builds.append(args[1]) or build(*args))
    bundle = _bundle(graph, onnx_path, tmp_path / "bundle")
    spec = bundle.graph("tiny")
    backend = TensorRTBackend({"max_blocks": 8})  # small profile, so a long clip runs in pieces
    tolerance = {"fp32": 1e-4, "fp16": 1e-2, "int8": 5e-2}
    for artifact in spec["artifacts"]:
        precision = artifact["precision"]
        runner = backend.load_graph(bundle, spec, artifact)
        for blocks in (1, 8, 21):  # shortest, the profile's longest, and longer than the profile
            audio = _audio(blocks, blocks)
            got = runner.run({"audio": audio})["features"]
            want = _ort_outputs(bundle, precision, audio)
            assert got.shape == want.shape == (1, FEATURES, blocks)
            scale = max(float(np.abs(want).max()), 1.0)
            assert np.abs(got - want).max() <= tolerance[precision] * scale, f"{precision}, {blocks} blocks"
    engines = sorted((tmp_path / "cache" / "engines").glob("*.engine"))
    assert builds == ["fp32", "fp16", "int8"] and len(engines) == 3, "one cached engine per precision"

    int8 = next(a for a in spec["artifacts"] if a["precision"] == "int8")
    audio = _audio(7, 4)
    want = _ort_outputs(bundle, "int8", audio)
    cached = backend.load_graph(bundle, spec, int8).run({"audio": audio})["features"]
    assert builds == ["fp32", "fp16", "int8"], "the cached engine should have been used"
    assert np.abs(cached - want).max() <= 5e-2 * max(float(np.abs(want).max()), 1.0)

    for engine in engines:
        engine.write_bytes(engine.read_bytes()[:100])  # a corrupt cache is rebuilt, not a crash
    rebuilt = backend.load_graph(bundle, spec, int8).run({"audio": audio})["features"]
    assert builds[-1] == "int8" and len(builds) == 4
    assert np.abs(rebuilt - want).max() <= 5e-2 * max(float(np.abs(want).max()), 1.0)
