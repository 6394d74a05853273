"""The independent judge: an audio classifier trained only on real recordings of the event library.

It never sees generated audio, composed mixtures or the generator's weights; it learns the 14
classes from the library's training recordings (one recording per 5 s window, at a random place,
replayed at a random speed and level over a faint noise bed) and is scored on the held-out
recordings, which gives the ceiling any generated clip can reach. Its pooled penultimate layer is
the embedding in which the Frechet distance between generated and real clips is measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from edgeaudio.plugins.tta.data import CLIP_SECONDS, SAMPLE_RATE
from edgeaudio.plugins.tta.model import LogMel

WINDOW = int(CLIP_SECONDS * SAMPLE_RATE)
WEIGHTS = Path(__file__).parent / "weights" / "judge.safetensors"


class Judge(nn.Module):
    """Log-mel -> four conv blocks -> mean+max pooling -> 128-d embedding -> class logits."""

    def __init__(self, classes: int, n_mels: int = 64, embedding: int = 128):
        super().__init__()
        self.frontend = LogMel(SAMPLE_RATE, n_mels)
        self.input_norm = nn.BatchNorm2d(1)
        layers, channels = [], 1
        for width in (24, 48, 96, 128):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        self.convs = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Linear(2 * channels, embedding), nn.ReLU())
        self.classify = nn.Sequential(nn.Dropout(0.3), nn.Linear(embedding, classes))

    def embedding(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio [batch, samples] at 16 kHz -> [batch, embedding]."""
        x = self.convs(self.input_norm(self.frontend(audio)[:, None]))  # [B, C, mels', frames']
        x = x.mean(dim=2)
        return self.embed(torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embedding(audio))


def fit_window(audio: np.ndarray, offset: int = 0) -> np.ndarray:
    """A clip placed in (or cut to) one 5 s window starting ``offset`` samples in."""
    window = np.zeros(WINDOW, np.float32)
    piece = audio[: WINDOW - offset]
    window[offset : offset + len(piece)] = piece
    return window


class RealWindows(torch.utils.data.Dataset):
    """Augmented 5 s windows of the library's recordings, ``repeats`` per recording per epoch."""

    def __init__(self, clips: list[np.ndarray], labels: list[int], repeats: int = 8):
        self.clips, self.labels, self.repeats = clips, labels, repeats

    def __len__(self) -> int:
        return len(self.clips) * self.repeats

    def __getitem__(self, index: int):
        clip = self.clips[index % len(self.clips)]
        speed = float(np.exp(np.random.uniform(np.log(0.85), np.log(1.2))))
        clip = np.interp(np.arange(0, len(clip) - 1, speed), np.arange(len(clip)), clip).astype(np.float32)
        if len(clip) > WINDOW:
            start = np.random.randint(len(clip) - WINDOW + 1)
            window = clip[start : start + WINDOW]
        else:
            window = fit_window(clip, np.random.randint(WINDOW - len(clip) + 1))
        window = window + np.random.standard_normal(WINDOW).astype(np.float32) * 10 ** np.random.uniform(-4, -2.5)
        window = window * 10 ** (np.random.uniform(-6, 0) / 20) / max(1e-6, float(np.abs(window).max()))
        return torch.from_numpy(window.astype(np.float32)), self.labels[index % len(self.clips)]


def held_out_windows(library) -> tuple[np.ndarray, list[str]]:
    """Every held-out recording once, 0.25 s into a window, peak-normalised: [n, samples], labels."""
    windows, labels = [], []
    for label in library.classes:
        for clip in library.clips(label):
            window = fit_window(library.load(clip), SAMPLE_RATE // 4)
            windows.append(window / max(1e-6, float(np.abs(window).max())) * 0.5)
            labels.append(label)
    return np.stack(windows).astype(np.float32), labels


def load_judge(path: str | Path = WEIGHTS) -> tuple[Judge, list[str]]:
    from edgeaudio.errors import UsageError
    from edgeaudio.training.loop import load_weights

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no judge weights at {path}", hint="train one: edgeaudio train tta --part judge -o DIR")
    classes = json.loads(path.with_suffix(".json").read_text())["classes"]
    judge = Judge(len(classes))
    load_weights(judge, path)
    return judge.eval(), classes


@torch.inference_mode()
def judge_audio(judge: Judge, audio: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Audio [n, samples] -> (class probabilities [n, classes], embeddings [n, 128])."""
    probs, embeddings = [], []
    for start in range(0, len(audio), batch):
        x = torch.from_numpy(np.stack([fit_window(a) for a in audio[start : start + batch]]))
        e = judge.embedding(x)
        probs.append(torch.softmax(judge.classify(e), dim=1).numpy())
        embeddings.append(e.numpy())
    return np.concatenate(probs), np.concatenate(embeddings)


def train_judge(run, options, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train on the library's training recordings, score on the held-out ones, and write the run's
    judge part (``parts/judge.safetensors`` + ``judge.json``: classes, accuracy, data);
    ``options``: those of ``edgeaudio train tta``. Returns the part's sidecar."""
    from edgeaudio.events.build_library import training_edition
    from edgeaudio.plugins.shared.event_library import library_packages, open_library
    from edgeaudio.training import cosine_adamw, fit, main_process_first, seed_everything
    from edgeaudio.training.loop import load_weights

    o = options
    with main_process_first():  # rank 0 builds the built-in library on first use
        train_library = open_library(o.library, held_out=False)
    test_library = open_library(o.library, held_out=True)
    classes = train_library.classes
    clips, labels = [], []
    for index, label in enumerate(classes):
        for clip in train_library.clips(label):
            clips.append(train_library.load(clip))
            labels.append(index)
    test_audio, test_labels = held_out_windows(test_library)
    log(f"judge: {len(clips)} training recordings, {len(test_audio)} held-out, {len(classes)} classes")
    seed_everything(o.seed)
    judge = Judge(len(classes))

    def loss_fn(net, batch):
        audio, target = batch
        return nn.functional.cross_entropy(net(audio), target, label_smoothing=0.1)

    def val_fn(net):
        probs, _ = judge_audio(net, test_audio)
        return accuracy(probs, test_labels, classes)

    batch_size, lr = 32, 2e-3
    config = run.config("judge", epochs=o.judge_epochs, batch_size=batch_size, lr=lr, weight_decay=1e-3, seed=o.seed,
                        best_metric="val_accuracy", best_mode="max", device="cpu")
    factory, on_epoch_end = cosine_adamw(lr, o.judge_epochs, floor=0.02, weight_decay=1e-3)
    result = fit(judge, RealWindows(clips, labels), loss_fn, config, val_fn=val_fn, optimizer_factory=factory,
                 on_epoch_end=on_epoch_end)  # fmt: skip
    load_weights(judge, result.last_checkpoint)
    judge.eval()
    if not run.main:
        return {}
    metrics = val_fn(judge)
    data = {"library": str(o.library or "builtin"), "library_edition": training_edition(o.library),
            "train_recordings": len(clips), "held_out_recordings": len(test_audio),
            "library_packages": library_packages(train_library.root)}
    sidecar = {**run.sidecar({"classes": classes}, result, data=data, metrics=metrics), "classes": classes}
    weights = run.part_weights("judge")
    run.write(judge, weights, sidecar)
    log(f"judge held-out accuracy {metrics['accuracy']:.3f}; wrote {weights}")
    return sidecar


def accuracy(probs: np.ndarray, labels: list[str], classes: list[str]) -> dict[str, float]:
    """Top-1 accuracy, and its mean over classes (the held-out split is unbalanced)."""
    predicted = [classes[i] for i in probs.argmax(axis=1)]
    hits = np.array([p == t for p, t in zip(predicted, labels)], float)
    per_class = [hits[[t == c for t in labels]].mean() for c in classes if c in labels]
    return {"accuracy": float(hits.mean()), "balanced_accuracy": float(np.mean(per_class))}
