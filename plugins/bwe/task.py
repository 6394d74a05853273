"""The BWE task: narrowband speech in, wideband 16 kHz speech out, chunk by chunk.

Input is taken at the graph rate, 16 kHz: an 8 kHz call is brought there by the runtime's own
band-limited resampler (soxr, as ``edgeaudio run`` and ``read_audio`` do), which is exactly the
"plain upsampling" baseline the model is measured against. Audio that is already 16 kHz but
narrowband (a VoIP archive, a cheap recorder) goes in as it is.

Latency: the graph's output lags its input by ``latency`` samples (30 ms: 20 ms of look-ahead plus
10 ms of overlap-add). The runtime feeds that much silence after a clip or a stream's last chunk
(``Task.latency``), and ``decode`` drops the first ``latency`` samples, so Session results and
streamed results both line up with the input sample for sample and are exactly as long.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeaudio.task import EvalSet, Graph, InputKind, MetricGate, ResultKind, StatePair, Streaming, Task, TensorSpec, matching_checkpoint

WEIGHTS = Path(__file__).parent / "weights" / "bwe.safetensors"
MODEL_KEYS = ("n_fft", "channels", "blocks", "kernel", "lookahead")
VALIDATION_ITEMS, VALIDATION_SECONDS = 16, 3.0


@dataclass(frozen=True)
class BweTrainOptions:
    """The options of ``edgeaudio train bwe`` (see train.py for the recipe)."""

    epochs: int = field(default=30, metadata={"help": "Passes, each over fresh training crops.", "min": 1})
    items: int = field(default=1600, metadata={"help": "Training crops per epoch.", "min": 1})
    batch_size: int = field(default=16, metadata={"help": "Crops per training step.", "min": 1})
    seconds: float = field(default=1.0, metadata={"help": "Length of each training crop in seconds.", "min": 0})
    lr: float = field(default=2e-3, metadata={"help": "Peak learning rate (AdamW, cosine decay to 5 %).", "min": 0})
    seed: int = field(default=0, metadata={"help": "Seed of the crops and the training.", "min": 0})
    threads: int | None = field(default=None, metadata={
        "help": "Torch threads (unset or 0: torch's choice).", "min": 0})
    corpus: str | None = field(default=None, metadata={
        "help": "The speech corpus folder (default: the cache's, built on first use)."})
    ship: bool = field(default=False, metadata={
        "help": "Copy the best weights and the summary into the package as the shipped default."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


class BweTask(Task):
    name = "bwe"
    input_kind = InputKind.STREAM
    result_kind = ResultKind.WAVEFORM
    version = "1"
    description = "bandwidth extension: narrowband (8 kHz, telephone) speech to wideband 16 kHz, streaming"
    sample_rate = 16000
    channels = 1
    # INT8 may cost at most 0.1 of log-spectral distance (the model gains about 2 over upsampling)
    gate = MetricGate("lsd", max_drop=0.1, higher_is_better=False)

    def default_config(self) -> dict[str, Any]:
        """Network shape, and the level of the invented band relative to what the network predicts
        (chosen after training on the validation clips; see ``train.choose_extension_gain``)."""
        shipped = json.loads(WEIGHTS.with_suffix(".json").read_text()) if WEIGHTS.with_suffix(".json").is_file() else {}
        gain = shipped.get("config", {}).get("extension_gain_db", 0.0)
        return {"n_fft": 320, "channels": 160, "blocks": 4, "kernel": 7, "lookahead": 2, "extension_gain_db": gain}

    @property
    def hop(self) -> int:
        return self.config["n_fft"] // 2

    @property
    def latency(self) -> int:
        """Samples by which the graph's output lags its input."""
        return (self.config["lookahead"] + 1) * self.hop

    # -- model -------------------------------------------------------------------------------
    def build_model(self):
        import torch
        from edgeaudio.plugins.bwe.model import BweNet

        torch.manual_seed(int(self.config.get("seed", 0)))
        return BweNet(self.sample_rate, extension_gain_db=float(self.config["extension_gain_db"]),
                      **{key: self.config[key] for key in MODEL_KEYS})

    def default_checkpoint(self) -> str | None:
        """The shipped weights, when they were trained with this configuration."""
        return matching_checkpoint(WEIGHTS, self.config, MODEL_KEYS)

    def graphs(self, model) -> list[Graph]:
        from edgeaudio.plugins.bwe.data import speechlike

        shapes = model.state_shapes()
        rng = np.random.default_rng(0)
        example = {"audio": speechlike(0, 8 * self.hop / self.sample_rate)[None, None]}
        example.update({name: rng.uniform(-0.1, 0.1, (1, *shape)).astype(np.float32) for name, shape in shapes})
        return [
            Graph(
                name="bwe",
                module=model,
                inputs=[TensorSpec("audio", ("batch", 1, "samples"))]
                + [TensorSpec(name, ("batch", *shape)) for name, shape in shapes],
                outputs=[TensorSpec("wideband", ("batch", 1, "samples"))]
                + [TensorSpec(f"{name}_out", ("batch", *shape)) for name, shape in shapes],
                example_inputs=example,
                state=[StatePair(name, f"{name}_out") for name, _ in shapes],
                streaming=Streaming("audio", block=self.hop, time_axes={"wideband": 2}, frames_per_block=self.hop),
                atol=1e-4,
                # the DFTs, the level and phase maths and the final spectrum stay float; caches are
                # copied (Concat/Slice), not computed, so quantizing them only adds error
                keep_float=["/stft/", "/features/", "/combine/", "/istft/", "Concat", "Slice"],
            )
        ]

    # -- data and metrics --------------------------------------------------------------------
    def validation_set(self) -> EvalSet:
        """(narrowband input, wideband reference) pairs: 16 utterances of 3 s from the corpus's
        validation clips (voices seen in training, clips not), narrowband as an 8 kHz recording
        would be. Made from the corpus where it is built, else the very same utterances as the
        package ships them (``plugins/bwe/validation``), so export needs no corpus."""
        from edgeaudio.plugins.bwe.data import corpus_folder, read_corpus, telephone_input, utterances
        from edgeaudio.plugins.bwe.speech_sets import shipped_utterances

        corpus = corpus_folder()
        if not (corpus / "SOURCES.json").is_file():
            return shipped_utterances()
        clips = [c for c in read_corpus(corpus) if c.split == "val"]
        items = utterances(clips, VALIDATION_SECONDS, per_voice=4)[:VALIDATION_ITEMS]
        return EvalSet([(telephone_input(wide), wide) for _, wide in items],
                       f"{len(items)} utterances from the speech corpus's validation clips ({corpus})")

    def read_dataset(self, path: Path) -> EvalSet:
        """A folder of wideband speech recordings (layout in ``speech_sets``)."""
        from edgeaudio.plugins.bwe.speech_sets import read_wideband

        return read_wideband(path)

    def calibration_data(self, count: int = 32, dataset=None) -> Iterable[dict[str, dict[str, np.ndarray]]]:
        """Narrowband 2 s excerpts of ``dataset`` (default: the validation utterances) from zero
        state, as a stream starts, at levels from -12 to +11 dB."""
        model = self.build_model()
        zeros = {name: np.zeros((1, *shape), np.float32) for name, shape in model.state_shapes()}
        items = self.validation_set() if dataset is None else dataset
        length = 200 * self.hop
        for i in range(count):
            narrow = items[i % len(items)][0]
            start = (i // len(items)) * self.hop * 50 % max(len(narrow) - length, 1)
            narrow = narrow[start : start + length]
            level = 10 ** (((i * 7) % 24 - 12) / 20)  # calls arrive at every level
            yield {"bwe": {"audio": (level * narrow[None, None]).astype(np.float32), **zeros}}

    def evaluate(self, runner, dataset) -> dict[str, float]:
        """Mean LSD (full and 4-8 kHz), SI-SDR and, when ``pesq`` is installed, PESQ-WB."""
        from edgeaudio.plugins.bwe import metrics

        from edgeaudio.errors import MissingExtra

        rows = []
        for narrow, wide in dataset:
            estimate = self.enhance(runner, narrow)
            row = {"lsd": metrics.lsd(wide, estimate), "lsd_extended": metrics.lsd_extended(wide, estimate),
                   "si_sdr": metrics.si_sdr(wide, estimate)}
            try:
                row["pesq_wb"] = metrics.pesq_wb(wide, estimate)
            except MissingExtra:
                pass
            rows.append(row)
        return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}

    # -- running -----------------------------------------------------------------------------
    def enhance(self, runner, narrow: np.ndarray) -> np.ndarray:
        """Wideband version of a mono clip, aligned with it and of the same length."""
        return self.decode(self.process(runner, np.asarray(narrow, np.float32)[None]))["audio"][0]

    def decode(self, outputs: Mapping[str, np.ndarray], start_frame: int = 0) -> dict[str, Any]:
        """Raw output -> ``{"start_sample", "sample_rate", "audio" [1, samples]}`` aligned with the
        input: samples before ``latency`` (the look-ahead's silence) are dropped."""
        audio = np.asarray(outputs["wideband"])[0]
        drop = min(max(self.latency - start_frame, 0), audio.shape[1])
        return {"start_sample": start_frame + drop - self.latency, "sample_rate": self.sample_rate, "audio": audio[:, drop:]}

    def results_to_audio(self, results: Any) -> np.ndarray:
        """[1, samples]: the audio of one decoded result or of a list of them, in order."""
        items = results if isinstance(results, list) else [results]
        return np.concatenate([np.asarray(r["audio"], np.float32) for r in items] or [np.zeros((1, 0), np.float32)], axis=1)

    train_options = BweTrainOptions

    def train(self, out_dir: str, options: BweTrainOptions | None = None) -> dict[str, Any]:
        """Build the corpus, train with the shared loop, and optionally ship weights (see train.py)."""
        from edgeaudio.plugins.bwe.train import train_bwe

        return train_bwe(self, out_dir, options or BweTrainOptions())
