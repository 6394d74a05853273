"""What the conformance checks share: the inputs they feed and the assertions they are made of."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgeaudio.errors import AudioInputError, BundleError
from edgeaudio.live.sinks import plain_json
from edgeaudio.task import Graph, InputKind, ResultKind, Task

TASK_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
EXAMPLE_PROMPT = "a horn honks twice"  # what the checks generate from, for text tasks
OTHER_PROMPT = "rain falls on a roof"  # a second prompt, for the schema across prompts
GENERATE_SECONDS = (0.5, 1.25)  # the lengths text-to-audio checks request
GENERATE_SEED = 3
CLIP_SECONDS = (1.0, 2.5)  # clip lengths for tasks without a streaming graph; the longer is the example
WINDOW_SECONDS = 1.0  # the live window of a clip task in the checks (the example holds 2.5 of them)
PROFILE = "x86-cpu"  # the profile the checks export for (ONNX Runtime and OpenVINO artifacts)
SPAN_KEYS = ("start_s", "end_s")  # what a live window adds to a clip task's result

AUDIO_IN = frozenset({InputKind.STREAM, InputKind.CLIP})
ANY_INPUT = frozenset(InputKind)
ANY_RESULT = frozenset(ResultKind)
WAVEFORM = frozenset({ResultKind.WAVEFORM})


def _example_audio(task: Task) -> tuple[np.ndarray, int]:
    """The streaming graph's example audio, its last block left partial to exercise padding; for
    a task without a streaming graph, the longer of ``CLIP_SECONDS`` of seeded noise."""
    streaming = next((g for g in _graphs_of(task) if g.streaming), None)
    if streaming is None:
        return _noise(task, CLIP_SECONDS[-1])
    audio = np.asarray(streaming.example_inputs[streaming.streaming.audio_input][0], dtype=np.float32)
    block = streaming.streaming.block
    if audio.shape[1] > block:
        audio = audio[:, : audio.shape[1] - block // 3]
    return np.ascontiguousarray(audio), task.sample_rate


def _noise(task: Task, seconds: float) -> tuple[np.ndarray, int]:
    """``seconds`` of seeded noise with a tone in it, for every channel of the task."""
    samples = int(round(seconds * task.sample_rate))
    rng = np.random.default_rng(samples)
    tone = 0.2 * np.sin(2 * np.pi * 440.0 * np.arange(samples) / task.sample_rate)
    audio = tone[None, :] + 0.05 * rng.standard_normal((task.channels, samples))
    return audio.astype(np.float32), task.sample_rate


def _require(condition: Any, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _graphs_of(task: Task) -> list[Graph]:
    """The task's graphs as the export pipeline sees them (no torch model for a task that brings ONNX)."""
    try:
        model = task.load_model()
    except NotImplementedError:
        model = None
    return task.graphs(model)


def _check_graph(task: Task, graph: Graph) -> None:
    where = f"graph '{graph.name}'"
    if graph.module is None:
        _require(graph.onnx_path and Path(graph.onnx_path).is_file(),
                 f"{where} has no torch module and its onnx_path {graph.onnx_path!r} is not a file")
    inputs = {spec.name: spec for spec in graph.inputs}
    outputs = {spec.name: spec for spec in graph.outputs}
    _require(set(graph.example_inputs) == set(inputs),
             f"{where}: example_inputs {sorted(graph.example_inputs)} must match inputs {sorted(inputs)}")
    for name, spec in inputs.items():
        value = graph.example_inputs[name]
        _require(isinstance(value, np.ndarray) and value.dtype == np.dtype(spec.dtype),
                 f"{where}: example input '{name}' must be a numpy {spec.dtype} array, got {type(value).__name__} "
                 f"{getattr(value, 'dtype', '')}")
        _require(value.ndim == len(spec.shape), f"{where}: example input '{name}' has rank {value.ndim}, spec {spec.shape}")
        for axis, (dim, size) in enumerate(zip(spec.shape, value.shape)):
            _require(isinstance(dim, str) or dim == size,
                     f"{where}: example input '{name}' axis {axis} is {size}, spec says {dim} ({spec.shape})")
    for pair in graph.state:
        _require(pair.input in inputs and pair.output in outputs,
                 f"{where}: state pair {pair.input} <- {pair.output} must name an input and an output")
        dynamic = [d for d in inputs[pair.input].shape if isinstance(d, str) and d != "batch"]
        _require(not dynamic, f"{where}: state input '{pair.input}' has dynamic axes {dynamic}; only 'batch' may be")
    if graph.streaming:
        _check_streaming(task, graph, inputs, outputs)


def _check_streaming(task: Task, graph: Graph, inputs, outputs) -> None:
    where, streaming = f"graph '{graph.name}'", graph.streaming
    audio = inputs.get(streaming.audio_input)
    _require(audio is not None, f"{where}: streaming audio_input '{streaming.audio_input}' is not an input")
    _require(len(audio.shape) == 3, f"{where}: audio input must be [batch, channels, samples], spec {audio.shape}")
    _require(isinstance(audio.shape[1], str) or audio.shape[1] == task.channels,
             f"{where}: audio input has {audio.shape[1]} channels, task has {task.channels}")
    _require(_positive_int(streaming.block), f"{where}: streaming block must be a positive int")
    example = graph.example_inputs[streaming.audio_input]
    _require(example.shape[2] % streaming.block == 0 and example.shape[2] >= 2 * streaming.block,
             f"{where}: example audio must be at least two whole blocks of {streaming.block} samples, got {example.shape[2]}")
    frames = set(outputs) - {pair.output for pair in graph.state}
    unknown = set(streaming.time_axes) - frames
    _require(not unknown, f"{where}: time_axes name outputs that are not frame outputs: {sorted(unknown)}")


def _streaming_spec(manifest: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((g for g in manifest["graphs"] if g.get("streaming")), None)


def _chunk_sizes(block: int) -> list[int]:
    """A size that divides nothing, one block, and several blocks plus one sample."""
    return [37, block, 3 * block + 1]


def _in_chunks(stream, audio: np.ndarray, rate: int, chunk: int) -> list[Any]:
    """Every result of ``stream`` fed ``audio`` ``chunk`` samples at a time, then flushed."""
    results = []
    for offset in range(0, audio.shape[1], chunk):
        results += stream.accept(audio[:, offset : offset + chunk], rate)
    return results + stream.flush()


def _stream_raw(session, audio: np.ndarray, rate: int, chunk: int) -> dict[str, np.ndarray]:
    stream = session.stream(keep_outputs=True)
    _in_chunks(stream, audio, rate, chunk)
    return stream.outputs()


def _require_refused(what: str, call, *args) -> None:
    try:
        call(*args)
    except AudioInputError:
        return
    except Exception as exc:
        raise AssertionError(f"{what} raised {type(exc).__name__} ({exc}), expected edgeaudio.errors.AudioInputError") from exc
    raise AssertionError(f"{what} was accepted; it must raise edgeaudio.errors.AudioInputError")


def _require_tamper_refused(bundle, copy: Path) -> None:
    from edgeaudio.bundle import load_bundle

    shutil.copytree(bundle.root, copy)
    victim = copy / next(iter(bundle.manifest["files"]))
    victim.write_bytes(victim.read_bytes() + b"\0")
    try:
        load_bundle(copy)
    except BundleError:
        return
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    raise AssertionError("a bundle with a modified file loaded; its sha256 was not verified")


def _json_checked(value: Any, what: str) -> Any:
    """``value`` after a strict JSON round trip as the JSON-lines output writes it (numpy arrays
    and scalars as lists and numbers; no NaN or infinity), or AssertionError."""
    try:
        return json.loads(json.dumps(value, allow_nan=False, default=plain_json))
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{what} is not JSON-serialisable ({exc}); decoded results must be dicts, lists, str, "
                             f"int, float, bool, None or numpy arrays and scalars, all finite: {str(value)[:200]}") from exc


def _unwindowed(result: Any, what: str) -> Any:
    """A live window's result without its span: the whole-clip result it carries."""
    _require(isinstance(result, dict) and all(isinstance(result.get(key), (int, float)) for key in SPAN_KEYS),
             f"{what} has no numeric {' and '.join(SPAN_KEYS)}: {str(result)[:200]}")
    rest = {key: value for key, value in result.items() if key not in SPAN_KEYS}
    return rest["result"] if set(rest) == {"result"} else rest


def _waveform(task: Task, results: Any, what: str) -> np.ndarray:
    """``task.results_to_audio(results)``, required to be finite float audio shaped [samples] or
    [channels, samples]."""
    audio = task.results_to_audio(results)
    _require(audio is not None, f"results_to_audio of {what} returned None")
    audio = np.asarray(audio)
    _require(audio.dtype.kind == "f", f"results_to_audio of {what} is {audio.dtype}, not float audio")
    _require(audio.ndim in (1, 2), f"results_to_audio of {what} is shaped {audio.shape}; [samples] or [channels, samples]")
    _require(audio.ndim == 1 or audio.shape[0] >= 1, f"results_to_audio of {what} has no channels: {audio.shape}")
    _require(np.all(np.isfinite(audio)), f"results_to_audio of {what} contains NaN or infinite samples")
    return audio


# A schema is a type name, ("list", element schema or None when empty) or ("dict", {key: schema}).
def _schema(value: Any) -> Any:
    if isinstance(value, dict):
        return ("dict", {key: _schema(item) for key, item in value.items()})
    if isinstance(value, list):
        element = None
        for index, item in enumerate(value):
            element = _merge(element, _schema(item), f"list element {index}")
        return ("list", element)
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "null" if value is None else type(value).__name__


def _merge(a: Any, b: Any, where: str) -> Any:
    """One schema covering both; an empty list fits any list. Otherwise they must be equal."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, tuple) and isinstance(b, tuple) and a[0] == b[0] == "list":
        return ("list", _merge(a[1], b[1], f"{where}, list elements"))
    if isinstance(a, tuple) and isinstance(b, tuple) and a[0] == b[0] == "dict":
        _require(a[1].keys() == b[1].keys(), f"decode schema differs at {where}: keys {sorted(a[1])} vs {sorted(b[1])}")
        return ("dict", {key: _merge(a[1][key], b[1][key], f"{where}, key '{key}'") for key in a[1]})
    _require(a == b, f"decode schema differs at {where}: {_describe(a)} vs {_describe(b)}")
    return a


def _describe(schema: Any) -> str:
    if isinstance(schema, tuple) and schema[0] == "list":
        return f"[{_describe(schema[1]) if schema[1] is not None else ''}]"
    if isinstance(schema, tuple):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in schema[1].items()) + "}"
    return str(schema)
