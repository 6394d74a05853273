"""The captioning task: a sentence describing what is heard in a clip, on the device.

Two graphs carry the model (see model.py): ``encoder`` runs once per clip, ``decoder_step`` once
per generated word with its self-attention cache as explicit state. ``process`` runs that loop
itself (greedy, or beam search with ``config["beam"] > 1``) on whatever backend the runner
holds, so the search is the same numpy code on every backend. The vocabulary is part of the
config: it is saved in every bundle's manifest and beside the shipped weights, never downloaded.

Tag guidance: the encoder also says which event classes it hears (``tag_probs``). While a class
it gives at least ``tag_threshold`` is not yet named by a hypothesis, the search lowers that
hypothesis's ``<eos>`` log-probability by ``tag_guidance`` per such class and raises the class's
one-word keywords ("horn", "machinery") by ``tag_word_bonus``, so captions of busy scenes stop
leaving events out. The result lists those classes as ``events``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from edgeaudio.task import EvalSet, Graph, InputKind, MetricGate, ResultKind, StatePair, Task, TensorSpec, matching_checkpoint

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS = WEIGHTS_DIR / "caption.safetensors"
VALIDATION_CLIPS = 48
VALIDATION_SEED = 7001
# Keys that decide the network's shape and meaning; shipped weights fit only when these agree.
MODEL_KEYS = ("vocab", "tags", "n_mels", "stem", "d_model", "heads", "hidden", "encoder_layers", "decoder_layers",
              "max_tokens")
LEGACY = {"stem": "conv1d"}  # what a sidecar written before a key existed was trained with
# <eos> penalty per likely class not yet named, and the bonus of its keywords, chosen on 150
# validation clips (seed 7001). Edition-2 weights (thresholds 0.3/0.5/0.7, penalties 1-3, bonuses
# 0-4): event F1 0.742 unguided, 0.774 with the penalty alone, 0.803 with a bonus of 3 as well.
# The shipped edition-3 weights: 0.833 unguided, 0.855 with the penalty alone (CIDEr-D 1.485 ->
# 1.498), 0.853 with a bonus of 3 (CIDEr-D 1.352), 0.850 with 2 and 2: the bonus is off.
TAG_GUIDANCE, TAG_WORD_BONUS = 3.0, 0.0


@dataclass(frozen=True)
class CaptionTrainOptions:
    """The options of ``edgeaudio train caption`` (see train.py for the recipe)."""

    clips: int = field(default=3000, metadata={"help": "Training clips to compose from the event library.", "min": 1})
    test_clips: int = field(default=100, metadata={
        "help": "Held-out clips to compose (with --captions-csv: at most a fifth of its clips).", "min": 1})
    epochs: int = field(default=40, metadata={"help": "Passes over the training clips.", "min": 1})
    seed: int = field(default=0, metadata={"help": "Seed of the composition and the training.", "min": 0})
    batch_size: int = field(default=32, metadata={"help": "Clips per training step.", "min": 1})
    lr: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW, cosine decay).", "min": 0})
    library: str | None = field(default=None, metadata={
        "help": "Event library folder to compose from (default: the built-in one)."})
    captions_csv: str | None = field(default=None, metadata={
        "help": "Train on real captioned audio instead: its Clotho or AudioCaps captions CSV (with --audio-dir)."})
    captions_format: str = field(default="clotho", metadata={
        "help": "Layout of --captions-csv.", "choices": ("clotho", "audiocaps")})
    audio_dir: str | None = field(default=None, metadata={
        "help": "Folder holding the clips that --captions-csv names."})
    threads: int = field(default=1, metadata={
        "help": "Torch threads (1 is fastest on a machine shared with other jobs; 0: torch's choice).", "min": 0})
    stem: str | None = field(default=None, metadata={
        "help": "The encoder's stem (default: the task config's).", "choices": ("conv2d", "conv1d")})
    workers: int = field(default=1, metadata={
        "help": "Processes composing the training clips (the same clips as one process makes).", "min": 1})
    device: str = field(default="cpu", metadata={
        "help": "Where to train: cpu, cuda, cuda:N or auto (the clips are composed on the CPU)."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


class CaptionTask(Task):
    name = "caption"
    input_kind = InputKind.CLIP
    result_kind = ResultKind.TEXT
    version = "1"
    description = "audio captioning: one sentence describing the clip (audio encoder + Transformer decoder)"
    sample_rate = 16000
    channels = 1
    # a caption describes whole events, learnt from 10 s clips: under a second there is none to describe
    min_input_seconds = 1.0
    # CIDEr-D on the 0-10 scale; INT8 may lose at most 0.1 of it on the validation set
    gate = MetricGate("cider_d", max_drop=0.1, higher_is_better=True)

    def default_config(self) -> dict[str, Any]:
        """The search settings, plus the shipped model's config when weights ship (its
        vocabulary fits them), else the architecture defaults with the synthesized captions'
        vocabulary. Beam 3 scored CIDEr-D 1.36 against greedy's 1.29 on the benchmark set (edition-2 weights) for
        ~6 ms more per 10 s clip (benchmarks/caption_eval.py)."""
        from edgeaudio.events.editions import LATEST_EDITION

        search = {"beam": 3, "length_penalty": 1.0, "tag_guidance": TAG_GUIDANCE,
                  "tag_word_bonus": TAG_WORD_BONUS, "tag_threshold": 0.5}
        sidecar = WEIGHTS.with_suffix(".json")
        if WEIGHTS.is_file() and sidecar.is_file():
            trained = self.trained_config(json.loads(sidecar.read_text()))
            return {**search, **{k: trained[k] for k in (*MODEL_KEYS, "seed", "library_edition")}}
        from edgeaudio.plugins.shared.captions import EVENT_KEYWORDS, caption_words
        from edgeaudio.plugins.shared.vocabulary import Vocabulary

        return {
            **search,
            "vocab": Vocabulary.build(caption_words()).words,
            "tags": sorted(EVENT_KEYWORDS),
            "n_mels": 64, "stem": "conv2d", "d_model": 128, "heads": 4, "hidden": 384,
            "encoder_layers": 2, "decoder_layers": 2, "max_tokens": 32, "seed": 0, "library_edition": LATEST_EDITION,
        }  # fmt: skip

    @classmethod
    def trained_config(cls, sidecar: Mapping[str, Any]) -> dict[str, Any]:
        """The sidecar's config, with LEGACY values for keys added since and its library edition."""
        from edgeaudio.events.editions import edition_of

        return {**LEGACY, **super().trained_config(sidecar), "library_edition": edition_of(sidecar)}

    @property
    def vocabulary(self):
        from edgeaudio.plugins.shared.vocabulary import Vocabulary

        return Vocabulary(self.config["vocab"])

    # -- model -----------------------------------------------------------------------------------
    def build_model(self):
        import torch

        from edgeaudio.plugins.caption.model import CaptionNet

        c = self.config
        with torch.random.fork_rng():  # the same initial weights for a seed, without reseeding the caller
            torch.manual_seed(int(c.get("seed", 0)))
            return CaptionNet(
                len(c["vocab"]), sample_rate=self.sample_rate, n_mels=c["n_mels"], d_model=c["d_model"],
                heads=c["heads"], hidden=c["hidden"], encoder_layers=c["encoder_layers"],
                decoder_layers=c["decoder_layers"], max_tokens=c["max_tokens"], tags=len(c.get("tags", [])),
                stem=c["stem"],
            )  # fmt: skip

    def default_checkpoint(self) -> str | None:
        return matching_checkpoint(WEIGHTS, self.config, MODEL_KEYS, defaults=LEGACY)

    def graphs(self, model) -> list[Graph]:
        import torch

        from edgeaudio.plugins.caption.model import DecoderStepGraph, EncoderGraph

        c = self.config
        layers, width, slots = c["decoder_layers"], c["d_model"], c["max_tokens"]
        audio = example_clip()[None, None]
        with torch.inference_mode():
            keys, values = (t.numpy() for t in model.encode(torch.from_numpy(audio))[:2])
        rng = np.random.default_rng(0)
        cache = lambda: (0.5 * rng.standard_normal((layers, 2, slots, width))).astype(np.float32)  # noqa: E731
        memory = lambda: ("batch", "frames")  # noqa: E731
        tags = [TensorSpec("tag_probs", ("batch", len(c["tags"])))] if model.tagger is not None else []
        encoder = Graph(
            name="encoder",
            module=EncoderGraph(model),
            inputs=[TensorSpec("audio", ("batch", 1, "samples"))],
            outputs=[TensorSpec("memory_keys", (layers, *memory(), width)), TensorSpec("memory_values", (layers, *memory(), width)),
                     *tags],
            example_inputs={"audio": audio},
            atol=1e-3,
            keep_float=["/frontend/", "/encoder/input_norm/"],  # DFT, power, mel and log maths
            axes={"batch": (1, 1, 1), "samples": (1600, 160000, 480000)},  # one clip of 0.1-30 s, 10 s typical
        )
        step = Graph(
            name="decoder_step",
            module=DecoderStepGraph(model),
            inputs=[
                TensorSpec("token", ("batch", 1), "int64"),
                TensorSpec("position", ("batch", 1), "int64"),
                TensorSpec("memory_keys", (layers, *memory(), width)),
                TensorSpec("memory_values", (layers, *memory(), width)),
                TensorSpec("cache_keys", (layers, "batch", slots, width)),
                TensorSpec("cache_values", (layers, "batch", slots, width)),
            ],
            outputs=[
                TensorSpec("log_probs", ("batch", len(c["vocab"]))),
                TensorSpec("cache_keys_out", (layers, "batch", slots, width)),
                TensorSpec("cache_values_out", (layers, "batch", slots, width)),
            ],
            example_inputs={
                "token": np.array([[4], [9]], np.int64),
                "position": np.array([[3], [3]], np.int64),
                "memory_keys": np.repeat(keys, 2, axis=1),
                "memory_values": np.repeat(values, 2, axis=1),
                "cache_keys": cache(),
                "cache_values": cache(),
            },
            state=[StatePair("cache_keys", "cache_keys_out"), StatePair("cache_values", "cache_values_out")],
            atol=1e-3,
            # one hypothesis per beam (the search sets the batch); memory of a 0.1-30 s clip
            axes={"batch": (1, int(c.get("beam", 1)), max(1, int(c.get("beam", 1)))), "frames": (2, 126, 376)},
        )
        return [encoder, step]

    # -- data and metrics --------------------------------------------------------------------------
    def validation_set(self) -> EvalSet:
        """48 clips of 10 s composed (fixed seed) from the held-out recordings of the library
        edition the model was trained on: from the library where it is built, else the same
        clips as the package ships them (``plugins/caption/validation``, Opus-coded)."""
        from edgeaudio.events.editions import LATEST_EDITION, builtin_dir, is_built
        from edgeaudio.plugins.caption.clip_sets import shipped_clips

        edition = self.config.get("library_edition") or LATEST_EDITION
        shipped = None if is_built(builtin_dir(edition)) else shipped_clips(edition)
        if shipped is not None:
            return shipped
        from edgeaudio.plugins.caption.data import synthesize_set
        from edgeaudio.plugins.caption.train import open_library

        library = open_library(held_out=True, edition=edition)
        return EvalSet(synthesize_set(library, VALIDATION_CLIPS, VALIDATION_SEED),
                       f"{VALIDATION_CLIPS} clips composed from event library edition {edition}'s held-out clips")

    def read_dataset(self, path: Path) -> EvalSet:
        """A folder of clips with Clotho-style captions (layout in ``clip_sets``)."""
        from edgeaudio.plugins.caption.clip_sets import read_captioned

        return read_captioned(path)

    def calibration_data(self, count: int = 16, dataset=None) -> Iterable[dict[str, dict[str, np.ndarray]]]:
        """Encoder inputs from ``dataset``'s clips (default: the validation clips), and the
        decoder-step feeds a greedy search on them produces (real tokens, positions, memories and
        caches), from the torch model."""
        from edgeaudio.plugins.caption.model import DecoderStepGraph, EncoderGraph
        from edgeaudio.runtime import Runner

        model = self.load_model()
        graphs = {"encoder": EncoderGraph(model), "decoder_step": DecoderStepGraph(model)}
        recorded: list[dict[str, dict[str, np.ndarray]]] = []

        class Recording(Runner):
            def graph(self, name):
                return _TorchGraph(graphs[name], name, recorded)

        for clip in (self.validation_set() if dataset is None else dataset)[:count]:
            self.process(Recording(), clip.audio[None])
        return recorded

    def evaluate(self, runner, dataset) -> dict[str, float]:
        """Caption metrics against the references, and event P/R/F1 where clips carry labels."""
        from edgeaudio.plugins.shared.captions import EVENT_KEYWORDS
        from edgeaudio.plugins.caption.metrics import caption_scores, event_scores

        captions = [self.decode(self.process(runner, clip.audio[None]))["caption"] for clip in dataset]
        scores = caption_scores(captions, [clip.captions for clip in dataset])
        if all(clip.labels for clip in dataset):
            scores.update(event_scores(captions, [clip.labels for clip in dataset], EVENT_KEYWORDS))
        return scores

    # -- running ----------------------------------------------------------------------------------
    def process(self, runner, audio: np.ndarray) -> dict[str, np.ndarray]:
        """Encoder once, then the decoder step per word; raw output: the token ids [1, n] and,
        from a model with a tagging head, the tag probabilities [1, classes]."""
        from edgeaudio.plugins.caption.search import beam_search, greedy

        c, vocab = self.config, self.vocabulary
        memory = runner.graph("encoder").run({"audio": np.ascontiguousarray(audio[None], dtype=np.float32)})
        beam = int(c.get("beam", 1))
        keys, values = (np.repeat(memory[n], beam, axis=1) for n in ("memory_keys", "memory_values"))
        decoder = runner.graph("decoder_step")
        empty = np.zeros((c["decoder_layers"], beam, c["max_tokens"], c["d_model"]), np.float32)
        positions = np.arange(c["max_tokens"], dtype=np.int64).repeat(beam).reshape(-1, beam, 1)  # one feed per step, made once

        def step(tokens, position, cache):
            out = decoder.run({"token": tokens, "position": positions[position],
                               "memory_keys": keys, "memory_values": values, **cache})  # fmt: skip
            return out["log_probs"], {"cache_keys": out["cache_keys_out"], "cache_values": out["cache_values_out"]}

        cache = {"cache_keys": empty, "cache_values": empty}
        probs = memory.get("tag_probs")
        guide = self._guide(probs[0]) if probs is not None and c.get("tag_guidance") else None
        if beam > 1:
            ids = beam_search(step, cache, beam, vocab.bos, vocab.eos, c["max_tokens"], float(c.get("length_penalty", 1.0)), guide)
        else:
            ids = greedy(step, cache, 1, vocab.bos, vocab.eos, c["max_tokens"], guide)[0]
        raw = {"tokens": np.asarray(ids, np.int64)[None]}
        return raw if probs is None else {**raw, "tag_probs": np.asarray(probs, np.float32)}

    def _likely(self, probs: np.ndarray) -> dict[str, float]:
        threshold = float(self.config.get("tag_threshold", 0.5))
        return {tag: float(p) for tag, p in zip(self.config["tags"], probs) if p >= threshold}

    def _guide(self, probs: np.ndarray):
        """The search's bias for a hypothesis: per likely class it has not named, ``<eos>`` lowered
        by ``tag_guidance`` and the class's one-word keywords raised by ``tag_word_bonus``."""
        from edgeaudio.plugins.shared.captions import EVENT_KEYWORDS
        from edgeaudio.plugins.caption.metrics import keyword_table

        likely, vocab = set(self._likely(probs)), self.vocabulary
        if not likely:
            return None
        penalty, bonus = float(self.config["tag_guidance"]), float(self.config.get("tag_word_bonus", 0.0))
        keywords = {tag: [vocab.index[k] for k in EVENT_KEYWORDS.get(tag, []) if k in vocab.index] for tag in likely}
        # A word that is in no keyword phrase cannot change which classes a caption names, so a
        # hypothesis that appends one inherits its parent's answer (the search asks for every
        # hypothesis at every step; words of vocabularies are normalized already).
        table = keyword_table(EVENT_KEYWORDS)  # mentioned_classes with the table prepared once
        phrase_words = table.words
        token_words = _token_words(tuple(vocab.words))
        unnamed_by_history: dict[tuple[int, ...], frozenset] = {}
        biases: dict[frozenset, np.ndarray] = {}

        def guide(history: list[int]) -> np.ndarray:
            key = tuple(history)
            unnamed = unnamed_by_history.get(key)
            if unnamed is None and key and vocab.words[key[-1]] not in phrase_words:
                unnamed = unnamed_by_history.get(key[:-1])
            if unnamed is None:
                said: list[str] = []
                for token in history:
                    if token == vocab.eos:
                        break
                    said += token_words[token]
                unnamed = frozenset(likely - table.mentioned(said))
            unnamed_by_history[key] = unnamed
            if unnamed not in biases:
                bias = np.zeros(len(vocab.words))
                bias[vocab.eos] -= penalty * len(unnamed)
                for tag in unnamed:
                    bias[keywords[tag]] += bonus
                biases[unnamed] = bias
            return biases[unnamed]

        return guide

    def decode(self, outputs: Mapping[str, np.ndarray], start_frame: int = 0) -> dict[str, Any]:
        text = self.vocabulary.decode(np.asarray(outputs["tokens"]).reshape(-1))
        result: dict[str, Any] = {"caption": (text[:1].upper() + text[1:] + ".") if text else ""}
        if "tag_probs" in outputs:
            likely = self._likely(np.asarray(outputs["tag_probs"]).reshape(-1))
            result["events"] = [{"class": tag, "probability": round(p, 3)} for tag, p in sorted(likely.items(), key=lambda kv: -kv[1])]
        return result

    train_options = CaptionTrainOptions

    def train(self, out_dir: str, options: CaptionTrainOptions | None = None) -> dict[str, Any]:
        """Compose captioned clips from the event library, train, write weights + vocab + sidecar."""
        from edgeaudio.plugins.caption.train import train_caption

        return train_caption(self, out_dir, options or CaptionTrainOptions())


@lru_cache(maxsize=4)
def _token_words(words: tuple[str, ...]) -> list[list[str]]:
    """Per token id, the normalized words it adds to ``normalize(vocab.decode(ids))`` (read up to
    the first ``<eos>``): none for the specials decode drops. Normalizing never joins or splits
    words across the spaces decode puts between them, so the words add up token by token."""
    from edgeaudio.plugins.caption.tokenizer import BOS, EOS, PAD, normalize

    return [[] if word in (PAD, BOS, EOS) else normalize(word) for word in words]


def example_clip(seconds: float = 2.0) -> np.ndarray:
    """A fixed two-tone clip with noise: the graphs' example audio."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    tones = 0.3 * np.sin(2 * np.pi * 440 * t) * (t < seconds / 2) + 0.3 * np.sin(2 * np.pi * 1200 * t) * (t >= seconds / 2)
    return (tones + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


class _TorchGraph:
    """Runs one torch graph module for ``calibration_data`` and records each call's feeds."""

    names = {
        "encoder": (["audio"], ["memory_keys", "memory_values", "tag_probs"]),
        "decoder_step": (["token", "position", "memory_keys", "memory_values", "cache_keys", "cache_values"],
                         ["log_probs", "cache_keys_out", "cache_values_out"]),
    }  # fmt: skip

    def __init__(self, module, name: str, recorded: list):
        self.module, self.name, self.recorded = module, name, recorded

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        inputs, outputs = self.names[self.name]
        self.recorded.append({self.name: {n: np.array(feeds[n]) for n in inputs}})
        with torch.inference_mode():
            values = self.module(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in inputs))
        return {n: v.numpy() for n, v in zip(outputs, values)}
