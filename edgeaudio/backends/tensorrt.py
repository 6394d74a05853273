"""TensorRT backend: runs ``tensorrt`` artifacts, which are ONNX files (fp32, or INT8 symmetric QDQ).

A TensorRT engine is tied to the GPU and the TensorRT version that built it, so bundles carry ONNX
and the engine is built here, on the device, the first time a graph is loaded. It is cached under
``$EDGEAUDIO_CACHE/engines`` (default ``~/.cache/edgeaudio/engines``) keyed by a fingerprint of
everything that makes an engine valid: the ONNX bytes, the precision, the GPU, TensorRT and CUDA
versions and the optimization-profile shapes. Change any of them and a new engine is built.

Device buffers come from torch CUDA tensors, so running needs a CUDA build of torch next to
TensorRT (on Jetson: TensorRT from JetPack, torch from NVIDIA's Jetson wheels). Everything that
decides *what* to build (fingerprint, cache, flags, shapes, splitting long inputs) is plain Python
and is tested without a GPU; only ``build_engine`` and ``TensorRTGraph`` touch TensorRT.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgeaudio.backends.base import Backend, GraphRunner, check_feeds
from edgeaudio.bundle import sha256_file
from edgeaudio.errors import BackendUnavailable, EdgeAudioError, ExportError, UsageError
from edgeaudio.hookspecs import hookimpl
from edgeaudio.graphspec import TensorSpec
from edgeaudio.staging import write_atomically

logger = logging.getLogger(__name__)

Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
Feeds = Mapping[str, np.ndarray]

DEFAULT_MAX_BLOCKS = 64
DEFAULT_WORKSPACE_MB = 1024
# Bumped whenever the way engines are built changes, so old cached engines are not reused.
ENGINE_FORMAT = "edgeaudio-tensorrt-engine/1"

_GPU_NODES = ("/dev/nvidia0", "/dev/nvhost-ctrl-gpu")  # desktop driver; Jetson's integrated GPU
_TENSORRT_HINT = (
    "on Jetson TensorRT comes with JetPack (apt install python3-libnvinfer; create the venv with "
    "--system-site-packages); on x86 pip install 'edgeaudio[tensorrt]' (NVIDIA's wheels)"
)
_TORCH_HINT = (
    "install a CUDA build of torch: on Jetson NVIDIA's torch wheel for your JetPack, on x86 a "
    "CUDA wheel from pytorch.org; or use the onnxruntime backend"
)


# -- what to build ------------------------------------------------------------------------------
def builder_flags_for(precision: str) -> list[str]:
    """Names of the ``trt.BuilderFlag`` members a precision needs.

    INT8 artifacts are QDQ ONNX (explicit quantization: scales come from the graph, no calibrator);
    FP16 is allowed beside INT8 so the layers left in float by the quantizer need not run in fp32.
    """
    flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}
    if precision not in flags:
        raise UsageError(f"TensorRT cannot build precision '{precision}'; use one of {', '.join(flags)}")
    return list(flags[precision])


def optimization_shapes(input_specs: Sequence[TensorSpec], block: int, max_blocks: int) -> Shapes:
    """(min, opt, max) shapes of every input for the engine's single optimization profile.

    A batch axis (axis 0, or any axis named ``batch``) is 1: a stream is one stream. Every other
    dynamic axis is a time axis measured in ``block`` units and may hold 1 to ``max_blocks``
    blocks; ``opt`` is one block because live streaming, the latency-critical case, feeds one
    block at a time. Fixed axes (state inputs are all fixed but batch) keep their size.
    """
    if block < 1 or max_blocks < 1:
        raise UsageError(f"block ({block}) and max_blocks ({max_blocks}) must be positive")
    shapes: Shapes = {}
    for spec in input_specs:
        low, opt, high = [], [], []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int):
                sizes = (dim, dim, dim)
            elif _is_time_axis(axis, dim):
                sizes = (block, block, block * max_blocks)
            else:
                sizes = (1, 1, 1)
            for bound, size in zip((low, opt, high), sizes):
                bound.append(size)
        shapes[spec.name] = (tuple(low), tuple(opt), tuple(high))
    return shapes


def declared_shapes(input_specs: Sequence[TensorSpec], axes: Mapping[str, Sequence[int]]) -> Shapes:
    """(min, opt, max) shapes of the inputs whose every dynamic axis has a declared range."""
    shapes: Shapes = {}
    for spec in input_specs:
        dynamic = [dim for dim in spec.shape if isinstance(dim, str)]
        if not dynamic or any(dim not in axes for dim in dynamic):
            continue
        bounds = [[dim] * 3 if isinstance(dim, int) else [int(size) for size in axes[dim]] for dim in spec.shape]
        shapes[spec.name] = tuple(tuple(b[i] for b in bounds) for i in range(3))
    return shapes


def _is_time_axis(axis: int, dim: int | str) -> bool:
    return isinstance(dim, str) and axis != 0 and dim != "batch"


def engine_fingerprint(onnx_sha256: str, precision: str, device_info: Mapping[str, str], shapes: Shapes) -> str:
    """The cache key of an engine: sha256 over everything that makes a built engine valid.

    Engines do not move between GPUs or TensorRT/CUDA versions, and an engine built for other
    profile shapes or another precision is a different engine, so all of these are in the key.
    """
    payload = {
        "format": ENGINE_FORMAT,
        "onnx": onnx_sha256,
        "precision": precision,
        "device": {key: str(device_info[key]) for key in ("gpu", "capability", "tensorrt", "cuda")},
        "shapes": {name: [list(bound) for bound in bounds] for name, bounds in shapes.items()},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def default_cache_root() -> Path:
    """``$EDGEAUDIO_CACHE/engines``, the same cache root bundles unpack into."""
    return Path(os.environ.get("EDGEAUDIO_CACHE", Path.home() / ".cache" / "edgeaudio")) / "engines"


class EngineCache:
    """Serialized engines on disk, one file per fingerprint.

    Each file starts with a header naming its fingerprint and the sha256 of the engine bytes, so a
    truncated write, a file copied from another key or any other foreign file reads as a miss and
    the engine is rebuilt instead of being handed to TensorRT. Writes are atomic (temporary file,
    then rename), so concurrent loaders never see half an engine.
    """

    MAGIC = b"edgeaudio-trt-engine\n"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, fingerprint: str) -> Path:
        return self.root / f"{fingerprint}.engine"

    def get(self, fingerprint: str) -> bytes | None:
        """The cached engine bytes, or None when absent, unreadable, corrupt or not this key's."""
        try:
            blob = self.path(fingerprint).read_bytes()
        except OSError:
            return None
        header, _, rest = blob.partition(b"\n\n")
        lines = header.split(b"\n")
        if not blob.startswith(self.MAGIC) or len(lines) != 3 or lines[1] != fingerprint.encode():
            return None
        if lines[2] != hashlib.sha256(rest).hexdigest().encode():
            return None
        return rest

    def put(self, fingerprint: str, engine: bytes) -> Path:
        """Store ``engine`` under ``fingerprint`` atomically; returns the file's path."""
        self.root.mkdir(parents=True, exist_ok=True)
        header = self.MAGIC + fingerprint.encode() + b"\n" + hashlib.sha256(engine).hexdigest().encode() + b"\n\n"
        return write_atomically(self.path(fingerprint), lambda building: building.write_bytes(header + engine))


def run_in_pieces(
    execute: Callable[[Feeds], dict[str, np.ndarray]],
    feeds: Feeds,
    audio_input: str,
    max_samples: int,
    state: Sequence[Mapping[str, str]],
    time_axes: Mapping[str, int],
) -> dict[str, np.ndarray]:
    """Run a streaming graph on audio longer than its engine's profile allows, piece by piece.

    An engine only accepts inputs up to its profile's maximum, but whole clips are one call. A
    streaming graph's chunked output equals its one-call output (that is the streaming contract),
    so the audio is cut into ``max_samples`` pieces, state is carried between them and the frames
    are concatenated along each output's time axis, exactly as ``runtime.Stream`` does.
    """
    audio = feeds[audio_input]
    if audio.shape[-1] <= max_samples:
        return execute(feeds)
    carried = {pair["input"]: feeds[pair["input"]] for pair in state}
    state_outputs = {pair["output"] for pair in state}
    frames: dict[str, list[np.ndarray]] = {}
    out: dict[str, np.ndarray] = {}
    for start in range(0, audio.shape[-1], max_samples):
        out = execute({**feeds, **carried, audio_input: audio[..., start : start + max_samples]})
        carried = {pair["input"]: out[pair["output"]] for pair in state}
        for name, value in out.items():
            if name not in state_outputs:
                frames.setdefault(name, []).append(value)
    joined = {name: np.concatenate(parts, axis=time_axes.get(name, 1)) for name, parts in frames.items()}
    return {name: joined[name] if name in joined else out[name] for name in out}


# -- the host -----------------------------------------------------------------------------------
def _tensorrt():
    """``import tensorrt``, or BackendUnavailable saying where TensorRT comes from."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: bindings present, libnvinfer missing
        raise BackendUnavailable(f"TensorRT is not installed ({exc})", hint=_TENSORRT_HINT) from exc
    return tensorrt


def _gpu_node() -> str | None:
    return next((node for node in _GPU_NODES if os.path.exists(node)), None)


def _cuda_torch():
    """torch with a usable CUDA device (for device buffers and streams), or BackendUnavailable
    telling apart "no GPU here" from "a GPU, but torch cannot reach it"."""
    node = _gpu_node()
    try:
        import torch
    except ImportError as exc:
        where = f"a GPU is present ({node}) but " if node else ""
        raise BackendUnavailable(
            f"{where}running TensorRT engines needs torch with CUDA, which is not installed", hint=_TORCH_HINT
        ) from exc
    if torch.cuda.is_available():
        return torch
    if node:
        raise BackendUnavailable(
            f"a GPU is present ({node}) but torch {torch.__version__} cannot use CUDA (a CPU-only build?)",
            hint=_TORCH_HINT,
        )
    raise BackendUnavailable(
        f"no CUDA GPU is visible (torch.cuda.is_available() is False, no {' or '.join(_GPU_NODES)})",
        hint="TensorRT runs on NVIDIA GPUs; use the onnxruntime or openvino backend on this host",
    )


def device_info() -> dict[str, str]:
    """What an engine is bound to: GPU name and compute capability, TensorRT and CUDA versions.

    Raises BackendUnavailable (with the install hint) when TensorRT or a CUDA GPU is missing.
    """
    trt = _tensorrt()
    torch = _cuda_torch()
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return {
        "gpu": torch.cuda.get_device_name(index),
        "capability": f"{major}.{minor}",
        "tensorrt": trt.__version__,
        "cuda": str(torch.version.cuda),
    }


# -- building and running (needs TensorRT and a GPU) --------------------------------------------
@functools.lru_cache(maxsize=1)
def _trt_logger():
    """One TensorRT logger per process, as TensorRT expects, shared by builders and runtimes."""
    trt = _tensorrt()
    return trt.Logger(trt.Logger.WARNING)


def build_engine(onnx_path: Path, precision: str, shapes: Shapes, workspace_mb: int) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine at ``precision`` for ``shapes``."""
    trt = _tensorrt()
    builder = trt.Builder(_trt_logger())
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, _trt_logger())
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(
            f"{parser.get_error(i).desc()} (node {parser.get_error(i).node()})" for i in range(parser.num_errors)
        )
        raise ExportError(
            f"TensorRT {trt.__version__} cannot parse {onnx_path.name}: {errors or 'no details'}",
            hint="use the onnxruntime backend for this bundle, or a newer JetPack/TensorRT",
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for flag in builder_flags_for(precision):
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        name = network.get_input(index).name
        if name not in shapes:
            raise ExportError(f"{onnx_path.name} has input '{name}' that the manifest does not declare")
        profile.set_shape(name, *shapes[name])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            f"TensorRT failed to build an engine for {onnx_path.name} at {precision} (see its log above)",
            hint="try another precision, a larger workspace_mb option, or the onnxruntime backend",
        )
    return bytes(serialized)


@functools.lru_cache(maxsize=1)
def _trt_runtime():
    """One runtime per process; it must outlive the engines it deserializes."""
    return _tensorrt().Runtime(_trt_logger())


def _deserialize(data: bytes):
    """The engine in ``data``, or None when TensorRT refuses it (corrupt, or another version's)."""
    return _trt_runtime().deserialize_cuda_engine(data)


class TensorRTGraph(GraphRunner):
    """One engine with one execution context; feeds and results are numpy, buffers torch CUDA."""

    def __init__(self, engine, graph: Mapping[str, Any], shapes: Shapes):
        trt = _tensorrt()
        self.torch = _cuda_torch()
        self.engine = engine
        self.context = engine.create_execution_context()
        self.stream = self.torch.cuda.Stream()
        self.shapes = shapes
        self.graph = graph
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = {name for name in names if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT}
        self.dtypes = {name: np.dtype(trt.nptype(engine.get_tensor_dtype(name))) for name in names}
        self.input_names = [name for name in names if name in inputs]
        self.output_names = [name for name in names if name not in inputs]

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        check_feeds(self, feeds)
        streaming = self.graph.get("streaming")
        if not streaming:
            return self._execute(feeds)
        audio_input = streaming["audio_input"]
        return run_in_pieces(
            self._execute,
            feeds,
            audio_input,
            self.shapes[audio_input][2][-1],
            self.graph.get("state", []),
            streaming["time_axes"],
        )

    def _execute(self, feeds: Feeds) -> dict[str, np.ndarray]:
        torch = self.torch
        with torch.cuda.stream(self.stream):
            tensors = {}
            for name in self.input_names:
                value = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
                if not self.context.set_input_shape(name, value.shape):
                    low, _, high = self.shapes[name]
                    raise UsageError(
                        f"input '{name}' shaped {value.shape} is outside the engine's range {low}..{high}",
                        hint="load the backend with larger max_blocks or explicit shapes options",
                    )
                tensors[name] = torch.from_numpy(value).to("cuda")
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                tensors[name] = torch.empty(shape, dtype=_torch_dtype(torch, self.dtypes[name]), device="cuda")
            for name, tensor in tensors.items():
                self.context.set_tensor_address(name, tensor.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise EdgeAudioError("TensorRT failed to run the engine (see its log above)")
        self.stream.synchronize()
        return {name: tensors[name].cpu().numpy() for name in self.output_names}


def _torch_dtype(torch, dtype: np.dtype):
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


class TensorRTBackend(Backend):
    """Options: ``max_blocks`` (longest input per engine call, in streaming blocks; default 64),
    ``block`` (the time unit of a non-streaming graph's dynamic axes), ``shapes``
    (``{input: [min, opt, max]}`` overriding the derived profile), ``workspace_mb`` (builder
    memory pool, default 1024)."""

    name = "tensorrt"
    artifact = "tensorrt"
    description = "NVIDIA TensorRT (engine built on this GPU at first load and cached)"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            info = device_info()
        except BackendUnavailable as exc:
            return False, f"{exc} ({exc.hint})" if exc.hint else str(exc)
        return True, f"TensorRT {info['tensorrt']} on {info['gpu']} (sm {info['capability']}, CUDA {info['cuda']})"

    def load_graph(self, bundle, graph: Mapping[str, Any], artifact: Mapping[str, Any]) -> GraphRunner:
        onnx_path = Path(bundle.path(artifact["files"]["model"]))
        precision = artifact["precision"]
        shapes = self.profile_shapes(graph)
        key = engine_fingerprint(sha256_file(onnx_path), precision, device_info(), shapes)
        cache = EngineCache(default_cache_root())
        engine = self._cached_or_built(cache, key, onnx_path, graph["name"], precision, shapes)
        return TensorRTGraph(engine, graph, shapes)

    def profile_shapes(self, graph: Mapping[str, Any]) -> Shapes:
        """The optimization profile for a manifest graph entry: the ``shapes`` option first, then
        the axis ranges the graph declares (``axes``), then the streaming block's derivation."""
        specs = [TensorSpec.from_json(t) for t in graph["inputs"]]
        overrides = declared_shapes(specs, graph.get("axes") or {})
        overrides.update({
            name: tuple(tuple(int(size) for size in bound) for bound in bounds)
            for name, bounds in self.options.get("shapes", {}).items()
        })  # fmt: skip
        streaming = graph.get("streaming")
        block = streaming["block"] if streaming else self.options.get("block")
        unresolved = [
            spec.name
            for spec in specs
            if spec.name not in overrides and any(_is_time_axis(a, d) for a, d in enumerate(spec.shape))
        ]
        if block is None and unresolved:
            raise UsageError(
                f"graph '{graph['name']}' is not a streaming graph, "
                f"so the time axes of {unresolved} have no block size",
                hint="load the tensorrt backend with options {'block': N} or {'shapes': {input: [min, opt, max]}}",
            )
        max_blocks = int(self.options.get("max_blocks", DEFAULT_MAX_BLOCKS))
        shapes = optimization_shapes(specs, int(block or 1), max_blocks)
        shapes.update(overrides)
        return shapes

    def _cached_or_built(
        self, cache: EngineCache, key: str, onnx_path: Path, name: str, precision: str, shapes: Shapes
    ):
        """The cached engine when it deserializes, else a freshly built one (then cached)."""
        cached = cache.get(key)
        engine = _deserialize(cached) if cached is not None else None
        if engine is not None:
            return engine
        logger.warning(
            "building the TensorRT %s engine for graph '%s' on this device; this takes minutes once, "
            "then it is cached at %s", precision, name, cache.path(key),
        )
        workspace_mb = int(self.options.get("workspace_mb", DEFAULT_WORKSPACE_MB))
        data = build_engine(onnx_path, precision, shapes, workspace_mb)
        try:
            cache.put(key, data)
        except OSError as exc:
            logger.warning("could not cache the TensorRT engine in %s (%s); it is rebuilt next time", cache.root, exc)
        engine = _deserialize(data)
        if engine is None:
            raise ExportError(f"TensorRT could not load the engine it just built for graph '{name}' (see its log)")
        return engine


@hookimpl
def register_backends(register):
    register(TensorRTBackend)
