"""The text-to-audio task: a few seconds of sound effects from a sentence, on the device.

Four graphs (model.py): ``text_encoder`` once per prompt, ``flow`` once per sampling step (every
candidate with the prompt and with the empty prompt in one batch), ``envelope`` (the prompt's
predicted spectral envelope, to rank the candidates) and ``vocoder`` once at the end, for the
chosen candidate. The sampling loop is numpy code in the runtime (sampler.py), so a seed gives the
same audio on every backend within float tolerance. The vocabulary is part of the config, hence of
every bundle's manifest.

What the task's words mean: the generator learned sounds from the event library's 14 classes; a
prompt that names none of them still produces audio (whatever the model makes of the words it
knows), with a warning that says so and lists the sounds it knows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from edgeaudio.errors import UsageError
from edgeaudio.plugins.tta.geometry import frames_for
from edgeaudio.task import EvalSet, Graph, InputKind, MetricGate, ResultKind, Task, TensorSpec, matching_checkpoint

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS = WEIGHTS_DIR / "tta.safetensors"
MODEL_KEYS = ("vocab", "n_mels", "width", "heads", "text_layers", "flow_layers", "flow_detail", "vocoder_width",
              "vocoder_layers", "max_tokens", "mel_mean", "mel_std")  # fmt: skip
ADDED_KEYS = {"flow_detail": 0}  # keys added after a sidecar was written, as those models had them
VALIDATION_PER_CLASS = 2
VALIDATION_SEED = 9001
MAX_SECONDS = 10.0
MAX_CANDIDATES = 8
# sane limits for run options: the defaults were chosen among 4-16 steps and guidance 3-16, and
# time grows with steps (8 steps: about 0.35 s per 5 s clip here), so 64 steps is already slow
MAX_STEPS = 64
MAX_GUIDANCE = 50.0


@dataclass
class TtaRunOptions:
    """``edgeaudio run tta`` options, handed to ``generate``; None means the task's setting."""

    steps: int | None = field(default=None, metadata={"help": "Sampling steps (default: the task's).", "min": 1,
                                                      "max": MAX_STEPS})
    seed: int = field(default=0, metadata={"help": "Noise seed.", "min": 0, "max": 2**32 - 1})
    guidance: float | None = field(default=None, metadata={"help": "Classifier-free guidance scale (default: the task's).",
                                                           "min": 0.0, "max": MAX_GUIDANCE})
    candidates: int | None = field(default=None, metadata={
        "help": "Sample this many clips and keep the one the generator ranks best (default: the task's).", "min": 1,
        "max": MAX_CANDIDATES})


TRAIN_PARTS = ("judge", "vocoder", "generator", "all")


@dataclass(frozen=True)
class TtaTrainOptions:
    """The options of ``edgeaudio train tta`` (see train.py for the parts and their recipes)."""

    part: str = field(default="all", metadata={
        "help": "What to train: the judge, the vocoder, the generator, or all three.", "choices": TRAIN_PARTS})
    clips: int = field(default=3000, metadata={"help": "Generator training clips.", "min": 1})
    epochs: int = field(default=30, metadata={"help": "Generator epochs.", "min": 1})
    vocoder_epochs: int = field(default=15, metadata={"help": "Vocoder epochs.", "min": 1})
    vocoder_clips: int = field(default=600, metadata={"help": "Vocoder training clips.", "min": 1})
    vocoder_lr: float = field(default=1e-3, metadata={"help": "Vocoder peak learning rate.", "min": 0})
    judge_epochs: int = field(default=25, metadata={"help": "Judge epochs.", "min": 1})
    seed: int = field(default=0, metadata={"help": "Seed of the composition and the training.", "min": 0})
    batch_size: int = field(default=32, metadata={"help": "Generator clips per training step.", "min": 1})
    lr: float = field(default=1e-3, metadata={"help": "Generator peak learning rate.", "min": 0})
    library: str | None = field(default=None, metadata={
        "help": "Event library folder to compose from (default: the built-in one)."})
    threads: int = field(default=1, metadata={"help": "Torch threads (0: torch's choice).", "min": 0})
    init: str | None = field(default=None, metadata={
        "help": "Text-to-audio weights to fine-tune the vocoder and generator from ('default': the shipped ones)."})
    single: float = field(default=0.5, metadata={
        "help": "Share of generator training clips with a single event class.", "min": 0, "max": 1})
    flow_detail: int | None = field(default=None, metadata={
        "help": "Width of the flow's detail head, 0 for none (default: the task config's).", "min": 0})
    ema: float | None = field(default=None, metadata={
        "help": "Keep a moving average of the generator weights with this decay per step.", "min": 0, "max": 1})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


class TtaTask(Task):
    name = "tta"
    input_kind = InputKind.TEXT
    result_kind = ResultKind.WAVEFORM
    run_options = TtaRunOptions
    version = "2"  # 2: the envelope graph and candidates (a flow batch of up to 2 x MAX_CANDIDATES)
    description = "text-to-audio: sound effects from a sentence (flow-matching mel generator + vocoder)"
    sample_rate = 16000
    channels = 1
    # the independent judge's accuracy on single-event prompts; INT8 may lose 10 points of it
    gate = MetricGate("class_accuracy", max_drop=0.10, higher_is_better=True)

    def default_config(self) -> dict[str, Any]:
        """Sampling settings plus the shipped model's config when weights ship, else the
        architecture defaults. ``mel_mean``/``mel_std`` normalise the log-mel (measured on 200
        composed training clips: mean -5.25, std 4.36)."""
        # chosen on the validation prompts (seeds 9001+) among 4-16 steps, guidance 3-16, shift 1-6
        # and 1-8 candidates (the sweeps are in the weights' sidecar)
        sampling = {"steps": 8, "guidance": 12.0, "shift": 6.0, "seconds": 5.0, "candidates": 4}
        sidecar = WEIGHTS.with_suffix(".json")
        if WEIGHTS.is_file() and sidecar.is_file():
            trained = {**ADDED_KEYS, **json.loads(sidecar.read_text())["config"]}
            return {**sampling, **{k: trained[k] for k in (*MODEL_KEYS, "seed")}}
        from edgeaudio.plugins.shared.captions import caption_words
        from edgeaudio.plugins.shared.vocabulary import Vocabulary

        return {
            **sampling,
            "vocab": Vocabulary.build(caption_words()).words,
            "n_mels": 64, "width": 192, "heads": 4, "text_layers": 2, "flow_layers": 6, "flow_detail": 512,
            "vocoder_width": 192, "vocoder_layers": 6, "max_tokens": 32,
            "mel_mean": -5.25, "mel_std": 4.36, "seed": 0,
        }  # fmt: skip

    @property
    def vocabulary(self):
        from edgeaudio.plugins.shared.vocabulary import Vocabulary

        return Vocabulary(self.config["vocab"])

    # -- model -----------------------------------------------------------------------------------
    def build_model(self):
        import torch

        from edgeaudio.plugins.tta.model import TtaNet

        c = self.config
        with torch.random.fork_rng():
            torch.manual_seed(int(c.get("seed", 0)))
            return TtaNet(len(c["vocab"]), c["n_mels"], c["width"], c["heads"], c["text_layers"], c["flow_layers"],
                          c["vocoder_width"], c["vocoder_layers"], c.get("flow_detail", 0))  # fmt: skip

    def default_checkpoint(self) -> str | None:
        return matching_checkpoint(WEIGHTS, self.config, MODEL_KEYS, ADDED_KEYS)

    def graphs(self, model) -> list[Graph]:
        from edgeaudio.plugins.tta.model import PromptEnvelope

        c = self.config
        rng = np.random.default_rng(0)
        tokens = self.prompt_batch("a horn honks twice")
        text = rng.standard_normal((2, tokens.shape[1], c["width"])).astype(np.float32)
        mel = rng.standard_normal((2, c["n_mels"], 40)).astype(np.float32)
        frames = tuple(frames_for(seconds, self.sample_rate) for seconds in (0.1, c["seconds"], MAX_SECONDS))
        text_spec = TensorSpec("text", ("batch", "tokens", c["width"]))
        mask_spec = TensorSpec("mask", ("batch", "tokens"))
        mel_spec = TensorSpec("mel", ("batch", c["n_mels"], "frames"))
        mask = (tokens != self.vocabulary.pad).astype(np.float32)
        flow_batch = (1, 2 * c.get("candidates", 1), 2 * MAX_CANDIDATES)
        return [
            Graph(name="text_encoder", module=model.text, inputs=[TensorSpec("tokens", ("batch", "tokens"), "int64")],
                  outputs=[text_spec], example_inputs={"tokens": tokens}, atol=1e-3,
                  axes={"batch": (1, 2, 2), "tokens": (2, 16, c["max_tokens"])}),
            Graph(name="flow", module=model.flow, inputs=[mel_spec, TensorSpec("t", ("batch",)), text_spec, mask_spec],
                  outputs=[TensorSpec("velocity", ("batch", c["n_mels"], "frames"))],
                  example_inputs={"mel": mel, "t": np.array([0.25, 0.75], np.float32), "text": text, "mask": mask},
                  atol=2e-3, axes={"batch": flow_batch, "tokens": (2, 16, c["max_tokens"]), "frames": frames}),
            Graph(name="envelope", module=PromptEnvelope(model.flow), inputs=[text_spec, mask_spec],
                  outputs=[TensorSpec("envelope", ("batch", c["n_mels"]))],
                  example_inputs={"text": text[:1], "mask": mask[:1]}, atol=1e-3,
                  axes={"batch": (1, 1, 2), "tokens": (2, 16, c["max_tokens"])}),
            Graph(name="vocoder", module=model.vocoder, inputs=[mel_spec],
                  outputs=[TensorSpec("audio", ("batch", 1, "samples"))], example_inputs={"mel": mel[:1]}, atol=2e-3,
                  keep_float=["/istft/", "Exp", "Sqrt", "Reciprocal", "Div"], axes={"batch": (1, 1, 1), "frames": frames}),
        ]  # fmt: skip

    # -- prompts ----------------------------------------------------------------------------------
    def prompt_batch(self, prompt: str) -> np.ndarray:
        """[2, tokens] ids of ``<bos> words <eos>``: the prompt, then the empty prompt (padded)."""
        vocab = self.vocabulary
        ids, empty = (vocab.encode(text, self.config["max_tokens"]) for text in (prompt, ""))
        tokens = np.full((2, len(ids)), vocab.pad, np.int64)
        tokens[0], tokens[1, : len(empty)] = ids, empty
        return tokens

    def prompt_warnings(self, prompt: str) -> list[str]:
        """What the model cannot follow in ``prompt``: words it never learned, and a prompt that
        names none of the sounds it knows."""
        from edgeaudio.plugins.shared.captions import EVENT_KEYWORDS
        from edgeaudio.plugins.shared.vocabulary import normalize

        words = normalize(prompt)
        warnings = []
        unknown = [w for w in words if w not in self.vocabulary.index]
        if unknown:
            warnings.append(f"words the model never learned are ignored: {', '.join(dict.fromkeys(unknown))}")
        text = " " + " ".join(words) + " "
        if not any(f" {keyword} " in text for keywords in EVENT_KEYWORDS.values() for keyword in keywords):
            warnings.append("the prompt names no sound the model knows, so the audio follows only its other words; "
                            f"known sounds: {', '.join(sorted(EVENT_KEYWORDS))}")  # fmt: skip
        return warnings

    # -- running ----------------------------------------------------------------------------------
    def generate(self, runner, prompt: str, seconds: float | None = None, steps: int | None = None,
                 seed: int = 0, guidance: float | None = None, candidates: int | None = None) -> dict[str, Any]:  # fmt: skip
        """Raw outputs for one prompt: ``audio`` [1, samples], the chosen normalised ``mel`` [1,
        mels, frames], which ``candidate`` it was and every candidate's ``scores``."""
        from edgeaudio.plugins.tta.sampler import generate_mel

        c = self.config
        seconds = float(c["seconds"] if seconds is None else seconds)
        steps = int(c["steps"] if steps is None else steps)
        guidance = float(c["guidance"] if guidance is None else guidance)
        candidates = int(c.get("candidates", 1) if candidates is None else candidates)
        if not 0 < seconds <= MAX_SECONDS:
            raise UsageError(f"--seconds must be in (0, {MAX_SECONDS:g}], got {seconds:g}", hint="generate longer audio in pieces")
        if not 1 <= steps <= MAX_STEPS:
            raise UsageError(f"--steps must be in 1..{MAX_STEPS}, got {steps}")
        if not 0 <= guidance <= MAX_GUIDANCE:  # also refuses NaN
            raise UsageError(f"--guidance must be in 0..{MAX_GUIDANCE:g}, got {guidance:g}")
        if not 1 <= candidates <= MAX_CANDIDATES:
            raise UsageError(f"--candidates must be in 1..{MAX_CANDIDATES}, got {candidates}",
                             hint="each candidate adds a sampling run; 1 keeps the first without ranking")  # fmt: skip
        samples = int(round(seconds * self.sample_rate))
        frames = frames_for(seconds, self.sample_rate)
        mels, scores = generate_mel(runner, self.prompt_batch(prompt), self.vocabulary.pad, c["n_mels"], frames, steps,
                                    guidance, int(seed), float(c.get("shift", 1.0)), candidates)  # fmt: skip
        chosen = int(np.argmax(scores))
        mel = mels[chosen : chosen + 1]
        audio = runner.graph("vocoder").run({"mel": mel})["audio"][0, :, :samples]
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak > 0.99:
            audio = audio * (0.99 / peak)
        return {"audio": audio.astype(np.float32), "mel": mel, "candidate": np.array(chosen), "scores": scores}

    def decode_generation(self, prompt: str, outputs: Mapping[str, np.ndarray], **options: Any) -> dict[str, Any]:
        """The audio [1, samples] with what made it: prompt, seed, steps, guidance, candidates (and
        which one was kept), warnings."""
        used = {**{k: self.config[k] for k in ("steps", "guidance")}, "candidates": self.config.get("candidates", 1), "seed": 0}
        used.update({k: v for k, v in options.items() if k in used and v is not None})
        return {"prompt": prompt, **used,
                "kept_candidate": int(outputs["candidate"]),
                "seconds": outputs["audio"].shape[1] / self.sample_rate, "warnings": self.prompt_warnings(prompt),
                "audio": outputs["audio"]}  # fmt: skip

    def results_to_audio(self, results: Any) -> np.ndarray:
        items = results if isinstance(results, list) else [results]
        return np.concatenate([np.asarray(r["audio"], np.float32) for r in items] or [np.zeros((1, 0), np.float32)], axis=1)

    def process(self, runner, audio: np.ndarray) -> dict[str, np.ndarray]:
        raise UsageError("the tta task takes a text prompt, not audio", hint='edgeaudio run tta "a horn honks twice" -o out.wav')

    # -- data and metrics -------------------------------------------------------------------------
    def validation_set(self) -> EvalSet:
        """(prompt, class, seed): two phrasings of every class the judge knows. Prompts need no
        data: the judge (shipped weights) classifies what each generates."""
        from edgeaudio.plugins.tta.data import single_event_prompts
        from edgeaudio.plugins.tta.judge import load_judge

        _, classes = load_judge()
        pairs = single_event_prompts(classes, VALIDATION_PER_CLASS)
        return EvalSet([(prompt, label, VALIDATION_SEED + i) for i, (prompt, label) in enumerate(pairs)],
                       f"{VALIDATION_PER_CLASS} prompts for each of the judge's {len(classes)} classes")

    def read_dataset(self, path: Path) -> EvalSet:
        """``PATH/prompts.csv`` (or a CSV file itself) with columns ``prompt, class`` and optionally
        ``seed``: prompts each naming one class the judge knows (``edgeaudio run tta --help``)."""
        import csv

        from edgeaudio.plugins.tta.judge import load_judge

        table = path / "prompts.csv" if path.is_dir() else path
        expected = "a CSV with columns prompt,class[,seed], one class the judge knows per prompt"
        if not table.is_file():
            raise UsageError(f"{table} is missing", hint=f"expected {expected}")
        _, classes = load_judge()
        with open(table, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not {"prompt", "class"} <= set(reader.fieldnames or []):
                raise UsageError(f"{table} has columns {reader.fieldnames}, not prompt and class", hint=f"expected {expected}")
            items = []
            for line, row in enumerate(reader, start=2):
                if row["class"] not in classes:
                    raise UsageError(f"{table} line {line}: class '{row['class']}' is not one the judge knows",
                                     hint=f"classes: {', '.join(classes)}")
                items.append((row["prompt"], row["class"], int(row.get("seed") or VALIDATION_SEED + len(items))))
        if not items:
            raise UsageError(f"{table} holds no prompts", hint=f"expected {expected}")
        return EvalSet(items, f"{table} ({len(items)} prompts)")

    def evaluate(self, runner, dataset) -> dict[str, float]:
        """Generate every validation prompt on ``runner`` and let the independent judge classify it."""
        from edgeaudio.plugins.tta.judge import judge_audio, load_judge

        judge, classes = load_judge()
        audio = np.stack([self.generate(runner, prompt, seed=seed)["audio"][0] for prompt, _, seed in dataset])
        probs, _ = judge_audio(judge, audio)
        hits = [classes[i] == label for i, (_, label, _) in zip(probs.argmax(axis=1), dataset)]
        return {"class_accuracy": float(np.mean(hits))}

    def calibration_data(self, count: int = 8, dataset=None) -> Iterable[dict[str, dict[str, np.ndarray]]]:
        """The feeds every graph receives while the torch model generates ``dataset``'s prompts
        (default: the validation prompts)."""
        from edgeaudio.plugins.tta.eager import EagerGraph
        from edgeaudio.runtime import Runner

        model = self.load_model()
        graphs = {g.name: g for g in self.graphs(model)}
        recorded: list[dict[str, dict[str, np.ndarray]]] = []

        class Recording(Runner):
            def graph(self, name):
                spec = graphs[name]
                inner = EagerGraph(spec.module, spec.input_names, spec.output_names)

                class Recorder:
                    def run(self, feeds):
                        recorded.append({name: {n: np.array(feeds[n]) for n in spec.input_names}})
                        return inner.run(feeds)

                return Recorder()

        for prompt, _, seed in (self.validation_set() if dataset is None else dataset)[:count]:
            self.generate(Recording(), prompt, seed=seed)
        return recorded

    train_options = TtaTrainOptions

    def train(self, out_dir: str, options: TtaTrainOptions | None = None) -> dict[str, Any]:
        from edgeaudio.plugins.tta.train import train_tta

        return train_tta(self, out_dir, options or TtaTrainOptions())
