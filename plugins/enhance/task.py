"""The speech enhancement task: one microphone in, the same voice with less noise out, in real time.

One streaming graph takes 16 kHz mono audio in 16 ms hops and returns as many enhanced samples;
the STFT and the overlap-add are inside it, so every backend runs identical maths and a Stream's
output equals whole-clip output. Raw output lags input by ``DELAY`` (256 samples, 16 ms; live
audio cannot avoid it). Decoded results drop the samples that come before the input, so they line
up with it; the last 16 ms of a clip stay inside the graph (``enhance_audio`` pads the clip to get
them out). Behaviour on awkward input:

- stereo: refused with a message (mix it down first); other rates: refused by the runtime, while
  file inputs (``edgeaudio run --input``) are resampled to 16 kHz with a note;
- silence in, silence out (exact zeros for digital silence);
- clipped input is enhanced as it is: the noise goes, the clipping distortion stays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from edgeaudio.errors import AudioInputError
from edgeaudio.task import EvalSet, Graph, InputKind, MetricGate, ResultKind, StatePair, Streaming, Task, TensorSpec, matching_checkpoint

WEIGHTS_DIR = Path(__file__).parent / "weights"
VALIDATION_DIR = Path(__file__).parent / "validation"
# the graph's framing, as in model.py (which needs torch; this module must not)
HOP = 256
DELAY = 256
BINS = 257
MODEL_KEYS = ("conv_channels", "gru_hidden", "gru_layers")


@dataclass(frozen=True)
class EnhanceTrainOptions:
    """The options of ``edgeaudio train enhance`` (see train.py for the recipe)."""

    epochs: int = field(default=30, metadata={"help": "Passes, each over fresh mixtures.", "min": 1})
    items: int = field(default=1600, metadata={"help": "Mixtures (or crops of --pairs) per epoch.", "min": 1})
    seconds: float = field(default=4.0, metadata={"help": "Length of each training item in seconds.", "min": 0})
    batch_size: int = field(default=16, metadata={"help": "Items per training step.", "min": 1})
    lr: float = field(default=2e-3, metadata={"help": "Peak learning rate (AdamW, cosine decay).", "min": 0})
    seed: int = field(default=0, metadata={"help": "Seed of the mixing and the training.", "min": 0})
    corpus: str | None = field(default=None, metadata={
        "help": "A built speech + noise corpus folder (default: the cache's, built on first use)."})
    pairs: str | None = field(default=None, metadata={
        "help": "Train on random crops of this paired noisy/clean folder instead of mixing."})
    test_pairs: str | None = field(default=None, metadata={
        "help": "Paired folder scored at the end (default: the corpus's test set; with --pairs, the shipped one)."})
    threads: int = field(default=1, metadata={
        "help": "Torch threads (1 leaves the other cores to the machine's other work).", "min": 1})
    test_clips: int | None = field(default=None, metadata={
        "help": "Score only the first N held-out test clips.", "min": 1})
    init: str | None = field(default=None, metadata={
        "help": "Weights to fine-tune from: a .safetensors file, or 'default' for the shipped ones."})
    ship: bool = field(default=False, metadata={
        "help": "Also copy the weights into the package as the shipped default."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


class EnhanceTask(Task):
    name = "enhance"
    input_kind = InputKind.STREAM
    result_kind = ResultKind.WAVEFORM
    version = "1"
    description = "speech enhancement for one microphone (streaming complex-mask GRU, 16 ms hop, 32 ms latency)"
    sample_rate = 16000
    channels = 1
    latency = DELAY  # the output is the input 16 ms (N_FFT - HOP samples) earlier
    gate = MetricGate("si_sdr", max_drop=0.5, higher_is_better=True)
    models = {"dfn3": "enhance-dfn3"}  # DeepFilterNet3 from its wheel (dfn3_task.py)

    def default_config(self) -> dict[str, Any]:
        return {"conv_channels": 128, "gru_hidden": 128, "gru_layers": 2}

    # -- model ---------------------------------------------------------------------------------
    def build_model(self):
        import torch

        from edgeaudio.plugins.enhance.model import EnhanceNet

        torch.manual_seed(0)
        return EnhanceNet(**{k: self.config[k] for k in MODEL_KEYS})

    def default_checkpoint(self) -> str | None:
        """The shipped weights, when they were trained with this model configuration."""
        return matching_checkpoint(WEIGHTS_DIR / "enhance.safetensors", self.config, MODEL_KEYS)

    def graphs(self, model) -> list[Graph]:
        rng = np.random.default_rng(0)
        names = ["tail", "cache", "hidden", "ola"]
        state = [s.numpy() for s in model.initial_state(1)]
        shapes = [("batch", *s.shape[1:]) for s in state]
        shapes[2] = (state[2].shape[0], "batch", state[2].shape[2])  # GRU state is [layers, batch, hidden]
        example = {"audio": (0.1 * rng.standard_normal((1, 1, 3 * HOP))).astype(np.float32)}
        example.update({n: (0.1 * rng.standard_normal(s.shape)).astype(np.float32) for n, s in zip(names, state)})
        return [
            Graph(
                name="enhance",
                module=model,
                inputs=[TensorSpec("audio", ("batch", 1, "samples"))] + [TensorSpec(n, s) for n, s in zip(names, shapes)],
                outputs=[TensorSpec("enhanced", ("batch", 1, "samples"))]
                + [TensorSpec(f"{n}_out", s) for n, s in zip(names, shapes)],
                example_inputs=example,
                state=[StatePair(n, f"{n}_out") for n in names],
                streaming=Streaming("audio", block=HOP, time_axes={"enhanced": 2}, frames_per_block=HOP),
                atol=1e-4,
                # The DFT, log power, mask product and inverse DFT: quantized, they ruin the
                # waveform. The frame cache and the GRU's state split/join: calibration starts
                # streams from zero state, so quantized they would flatten the carried state and
                # a Stream would drift from whole-clip output.
                keep_float=["/analysis/", "/synthesis/", "/context/", "/gru/"],
            )
        ]

    # -- data and metrics ------------------------------------------------------------------------
    def validation_set(self) -> EvalSet:
        """The shipped held-out pairs (16 x 3 s, voices and noises never trained on)."""
        from edgeaudio.plugins.enhance.data import read_pairs

        return EvalSet(read_pairs(VALIDATION_DIR), "the shipped validation pairs (plugins/enhance/validation)")

    def read_dataset(self, path: Path) -> EvalSet:
        """A folder of noisy/ and clean/ recordings matched by file name (``data.read_pairs``)."""
        from edgeaudio.plugins.enhance.data import read_pairs

        pairs = read_pairs(path)
        return EvalSet(pairs, f"{path} ({len(pairs)} noisy/clean pairs)")

    def calibration_data(self, count: int = 32, dataset=None) -> Iterable[dict[str, dict[str, np.ndarray]]]:
        """Noisy clips of ``dataset`` (default: the validation pairs) from zero state, as the graph
        sees a stream start."""
        pairs = self.validation_set() if dataset is None else dataset
        layers, hidden = self.config["gru_layers"], self.config["gru_hidden"]
        zeros = {"tail": np.zeros((1, 1, DELAY), np.float32), "cache": np.zeros((1, BINS, 2), np.float32),
                 "hidden": np.zeros((layers, 1, hidden), np.float32), "ola": np.zeros((1, 1, HOP), np.float32)}
        for i in range(min(count, len(pairs))):
            audio = pairs[i].noisy[: len(pairs[i].noisy) // HOP * HOP]
            yield {"enhance": {"audio": audio[None, None].astype(np.float32), **zeros}}

    def evaluate(self, runner, dataset) -> dict[str, float]:
        """Mean SI-SDR of the enhanced clips and its improvement over the noisy input (dB)."""
        from edgeaudio.plugins.enhance.metrics import score

        graph = runner.streaming_graph()
        rows = [score(enhance_audio(graph, pair.noisy), pair.clean, pair.noisy, full=False) for pair in dataset]
        return {"si_sdr": float(np.mean([r["si_sdr"] for r in rows])), "si_sdr_i": float(np.mean([r["si_sdr_i"] for r in rows]))}

    # -- running -------------------------------------------------------------------------------
    def prepare_audio(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return super().prepare_audio(mono_only(self.name, audio), sample_rate)

    def decode(self, outputs: Mapping[str, np.ndarray], start_frame: int = 0) -> dict[str, Any]:
        """Raw output -> ``{"start_sample", "sample_rate", "audio" [samples] float32}`` aligned
        with the input (JSON sinks write the audio as a list).

        ``start_frame`` counts raw output samples; the first ``DELAY`` of a stream come before
        any input and are dropped, so ``start_sample`` is the input sample the audio starts at.
        """
        audio = np.asarray(outputs["enhanced"])[0, 0]
        drop = min(max(DELAY - start_frame, 0), len(audio))
        return {"start_sample": start_frame + drop - DELAY, "sample_rate": self.sample_rate, "audio": audio[drop:]}

    def results_to_audio(self, results: Any) -> np.ndarray:
        """[samples]: the audio of one decoded result or of a list of them, in order."""
        items = results if isinstance(results, list) else [results]
        return np.concatenate([np.asarray(r["audio"], np.float32) for r in items] or [np.zeros(0, np.float32)])

    train_options = EnhanceTrainOptions

    def train(self, out_dir: str, options: EnhanceTrainOptions | None = None) -> dict[str, Any]:
        """Mix, train and write weights + sidecar (see train.py)."""
        from edgeaudio.plugins.enhance.train import train_enhance

        return train_enhance(self, out_dir, options or EnhanceTrainOptions())


def mono_only(task: str, audio: np.ndarray) -> np.ndarray:
    """``audio`` as it is, refused with a message when it has more than one channel (the base
    ``prepare_audio`` converts and checks the rest, once)."""
    if np.ndim(audio) == 2 and np.shape(audio)[0] > 1:
        raise AudioInputError(
            f"audio has {np.shape(audio)[0]} channels; task '{task}' takes one microphone",
            hint="mix it down to mono first (e.g. audio.mean(axis=0), or `sox in.wav -c 1 mono.wav`)",
        )
    return audio


def enhance_audio(graph, audio: np.ndarray) -> np.ndarray:
    """Enhance a whole mono clip [samples] on a loaded streaming graph, the 16 ms lag removed."""
    return graph.run_offline(np.asarray(audio, np.float32)[None, :], DELAY)["enhanced"][0, 0, DELAY:]
