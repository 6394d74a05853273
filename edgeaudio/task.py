"""The task contract: what a task plugin provides so the core can export, run and judge it.

A task knows its model, its graphs and its metric, and nothing about backends. The core knows
this contract and nothing about any particular task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import numpy as np

from edgeaudio.errors import AudioInputError, BundleError, UsageError
from edgeaudio.graphspec import StatePair, Streaming, TensorSpec

if TYPE_CHECKING:  # torch is optional at run time
    import torch


@dataclass
class Graph:
    """One exportable graph of a task.

    ``module`` is the torch module whose ``forward`` takes the inputs positionally in the order of
    ``inputs`` and returns the outputs in the order of ``outputs`` (a tensor or a tuple). A task that
    brings an already-exported graph sets ``onnx_path`` instead and leaves ``module`` None.
    ``keep_float``: ONNX node-name prefixes (torch module scopes such as ``"/frontend/"``) and op
    types that INT8 quantization must leave in float — the DFT front end and phase maths lose
    everything when quantized.
    ``axes``: (min, opt, max) sizes of named dynamic axes, for engines built ahead of time
    (TensorRT's optimization profile). A streaming graph's time axes follow from its block; a
    graph run on whole clips or batches (an encoder, a decoder step under beam search, a
    generator) declares its own, e.g. ``{"batch": (1, 3, 3), "frames": (4, 316, 628)}``.
    """

    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    example_inputs: dict[str, np.ndarray]
    module: "torch.nn.Module | None" = None
    onnx_path: str | None = None
    state: list[StatePair] = field(default_factory=list)
    streaming: Streaming | None = None
    atol: float = 1e-4
    rtol: float = 1e-3
    keep_float: list[str] = field(default_factory=list)
    opset: int = 17
    axes: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes: dict[str, dict[int, str]] = {}
        for spec in self.inputs + self.outputs:
            named = {i: dim for i, dim in enumerate(spec.shape) if isinstance(dim, str)}
            if named:
                axes[spec.name] = named
        return axes


@dataclass(frozen=True)
class MetricGate:
    """The metric that judges a lower precision and how much of it may be lost."""

    metric: str
    max_drop: float
    higher_is_better: bool = True

    def drop(self, reference: float, candidate: float) -> float:
        return reference - candidate if self.higher_is_better else candidate - reference

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "max_drop": self.max_drop, "higher_is_better": self.higher_is_better}


class EvalSet(list):
    """The items of a validation or calibration set, and the name reports give it (where it came
    from: the set the package ships, a folder of the user's). A list, so ``evaluate`` and
    ``calibration_data`` take it as they take any list of items."""

    def __init__(self, items: Iterable[Any], name: str):
        super().__init__(items)
        self.name = name


class InputKind(str, Enum):
    """How a task takes its input; the core picks the source, loop and sinks from this alone.

    ``STREAM``: audio in chunks through a streaming graph whose state the runtime carries.
    ``CLIP``: whole clips of audio; live input runs it once per window (``--every``).
    ``TEXT``: a text prompt, no audio in (``Session.generate``).
    """

    STREAM = "stream"
    CLIP = "clip"
    TEXT = "text"


class ResultKind(str, Enum):
    """What a task's decoded results are, which decides where the core can send them.

    ``WAVEFORM``: audio (``Task.results_to_audio`` returns it; WAV files and the speaker take it).
    ``EVENTS``: classed sound events per frame (the task's ``classes`` name them; plugins may add
    sinks for event formats). ``TEXT``: sentences. ``RECORDS``: other JSON-friendly records.
    Every kind goes to JSON lines.
    """

    WAVEFORM = "waveform"
    EVENTS = "events"
    TEXT = "text"
    RECORDS = "records"


class Task:
    """Base class of every task family. Subclasses set the identity attributes and override methods.

    Identity: ``name`` (CLI name, unique), ``version`` (bumped when graphs change meaning),
    ``sample_rate``, ``channels`` (1 for mono; the array's mic count for array tasks),
    ``array`` (profile name of the microphone array whose geometry the model was trained for, or
    None), ``description``, ``classes`` (names of what the model detects, for ``EVENTS`` results;
    empty otherwise), ``input_kind`` and ``result_kind`` (the capabilities the core dispatches on),
    ``per_array``: one model per microphone array geometry, chosen by ``config["array"]``
    (``--device`` and a recording's declared array pick it),
    ``run_options``: a dataclass of the task's own ``run`` options (``edgeaudio.options``), handed
    to ``generate`` as keywords for TEXT tasks; None when it has none,
    ``latency``: samples by which the streaming graph's output lags its input (0 for most); at the
    end of an input the runtime feeds that much silence so the last input samples come out,
    ``min_input_seconds``: the shortest input whose results mean anything (the model's receptive
    field); ``run`` warns about shorter input and refuses an ``--every`` window shorter than it.
    A streaming graph's block counts too, whichever is longer.
    ``models``: the family's other models, which a user picks with ``--model NAME`` (``edgeaudio
    run enhance --model dfn3``): model name -> the registered task that runs it, a task like any
    other with its own sample rate, graphs and weights (a published model beside the family's own,
    say). The family's own model is ``default``.
    """

    name: str = ""
    version: str = "0"
    description: str = ""
    sample_rate: int = 16000
    channels: int = 1
    array: str | None = None
    classes: tuple[str, ...] | list[str] = ()
    input_kind: InputKind = InputKind.STREAM
    result_kind: ResultKind = ResultKind.RECORDS
    per_array: bool = False
    run_options: type | None = None
    latency: int = 0
    min_input_seconds: float = 0.0
    gate: MetricGate | None = None
    models: Mapping[str, str] = {}

    def __init__(self, config: Mapping[str, Any] | None = None):
        self.config: dict[str, Any] = dict(self.default_config())
        self.config.update(config or {})

    # -- model -------------------------------------------------------------------------------
    def default_config(self) -> dict[str, Any]:
        """Hyper-parameters that ``build_model`` reads; stored in the bundle's provenance."""
        return {}

    @classmethod
    def trained_config(cls, sidecar: Mapping[str, Any]) -> dict[str, Any]:
        """The config a checkpoint was trained with, from its JSON sidecar (as every trainer writes
        it). Tasks whose config gained keys after older sidecars were written fill them in here."""
        config = sidecar.get("config")
        return dict(config) if isinstance(config, Mapping) else {}

    def build_model(self) -> "torch.nn.Module":
        """A freshly initialised model for ``self.config``."""
        raise NotImplementedError(f"task '{self.name}' does not build a torch model")

    def default_checkpoint(self) -> str | None:
        """Path of the shipped safetensors weights, or None when the task ships none."""
        return None

    def load_model(self, checkpoint: str | None = None) -> "torch.nn.Module":
        """``build_model`` plus weights from ``checkpoint`` (default: the shipped one), in eval mode."""
        from edgeaudio.weights import load_weights

        model = self.build_model()
        path = checkpoint or self.default_checkpoint()
        if path:
            load_weights(model, path)
        return model.eval()

    def graphs(self, model: "torch.nn.Module | None") -> list[Graph]:
        """The exportable graphs with their I/O, state, example inputs and tolerances."""
        raise NotImplementedError

    def reference_module(self, graph_name: str, weights: str) -> "torch.nn.Module":
        """The torch module of graph ``graph_name`` on ``weights``: what the torch (reference)
        backend runs, so that backend needs the graph's name and a file, never the task."""
        for graph in self.graphs(self.load_model(weights)):
            if graph.name == graph_name:
                if graph.module is None:
                    raise BundleError(f"graph '{graph_name}' has no torch module (it was brought as ONNX)")
                return graph.module
        raise BundleError(f"task '{self.name}' no longer defines graph '{graph_name}'", hint="re-export the bundle")

    # -- data and metrics --------------------------------------------------------------------
    def calibration_data(self, count: int = 32, dataset: Any = None) -> Iterable[dict[str, dict[str, np.ndarray]]]:
        """Representative feeds for INT8 calibration: ``{graph_name: {input_name: array}}`` each,
        made from ``dataset`` (items as ``read_dataset`` returns them: ``export --calibration
        DIR``) or, when it is None, from the task's own data."""
        return []

    def validation_set(self) -> Any:
        """A small labelled set ``evaluate`` accepts (an ``EvalSet``, so reports can name it); None
        when the task has none. It must not need data the base install cannot make: first-party
        tasks ship theirs in the package."""
        return None

    def read_dataset(self, path: Path) -> Any:
        """The items of a folder of the user's own data in the task's documented format, as
        ``evaluate`` and ``calibration_data`` take them (``export --validation/--calibration
        DIR``). A folder in another format is a UsageError naming the file and what was expected."""
        raise UsageError(f"task '{self.name}' reads no data of your own", hint="export without --calibration/--validation")

    def evaluate(self, runner: "Runner", dataset: Any) -> dict[str, float]:
        """Task metrics of ``runner`` on ``dataset`` (keys include ``self.gate.metric``)."""
        raise NotImplementedError(f"task '{self.name}' has no evaluate()")

    # -- running -----------------------------------------------------------------------------
    def prepare_audio(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Validate audio shaped [channels, samples] (or [samples] for mono) for this model."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[None, :]
        if audio.ndim != 2:
            raise AudioInputError(f"audio must be [channels, samples], got shape {audio.shape}")
        if sample_rate != self.sample_rate:
            raise AudioInputError(
                f"audio is {sample_rate} Hz but task '{self.name}' expects {self.sample_rate} Hz",
                hint="resample it (edgeaudio.audio.read_audio(path, sample_rate=...)) or use a file input",
            )
        if audio.shape[0] != self.channels:
            where = f" ({self.array})" if self.array else ""
            raise AudioInputError(
                f"audio has {audio.shape[0]} channel(s) but task '{self.name}' expects {self.channels}{where}",
                hint="record with the array the model was trained for, or pick the matching bundle",
            )
        if audio.shape[1] == 0:
            raise AudioInputError("audio is empty (0 samples)", hint="check the file or the device")
        if not _all_finite(audio):
            raise AudioInputError("audio contains NaN or infinite samples", hint="check the source")
        return audio

    def process(self, runner: "Runner", audio: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs for a whole clip. Default: the streaming graph once from zero state, with
        ``latency`` samples of silence after the clip (what a flushed stream gives)."""
        return runner.streaming_graph().run_offline(audio, self.latency)

    def decode(self, outputs: Mapping[str, np.ndarray], start_frame: int = 0) -> Any:
        """Raw graph outputs -> user-facing results (events, waveforms, text). JSON-friendly.

        ``start_frame`` is the index of the first output frame in ``outputs`` when streaming.
        """
        return {name: np.asarray(value).tolist() for name, value in outputs.items()}

    def decoder(self) -> Callable[..., Any]:
        """The decode for one run (a stream or a whole file), called as ``decode`` is. Tasks whose
        decoding carries state from one call to the next (SELD's track ids) return a fresh
        stateful one each time; the default is ``decode`` itself."""
        return self.decode

    def generate(self, runner: "Runner", prompt: str, **options: Any) -> dict[str, np.ndarray]:
        """Raw outputs generated from a text prompt (``input_kind`` TEXT)."""
        raise UsageError(f"task '{self.name}' takes audio, not a text prompt", hint="pass --input FILE instead")

    def decode_generation(self, prompt: str, outputs: Mapping[str, np.ndarray], **options: Any) -> Any:
        """``generate``'s raw outputs -> user-facing results (with the audio under ``results_to_audio``)."""
        return {"prompt": prompt, **{name: np.asarray(value).tolist() for name, value in outputs.items()}}

    def results_to_audio(self, results: Any) -> np.ndarray | None:
        """The waveform inside decoded results, for waveform tasks (written by ``--output``)."""
        return None

    # The trainer's options as a dataclass (see edgeaudio.options): its fields become the options
    # of ``edgeaudio train TASK``, typed, with their defaults in --help; None: the trainer takes none.
    train_options: type | None = None

    def train(self, out_dir: str, options: Any = None) -> Any:
        """Train (or fine-tune) and write a checkpoint under ``out_dir``.

        ``options``: an instance of ``train_options``, or None for its defaults (always None when
        the task declares no ``train_options``)."""
        raise UsageError(f"task '{self.name}' has no trainer")


def _all_finite(audio: np.ndarray) -> bool:
    """Whether every sample is finite, in one BLAS call for a stream's chunk: the sum of squares is
    finite unless a sample is NaN or infinite, or beyond 1e19 (then the exact test decides)."""
    return math.isfinite(np.vdot(audio, audio)) or bool(np.isfinite(audio).all())


class Runner:
    """What ``Task.process`` and ``Task.evaluate`` see: named graphs on some backend."""

    def graph(self, name: str) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def streaming_graph(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


def matching_checkpoint(
    weights: str | Path, config: Mapping[str, Any], keys: Iterable[str], defaults: Mapping[str, Any] | None = None
) -> str | None:
    """``weights`` when its JSON sidecar says it was trained with the same ``keys`` of ``config``.

    Shipped weights only fit the model configuration they were trained with; a task configured
    differently (other classes, sizes, array) must start from scratch rather than fail to load.
    ``defaults``: the values of keys added after a sidecar was written, as that model used them.
    """
    import json

    weights = Path(weights)
    sidecar = weights.with_suffix(".json")
    if not (weights.is_file() and sidecar.is_file()):
        return None
    trained = {**(defaults or {}), **json.loads(sidecar.read_text())["config"]}
    if any(trained.get(key) != config.get(key) for key in keys):
        return None
    return str(weights)
