"""Training the text-to-audio parts: the judge, the vocoder and the generator (text encoder + flow).

``edgeaudio train tta -o DIR --part judge|vocoder|generator|all``. Each part trains on its own
(checkpoints in ``DIR/checkpoints/<part>``, resumable, data parallel under torchrun) into
``DIR/parts/<part>.safetensors``, and the parts meet in ``DIR/weights.safetensors`` (the run
layout of :class:`edgeaudio.training.TrainingRun`) once the vocoder and the generator both exist. The vocoder learns mel -> audio from composed
clips of real recordings with spectral losses only; the generator learns the rectified flow from
noise to the normalised log-mel of composed clips, conditioned on one of their captions (or, one
time in ten, on the empty prompt, which classifier-free guidance needs), and the prompt's spectral
envelope (model.FlowNet) to match the clip's time-averaged log-mel.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgeaudio.errors import UsageError
from edgeaudio.plugins.tta.data import compose_set
from edgeaudio.plugins.tta.model import HOP, PATCH, LogMel
from edgeaudio.plugins.tta.task import TtaTrainOptions

SLICE = 250
VOCODER_FRAMES = 64  # 1 s crops
PROMPT_DROPOUT = 0.1


def train_tta(
    task, out_dir: str | Path, options: TtaTrainOptions, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Train ``options.part`` (``options``: those of ``edgeaudio train tta``) into the run folder
    ``out_dir`` (see :class:`edgeaudio.training.TrainingRun`): each part's weights go to
    ``parts/``, and ``weights.safetensors`` is assembled once the vocoder and the generator both
    exist (from this command or an earlier one into the same folder). Returns the run's result,
    with the parts written. Under torchrun every process trains its share of each part; rank 0
    alone scores and writes."""
    from edgeaudio.training import TrainingRun

    o = options
    with TrainingRun(task, out_dir, o) as run:
        say = (log or run.say) if run.main else (lambda line: None)
        if o.library and not Path(o.library).is_dir():
            raise UsageError(f"--library {o.library} is not a folder", hint="give an event library folder (one folder per class)")
        if o.init and o.init != "default" and not Path(o.init).is_file():
            raise UsageError(f"no weights to start from at {o.init}", hint="pass a .safetensors file, or 'default'")
        if o.threads:
            torch.set_num_threads(int(o.threads))
        if o.part in ("judge", "all"):
            from edgeaudio.plugins.tta.judge import train_judge

            train_judge(run, o, log=say)
        if o.part in ("vocoder", "all"):
            train_vocoder(run, task, o, say)
        if o.part in ("generator", "all"):
            train_generator(run, task, o, say)
        if not run.main:
            return run.finish(None, None)
        parts = {part: str(run.part_weights(part)) for part in ("judge", "vocoder", "generator")
                 if run.part_weights(part).is_file()}
        if not ("vocoder" in parts and "generator" in parts):
            missing = [part for part in ("vocoder", "generator") if part not in parts]
            say(f"no text-to-audio weights yet: train the {' and the '.join(missing)} into {run.root} "
                f"(--part {missing[0]})")
            return run.finish(None, None, parts=parts)
        net, sidecar = assemble(run, task)
        return run.finish(net, sidecar, parts=parts)


def normalizer(task) -> Callable[[torch.Tensor], torch.Tensor]:
    """Audio [B, samples] -> the generator's normalised log-mel [B, mels, frames]."""
    frontend = LogMel(task.sample_rate, task.config["n_mels"])
    mean, std = task.config["mel_mean"], task.config["mel_std"]
    return lambda audio: (frontend(audio) - mean) / std


# -- vocoder --------------------------------------------------------------------------------------------


class AudioCrops(torch.utils.data.Dataset):
    """Random 1 s crops of composed clips, ``repeats`` per clip per epoch."""

    def __init__(self, audio: np.ndarray, samples: int, repeats: int = 4):
        self.audio, self.samples, self.repeats = audio, samples, repeats

    def __len__(self) -> int:
        return len(self.audio) * self.repeats

    def __getitem__(self, index: int):
        clip = self.audio[index % len(self.audio)]
        start = np.random.randint(len(clip) - self.samples + 1)
        return torch.from_numpy(clip[start : start + self.samples].copy())


def spectral_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT loss: spectral convergence + log-magnitude L1 at three resolutions."""
    total = output.new_zeros(())
    for n_fft in (512, 1024, 2048):
        window = torch.hann_window(n_fft, device=output.device)
        a = torch.stft(output, n_fft, n_fft // 4, window=window, return_complex=True).abs() + 1e-5
        b = torch.stft(target, n_fft, n_fft // 4, window=window, return_complex=True).abs() + 1e-5
        total = total + torch.linalg.norm(b - a) / torch.linalg.norm(b) + F.l1_loss(a.log(), b.log())
    return total / 3


def train_vocoder(run, task, options: TtaTrainOptions, log) -> dict[str, Any]:
    """Train (or fine-tune from ``options.init``) the vocoder and write the run's vocoder part;
    returns its sidecar."""
    from edgeaudio.plugins.shared.event_library import open_library
    from edgeaudio.training import cosine_adamw, fit, load_weights, main_process_first, seed_everything

    o = options
    clips, seed = o.vocoder_clips, o.seed
    log(f"vocoder: composing {clips} training clips and 40 held-out clips")
    with main_process_first():  # rank 0 builds the built-in library on first use
        train_library = open_library(o.library, held_out=False)
    train_audio = np.stack([c.audio for c in compose_set(train_library, clips, seed + 10)])
    test_audio = torch.from_numpy(np.stack([c.audio for c in compose_set(open_library(o.library, held_out=True), 40, seed + 11, augment=False)]))
    to_mel = normalizer(task)
    samples = VOCODER_FRAMES * HOP
    seed_everything(seed)
    net = task.build_model()
    start = _start_from(net, o.init, task.default_checkpoint(), "vocoder", log) if o.init else None
    vocoder = net.vocoder

    def loss_fn(net, audio):
        mel = to_mel(audio)[:, :, :VOCODER_FRAMES]
        output = net(mel)[:, 0]
        mel_l1 = F.l1_loss(to_mel(output)[:, :, :VOCODER_FRAMES], mel)
        spectral = spectral_loss(output, audio)
        return spectral + 0.5 * mel_l1, {"mel_l1": mel_l1.detach(), "spectral": spectral.detach()}

    @torch.no_grad()
    def val_fn(net):
        mel = to_mel(test_audio[:, :-16])  # whole frames: 312 of them
        frames = mel.shape[2] // PATCH * PATCH
        output = net(mel[:, :, :frames])[:, 0]
        return {"mel_l1": float(F.l1_loss(to_mel(output)[:, :, 4 : frames - 4], mel[:, :, 4 : frames - 4])),
                "spectral": float(spectral_loss(output, test_audio[:, : output.shape[1]]))}  # fmt: skip

    config = run.config("vocoder", epochs=o.vocoder_epochs, batch_size=16, lr=o.vocoder_lr, weight_decay=1e-4, seed=seed,
                        grad_clip=1.0, best_metric="val_mel_l1", best_mode="min", device="cpu")  # fmt: skip
    factory, on_epoch_end = cosine_adamw(config.lr, o.vocoder_epochs, floor=0.05)
    result = fit(vocoder, AudioCrops(train_audio, samples), loss_fn, config, val_fn=val_fn,
                 optimizer_factory=factory, on_epoch_end=on_epoch_end)  # fmt: skip
    if not run.main:
        return {}
    load_weights(vocoder, result.best_checkpoint or result.last_checkpoint)
    metrics = val_fn(vocoder.eval())
    log("vocoder held-out: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    data = {"train_clips": clips, "held_out_clips": 40, "clip_seed": seed + 10, "library": str(o.library or "builtin")}
    sidecar = run.sidecar({}, result, data=data, metrics=metrics, init=start)
    run.write(vocoder, run.part_weights("vocoder"), sidecar)
    return sidecar


# -- generator ------------------------------------------------------------------------------------------


class PromptedMels(torch.utils.data.Dataset):
    """(normalised mel [mels, frames], token ids [max_tokens]): a random one of the clip's captions,
    or the empty prompt with probability ``PROMPT_DROPOUT``."""

    def __init__(self, mels: torch.Tensor, prompts: list[list[str]], vocab, max_tokens: int):
        self.mels, self.prompts, self.vocab, self.max_tokens = mels, prompts, vocab, max_tokens

    def __len__(self) -> int:
        return len(self.mels)

    def __getitem__(self, index: int):
        prompts = self.prompts[index]
        text = "" if np.random.random() < PROMPT_DROPOUT else prompts[np.random.randint(len(prompts))]
        return self.mels[index], torch.tensor(pad_tokens(self.vocab.encode(text, self.max_tokens), self.max_tokens, self.vocab.pad))


def pad_tokens(ids: list[int], length: int, pad: int) -> list[int]:
    return ids + [pad] * (length - len(ids))


def flow_error(text_encoder, flow, mel: torch.Tensor, tokens: torch.Tensor, pad: int,
               generator=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(the velocity minus the straight path's, mel - noise, [B, mels, frames] at logit-normal
    flow times, more weight mid-path as in SD3; the prompt's text embeddings; their mask)."""
    noise = torch.randn(mel.shape, generator=generator)
    t = torch.sigmoid(torch.randn(mel.shape[0], generator=generator))
    x = (1 - t[:, None, None]) * noise + t[:, None, None] * mel
    mask = (tokens != pad).float()
    text = text_encoder(tokens)
    return flow(x, t, text, mask) - (mel - noise), text, mask


def flow_loss(text_encoder, flow, mel: torch.Tensor, tokens: torch.Tensor, pad: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(rectified-flow loss, the mean squared ``flow_error``; the prompt's spectral-envelope loss
    against the clip's time-averaged mel)."""
    error, text, mask = flow_error(text_encoder, flow, mel, tokens, pad, generator)
    return error.square().mean(), F.mse_loss(flow.envelope(text, mask), mel.mean(dim=2))


def _mel_corpus(task, library, count: int, seed: int, held_out: bool, log,
                single: float = 0.5) -> tuple[torch.Tensor, list[list[str]], list[list[str]]]:  # fmt: skip
    from edgeaudio.plugins.shared.event_library import open_library

    lib = open_library(library, held_out=held_out)
    frontend = LogMel(task.sample_rate, task.config["n_mels"])
    mels, prompts, labels = [], [], []
    for first in range(0, count, SLICE):
        part = compose_set(lib, min(SLICE, count - first), seed, first=first, augment=not held_out, single=single)
        with torch.inference_mode():
            mel = frontend(torch.from_numpy(np.stack([c.audio for c in part])))
        mels.append(mel[:, :, : mel.shape[2] // PATCH * PATCH])
        prompts += [c.prompts for c in part]
        labels += [c.labels for c in part]
        log(f"  composed {first + len(part)}/{count} clips")
    return torch.cat(mels), prompts, labels


def train_generator(run, task, options: TtaTrainOptions, log) -> dict[str, Any]:
    """Train (or fine-tune from ``options.init``) the text encoder and flow network and write the
    run's generator part; returns its sidecar. With ``options.ema`` the weights kept are the moving
    average (decay per step), and the sidecar also records the held-out loss of the raw last weights."""
    from edgeaudio.events.build_library import training_edition
    from edgeaudio.plugins.shared.event_library import library_packages, open_library
    from edgeaudio.training import cosine_adamw, fit, load_weights, main_process_first, seed_everything

    o = options
    clips, seed, single = o.clips, o.seed, o.single
    log(f"generator: composing {clips} training clips (augmented, {single:.0%} with one class) and 100 held-out clips")
    with main_process_first():  # rank 0 builds the built-in library on first use
        open_library(o.library, held_out=False)
    mels, prompts, _ = _mel_corpus(task, o.library, clips, seed, False, log, single)
    test_mels, test_prompts, _ = _mel_corpus(task, o.library, 100, seed + 1, True, log)
    mean, std = task.config["mel_mean"], task.config["mel_std"]
    shipped = task.default_checkpoint()  # before the config may change to add the detail head
    task.config.update(seed=seed)
    if o.flow_detail is not None:
        task.config.update(flow_detail=int(o.flow_detail))
    mels, test_mels = (mels - mean) / std, (test_mels - mean) / std
    vocab = task.vocabulary
    seed_everything(seed)
    net = task.build_model()
    start = _start_from(net, o.init, shipped, "generator", log) if o.init else None
    if o.init and not run.part_weights("vocoder").is_file() and run.main:
        run.write(net.vocoder, run.part_weights("vocoder"), run.sidecar({}, {}, data={"taken_from": start}, init=start))
        log(f"vocoder: taken from {start['path']}")
    generator = torch.nn.ModuleDict({"text": net.text, "flow": net.flow})
    max_tokens, pad = task.config["max_tokens"], vocab.pad
    log(f"generator: {sum(p.numel() for p in generator.parameters()) / 1e6:.2f} M parameters")
    test_tokens = torch.tensor([pad_tokens(vocab.encode(p[0], max_tokens), max_tokens, pad) for p in test_prompts])

    def loss_fn(model, batch):
        mel, tokens = batch
        flow, envelope = flow_loss(model["text"], model["flow"], mel, tokens, pad)
        return flow + envelope, {"flow": flow.detach(), "envelope": envelope.detach()}

    @torch.no_grad()
    def val_fn(model):
        flow, envelope = flow_loss(model["text"], model["flow"], test_mels, test_tokens, pad, torch.Generator().manual_seed(0))
        return {"flow_loss": float(flow), "envelope_loss": float(envelope)}

    config = run.config("generator", epochs=o.epochs, batch_size=o.batch_size, lr=o.lr, weight_decay=0.01, seed=seed,
                        grad_clip=1.0, best_metric="val_flow_loss", best_mode="min", device="cpu", ema=o.ema)  # fmt: skip
    factory, on_epoch_end = cosine_adamw(o.lr, o.epochs, floor=0.05)
    result = fit(generator, PromptedMels(mels, prompts, vocab, max_tokens), loss_fn, config, val_fn=val_fn,
                 optimizer_factory=factory, on_epoch_end=on_epoch_end)  # fmt: skip
    if not run.main:
        return {}
    load_weights(generator, result.last_checkpoint)
    metrics = val_fn(generator.eval())
    raw = None
    if result.ema_checkpoint is not None:
        raw = metrics
        load_weights(generator, result.ema_checkpoint)
        metrics = val_fn(generator)
        log(f"generator: keeping the weight average (held-out flow loss {metrics['flow_loss']:.4f}; "
            f"raw last weights {raw['flow_loss']:.4f})")  # fmt: skip
    data = {"train_clips": clips, "held_out_clips": 100, "single_class_share": single,
            "library": str(o.library or "builtin"), "library_edition": training_edition(o.library),
            "library_packages": library_packages(open_library(o.library, held_out=False).root)}  # fmt: skip
    details = {"ema": o.ema, "held_out_raw_weights": raw} if raw is not None else {}
    sidecar = run.sidecar({"seed": seed, "flow_detail": task.config.get("flow_detail", 0)}, result, data=data,
                          metrics=metrics, details=details, init=start)
    run.write(generator, run.part_weights("generator"), sidecar)
    log(f"generator held-out flow loss {metrics['flow_loss']:.4f}")
    return sidecar


def _start_from(net, init: str, shipped: str | None, part: str, log) -> dict[str, str]:
    """Load a whole text-to-audio checkpoint (``default``: ``shipped``) into ``net`` to fine-tune
    ``part`` of it; returns its path and sha256 for the sidecar. A checkpoint without the flow's
    detail head leaves it at its zero initialisation, so the starting output is the checkpoint's."""
    from safetensors import safe_open

    from edgeaudio.training import load_init

    start = load_init(net, init, shipped, new=("flow.detail.",))
    log(f"{part}: initialised from {start['path']}")
    with safe_open(start["path"], "pt") as weights:
        names = set(weights.keys())
    if net.flow.detail is not None and "flow.detail.0.weight" not in names:
        log(f"{part}: the checkpoint has no flow detail head; it starts at zero, which leaves the output unchanged")
    return start


def assemble(run, task) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The text-to-audio model from the run's vocoder and generator parts, and its sidecar: the
    config (with the generator's seed and detail head), each part's metrics and training."""
    from edgeaudio.training import load_weights

    vocoder, generator = (json.loads(run.part_weights(p).with_suffix(".json").read_text()) for p in ("vocoder", "generator"))
    task.config.update(generator["config"])
    net = task.build_model()
    load_weights(torch.nn.ModuleDict({"text": net.text, "flow": net.flow}), run.part_weights("generator"))
    load_weights(net.vocoder, run.part_weights("vocoder"))
    parts = {"generator": generator, "vocoder": vocoder}
    metrics = {f"{name}_{key}": value for name, part in parts.items() for key, value in part["metrics"].items()}
    training = {name: part["training"]["model"] for name, part in parts.items() if "model" in part["training"]}
    details = {name: {key: part[key] for key in ("command", "data", "details", "init")} for name, part in parts.items()}
    return net, run.sidecar(task.config, training, data=generator["data"], metrics=metrics, details=details,
                            init=generator["init"])
