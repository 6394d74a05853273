"""Tiny tasks that drive the whole core in seconds. ``TinyTask``: a streaming task (conv-DFT-like
front end with an audio-tail state, a GRU with hidden state, per-frame outputs), registered
in-process by the tests (the ``tiny_plugin`` fixture). ``TinyClipTask`` runs the same network on
whole clips and ``TinyTextTask`` generates audio from a prompt; the conformance tests pass them
as classes."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgeaudio.hookspecs import hookimpl
from edgeaudio.task import Graph, InputKind, MetricGate, ResultKind, StatePair, Streaming, Task, TensorSpec

HOP = 80
CHANNELS = 2
FEATURES = 16
HIDDEN = 24
CLASSES = 3


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.frontend = nn.Conv1d(CHANNELS, FEATURES, kernel_size=2 * HOP, stride=HOP, bias=False)
        self.gru = nn.GRU(FEATURES, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, audio, tail, hidden):
        x = torch.cat([tail, audio], dim=2)
        feats = torch.log1p(self.frontend(x).abs()).transpose(1, 2)
        seq, hidden_out = self.gru(feats, hidden)
        return torch.sigmoid(self.head(seq)), x[:, :, -HOP:], hidden_out


def _clip(seed: int, blocks: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(blocks * HOP) / 8000.0
    tone = np.sin(2 * np.pi * rng.uniform(200, 1500) * t)
    return (0.3 * tone[None, :] + 0.05 * rng.standard_normal((CHANNELS, t.size))).astype(np.float32)


class TinyTask(Task):
    name = "tiny"
    version = "1"
    description = "test task: 2-channel streaming GRU"
    sample_rate = 8000
    channels = CHANNELS
    # agreement with the fp32 model, capped at 100 dB; INT8 must keep at least 40 dB
    gate = MetricGate("agreement_db", max_drop=60.0, higher_is_better=True)

    def build_model(self):
        torch.manual_seed(int(self.config.get("seed", 0)))
        return TinyNet()

    def graphs(self, model):
        audio = _clip(1)[None]
        return [
            Graph(
                name="main",
                module=model,
                inputs=[
                    TensorSpec("audio", ("batch", CHANNELS, "samples")),
                    TensorSpec("tail", ("batch", CHANNELS, HOP)),
                    TensorSpec("hidden", (1, "batch", HIDDEN)),
                ],
                outputs=[
                    TensorSpec("scores", ("batch", "frames", CLASSES)),
                    TensorSpec("tail_out", ("batch", CHANNELS, HOP)),
                    TensorSpec("hidden_out", (1, "batch", HIDDEN)),
                ],
                example_inputs={
                    "audio": audio,
                    "tail": np.zeros((1, CHANNELS, HOP), np.float32),
                    "hidden": np.zeros((1, 1, HIDDEN), np.float32),
                },
                state=[StatePair("tail", "tail_out"), StatePair("hidden", "hidden_out")],
                streaming=Streaming("audio", block=HOP, time_axes={"scores": 1}),
                atol=1e-4,
                keep_float=["/frontend/", "Pad", "Concat", "Slice"],
            )
        ]

    def calibration_data(self, count: int = 16):
        for seed in range(count):
            yield {"main": {
                "audio": _clip(100 + seed)[None],
                "tail": np.zeros((1, CHANNELS, HOP), np.float32),
                "hidden": np.zeros((1, 1, HIDDEN), np.float32),
            }}

    def validation_set(self):
        model = self.load_model()
        graph = self.graphs(model)[0]
        items = []
        for seed in range(8):
            audio = _clip(200 + seed)
            feeds = dict(graph.example_inputs, audio=audio[None])
            with torch.no_grad():
                target = model(*(torch.from_numpy(feeds[n]) for n in graph.input_names))[0].numpy()
            items.append((audio, target))
        return items

    def evaluate(self, runner, dataset):
        graph = runner.streaming_graph()
        signal = noise = 0.0
        for audio, target in dataset:
            got = graph.run_offline(audio)["scores"]
            signal += float(np.sum(target**2))
            noise += float(np.sum((got - target) ** 2))
        return {"agreement_db": float(min(100.0, 10 * np.log10(signal / max(noise, 1e-30))))}

    def decode(self, outputs, start_frame=0):
        scores = outputs["scores"][0]
        return [
            {"frame": start_frame + i, "active": [int(k) for k in np.flatnonzero(row > 0.5)]}
            for i, row in enumerate(scores)
        ]


class TinyClipTask(TinyTask):
    """The tiny network on whole clips: no streaming graph, one events result per clip."""

    name = "tiny-clip"
    description = "test task: 2-channel GRU over whole clips"
    input_kind = InputKind.CLIP
    result_kind = ResultKind.EVENTS
    classes = ("low", "mid", "high")

    def graphs(self, model):
        graph = super().graphs(model)[0]
        graph.state, graph.streaming = [], None
        return [graph]

    def process(self, runner, audio):
        feeds = {"audio": audio[None], "tail": np.zeros((1, CHANNELS, HOP), np.float32),
                 "hidden": np.zeros((1, 1, HIDDEN), np.float32)}  # fmt: skip
        return {"scores": runner.graph("main").run(feeds)["scores"]}

    def decode(self, outputs, start_frame=0):
        mean = np.asarray(outputs["scores"])[0].mean(axis=0)
        return {"active": [self.classes[k] for k in np.flatnonzero(mean > 0.5)], "mean": [round(float(v), 4) for v in mean]}


class TinySynth(nn.Module):
    """Noise shaped by a convolution, scaled by a level: audio of the noise's length."""

    def __init__(self):
        super().__init__()
        self.shape = nn.Conv1d(1, 1, kernel_size=9, padding=4)

    def forward(self, noise, level):
        return torch.tanh(self.shape(noise)) * level[:, :, None]


class TinyTextTask(Task):
    """Text to audio: seeded noise through ``TinySynth``, louder for longer prompts."""

    name = "tiny-text"
    version = "1"
    description = "test task: noise from a prompt"
    sample_rate = 8000
    channels = 1
    input_kind = InputKind.TEXT
    result_kind = ResultKind.WAVEFORM

    def default_config(self):
        return {"seconds": 1.0}

    def build_model(self):
        torch.manual_seed(0)
        return TinySynth()

    def graphs(self, model):
        noise = np.random.default_rng(0).standard_normal((1, 1, 800)).astype(np.float32)
        return [
            Graph(
                name="synth",
                module=model,
                inputs=[TensorSpec("noise", ("batch", 1, "samples")), TensorSpec("level", ("batch", 1))],
                outputs=[TensorSpec("audio", ("batch", 1, "samples"))],
                example_inputs={"noise": noise, "level": np.array([[0.5]], np.float32)},
            )
        ]

    def generate(self, runner, prompt, seconds=None, seed=0, **options):
        samples = int(round(float(self.config["seconds"] if seconds is None else seconds) * self.sample_rate))
        noise = self.noise(int(seed), samples)
        level = np.array([[min(1.0, 0.1 * len(prompt.split()))]], np.float32)
        return {"audio": runner.graph("synth").run({"noise": noise, "level": level})["audio"][0]}

    def noise(self, seed: int, samples: int) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((1, 1, samples)).astype(np.float32)

    def decode_generation(self, prompt, outputs, **options):
        return {"prompt": prompt, "seconds": outputs["audio"].shape[1] / self.sample_rate, "audio": outputs["audio"]}

    def results_to_audio(self, results):
        items = results if isinstance(results, list) else [results]
        return np.concatenate([np.asarray(r["audio"], np.float32) for r in items], axis=1)


@hookimpl
def register_tasks(register):
    register(TinyTask)
