"""The SELD task: which sound, from where, when, for any microphone array that has a profile.

One streaming graph takes raw array audio in 100 ms blocks and returns one multi-ACCDOA frame per
block; features are computed inside it, so every backend runs the same maths. The model is tied to
the array geometry it was trained for (``config["array"]``): the phase features encode it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from edgeaudio.plugins.seld.metrics import accdoa_events  # decoding runs per 100 ms frame: imported once
from edgeaudio.plugins.seld.tracking import Tracker
from edgeaudio.task import EvalSet, Graph, InputKind, MetricGate, ResultKind, StatePair, Streaming, Task, TensorSpec, matching_checkpoint

BLOCK = 1600  # 100 ms at 16 kHz: one DCASE label frame per graph block
FRAME_SECONDS = 0.1
CONFIDENCE_MARGIN = 1e-3  # in thousandths: how near a rounding boundary decode computes the float32 norm
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_SIDECAR = WEIGHTS_DIR / "seld-respeaker-4mic.json"


def shipped_classes() -> list[str]:
    """The classes the shipped models detect, as their sidecar records them (the built-in event
    library's classes, sorted; a test keeps the two equal), read without the data-building code."""
    import json

    return list(json.loads(DEFAULT_SIDECAR.read_text())["config"]["classes"])
VALIDATION_SCENES = 12
VALIDATION_SEED = 20240
# Keys of the config that decide the network's shape and meaning; shipped weights fit a config
# only when these agree with the ones they were trained with.
MODEL_KEYS = ("array", "classes", "n_mels", "conv_channels", "freq_pools", "gru_hidden", "gru_layers")


@dataclass(frozen=True)
class SeldTrainOptions:
    """The options of ``edgeaudio train seld`` (see train.py for the recipe)."""

    array: str | None = field(default=None, metadata={
        "help": "Microphone array profile to train for (see `edgeaudio devices`; default: respeaker-4mic, "
                "or with --data-dir the array the data was recorded with)."})
    classes: list[str] | None = field(default=None, metadata={
        "help": "Event classes to train on, comma-separated (default: all of the library's)."})
    hours: float = field(default=0.5, metadata={"help": "Hours of 10 s training scenes to synthesize.", "min": 0})
    epochs: int = field(default=20, metadata={"help": "Passes over the training scenes.", "min": 1})
    seed: int = field(default=0, metadata={
        "help": "Seed of the library split, the synthesis and the training.", "min": 0})
    init: str | None = field(default=None, metadata={
        "help": "Weights to fine-tune from: a .safetensors file, or 'default' for the array's shipped ones."})
    library: str | None = field(default=None, metadata={
        "help": "Event library folder to synthesize from (default: the built-in one)."})
    data_dir: str | None = field(default=None, metadata={
        "help": "Train on this synthesized folder or STARSS root instead of synthesizing."})
    test_scenes: int | None = field(default=None, metadata={
        "help": "Held-out scenes to synthesize (default: 15 % of the training scenes, at least 8).", "min": 1})
    batch_size: int = field(default=16, metadata={"help": "5 s crops per training step.", "min": 1})
    lr: float = field(default=2e-3, metadata={"help": "Peak learning rate (AdamW, cosine decay).", "min": 0})
    workers: int = field(default=2, metadata={"help": "Processes synthesizing scenes.", "min": 1})
    threads: int | None = field(default=None, metadata={
        "help": "Torch threads for training (unset or 0: torch's choice).", "min": 0})
    val_every: int = field(default=5, metadata={
        "help": "Score the held-out scenes every this many epochs (and after the last).", "min": 1})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


class SeldTask(Task):
    name = "seld"
    input_kind = InputKind.STREAM
    result_kind = ResultKind.EVENTS
    per_array = True
    version = "1"
    description = "sound event localization and detection for a mic array (streaming CRNN, multi-ACCDOA)"
    sample_rate = 16000
    gate = MetricGate("F20", max_drop=0.02, higher_is_better=True)  # 2 F20 points

    def __init__(self, config: Mapping[str, Any] | None = None):
        super().__init__(config)
        profile = self.array_profile()
        self.array = profile.name
        self.channels = profile.num_mics

    def default_config(self) -> dict[str, Any]:
        return {
            "array": "respeaker-4mic",
            "classes": shipped_classes(),
            "n_mels": 64,
            "conv_channels": [32, 64, 64],
            "freq_pools": [4, 4, 2],
            "gru_hidden": 128,
            "gru_layers": 2,
            # the event library edition the shipped weights trained on; training writes its own
            "library_edition": 1,
        }

    @property
    def classes(self) -> list[str]:
        return list(self.config["classes"])

    def array_profile(self):
        from edgeaudio.profiles import get_array

        return get_array(self.config["array"], live_devices=[])[0]

    # -- model ---------------------------------------------------------------------------------
    def build_model(self):
        import torch

        from edgeaudio.plugins.seld.model import SeldNet

        c = self.config
        with torch.random.fork_rng():  # the same initial weights every time, without reseeding the caller
            torch.manual_seed(0)
            return SeldNet(
                self.array_profile().positions,
                len(self.classes),
                sample_rate=self.sample_rate,
                block=BLOCK,
                n_mels=c["n_mels"],
                conv_channels=c["conv_channels"],
                freq_pools=c["freq_pools"],
                gru_hidden=c["gru_hidden"],
                gru_layers=c["gru_layers"],
            )

    def default_checkpoint(self) -> str | None:
        """The shipped weights for the configured array, when they were trained with this config."""
        return matching_checkpoint(WEIGHTS_DIR / f"seld-{self.array}.safetensors", self.config, MODEL_KEYS)

    def graphs(self, model) -> list[Graph]:
        rng = np.random.default_rng(0)
        state = [s.numpy() for s in model.initial_state(1)]
        names = ["tail", "hidden"] + [f"cache{i}" for i in range(len(state) - 2)]
        shapes = [("batch", *s.shape[1:]) for s in state]
        shapes[1] = (state[1].shape[0], "batch", state[1].shape[2])  # GRU state is [layers, batch, hidden]
        example = {"audio": (0.1 * rng.standard_normal((1, self.channels, 3 * BLOCK))).astype(np.float32)}
        example.update({n: rng.uniform(-0.5, 0.5, s.shape).astype(np.float32) for n, s in zip(names, state)})
        outputs = 3 * 3 * len(self.classes)
        return [
            Graph(
                name="seld",
                module=model,
                inputs=[TensorSpec("audio", ("batch", self.channels, "samples"))]
                + [TensorSpec(n, s) for n, s in zip(names, shapes)],
                outputs=[TensorSpec("accdoa", ("batch", "frames", outputs))]
                + [TensorSpec(f"{n}_out", s) for n, s in zip(names, shapes)],
                example_inputs=example,
                state=[StatePair(n, f"{n}_out") for n in names],
                streaming=Streaming("audio", block=BLOCK, time_axes={"accdoa": 1}, frames_per_block=1),
                atol=1e-4,
                # the DFT, log and phase maths, and the normalisation of their very unequal ranges
                keep_float=["/frontend/", "/input_norm/"],
            )
        ]

    # -- data and metrics ------------------------------------------------------------------------
    def validation_set(self) -> EvalSet:
        """Twelve 10 s scenes for this array from the held-out clips of the event library edition
        the model trained on, as ``(audio [mics, samples], label set)`` pairs: synthesized once
        (seeded) into the cache where that library is built, else the very same scenes as the
        package ships them (``plugins/seld/validation``: the default array's), so export needs
        neither root nor the library's Debian packages."""
        from edgeaudio.events.editions import LATEST_EDITION, builtin_dir, is_built
        from edgeaudio.plugins.seld.scene_sets import read_scenes, shipped_scenes

        edition = self.config.get("library_edition") or LATEST_EDITION
        shipped = None if is_built(builtin_dir(edition)) else shipped_scenes(self)
        if shipped is not None:
            return shipped
        from edgeaudio.cache import cache_root
        from edgeaudio.errors import UsageError
        from edgeaudio.plugins.seld.train import heldout_library, scene_config, synthesize

        try:
            library = heldout_library(self.classes, edition)
        except UsageError as exc:
            exc.hint = f"{exc.hint}; or bring scenes of your own: edgeaudio export seld --validation DIR --calibration DIR"
            raise
        config = scene_config(VALIDATION_SEED)
        key = hashlib.sha256(json.dumps([self.array, self.classes, repr(config), str(library.root)]).encode()).hexdigest()[:12]
        folder = cache_root() / "seld" / f"validation-{self.array}-{key}"
        synthesize(folder, config, library, self.array_profile().positions, VALIDATION_SCENES, progress=False)
        return read_scenes(folder, self, f"{VALIDATION_SCENES} scenes synthesized from event library edition {edition}'s held-out clips")

    def read_dataset(self, path: Path) -> EvalSet:
        """A folder of DCASE CSV scenes for this array (layout in ``scene_sets``)."""
        from edgeaudio.plugins.seld.scene_sets import read_scenes

        return read_scenes(path, self)

    def calibration_data(self, count: int = 32, dataset=None) -> Iterable[dict[str, dict[str, np.ndarray]]]:
        """3 s excerpts of ``dataset``'s scenes (default: the validation scenes) from zero state,
        as the graph sees a stream start."""
        model = self.build_model()
        zeros = dict(zip(self.graphs(model)[0].input_names[1:], (s.numpy() for s in model.initial_state(1))))
        scenes = self.validation_set() if dataset is None else dataset
        length = 30 * BLOCK
        for i in range(count):
            audio, _ = scenes[i % len(scenes)]
            start = max(0, min((i // len(scenes)) * length, audio.shape[1] - length))  # a later excerpt per round
            excerpt = audio[:, start : start + length]
            excerpt = np.pad(excerpt, ((0, 0), (0, -excerpt.shape[1] % BLOCK)))  # whole blocks, for a short scene of the user's
            yield {"seld": {"audio": np.ascontiguousarray(excerpt[None]), **zeros}}

    def evaluate(self, runner, dataset) -> dict[str, float]:
        """DCASE 2022/23 metrics over the whole set (1 s segments) and their frame-based variants."""
        graph = runner.streaming_graph()
        return seld_scores([(graph.run_offline(audio)["accdoa"][0], labels) for audio, labels in dataset], len(self.classes))

    # -- running -------------------------------------------------------------------------------
    def decoder(self):
        """A decode for one run whose track ids carry on from call to call (see tracking.py)."""
        from functools import partial

        return partial(self.decode, tracker=Tracker())

    def decode(self, outputs: Mapping[str, np.ndarray], start_frame: int = 0, tracker=None) -> list[dict[str, Any]]:
        """Per 100 ms frame: the active events with class name, direction in degrees (DCASE
        convention: azimuth counter-clockwise from the array's x axis, elevation up from its
        plane), confidence (the length of the event's ACCDOA vector, capped at 1) and a track
        id that follows one source over frames (``tracker`` carries them between calls; a
        fresh one numbers this call's sources from 0)."""
        tracker = tracker if tracker is not None else Tracker()
        accdoa = np.asarray(outputs["accdoa"])[0]
        classes = self.config["classes"]
        found_by_frame = accdoa_events(accdoa, len(classes))
        # Confidence is the float32 norm of the graph's vector (np.linalg.norm, as ever). The
        # double length the decoder has already differs from it by under 3e-7 up to 1 (longer
        # ones cap at 1), so it rounds to the same three decimals unless it lies within 1e-6 of
        # a rounding boundary: only there is the norm computed (a numpy call per event otherwise).
        shortcut = accdoa.dtype.char in "fd"
        frames = []
        for i in range(len(accdoa)):
            frame, found, events = start_frame + i, found_by_frame.get(i), []
            if found:  # a frame without events leaves the tracker as it is: tracks age by their gap
                ids = tracker.assign(frame, [event[:3] for event in found])
                for (cls, az, el, track, length), ident in zip(found, ids):
                    if not shortcut or abs(length * 1000 % 1 - 0.5) < CONFIDENCE_MARGIN:
                        length = float(np.linalg.norm(accdoa[i].reshape(3, 3, len(classes))[track, :, cls]))
                    events.append({"class": classes[cls], "azimuth": round(az, 1), "elevation": round(el, 1),
                                   "confidence": round(min(1.0, length), 3), "track": ident})
            frames.append({"frame": frame, "time_s": round(frame * FRAME_SECONDS, 3), "events": events})
        return frames

    train_options = SeldTrainOptions

    def train(self, out_dir: str, options: SeldTrainOptions | None = None) -> dict[str, Any]:
        """Synthesize scenes for an array, train, and write weights + sidecar (see train.py)."""
        from edgeaudio.plugins.seld.train import train_seld

        return train_seld(self, out_dir, options or SeldTrainOptions())


def seld_scores(items: list[tuple[np.ndarray, dict]], num_classes: int) -> dict[str, float]:
    """Segment-based ER20/F20/LE/LR/SELD/LE_micro plus ``*_frame`` ones over (accdoa, label set) pairs.

    Counts add up over recordings before ratios are taken, as DCASE scores a whole split.
    """
    from edgeaudio.plugins.seld.metrics import accdoa_to_labels

    return label_scores(((accdoa_to_labels(accdoa, num_classes), labels) for accdoa, labels in items), num_classes)


def label_scores(items: Iterable[tuple[dict, dict]], num_classes: int) -> dict[str, float]:
    """The scores of ``seld_scores`` over (predicted label set, reference label set) pairs, for
    systems that produce labels directly (the SRP-PHAT baseline)."""
    from edgeaudio.plugins.seld.metrics import SeldEvaluator

    segments, frames = SeldEvaluator(num_classes), SeldEvaluator(num_classes, segment_based=False)
    for predicted, labels in items:
        segments.update(predicted, labels)
        frames.update(predicted, labels)
    scores = {}
    for suffix, evaluator in (("", segments), ("_frame", frames)):
        s = evaluator.scores()
        scores.update({f"ER20{suffix}": s["ER"], f"F20{suffix}": s["F"], f"LE{suffix}": s["LE"], f"LR{suffix}": s["LR"],
                       f"SELD{suffix}": s["SELD"], f"LE_micro{suffix}": s["LE_micro"]})
    return scores
