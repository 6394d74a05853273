"""``edgeaudio train bwe``: build the speech corpus, train with the shared loop, ship weights.

The recipe: random 1 s crops of the training voices at random levels, each made narrowband a
different way (:func:`edgeaudio.plugins.bwe.data.degrade`); the network runs exactly as it streams
(from zero state, causal, with its look-ahead), and the loss compares its output frames with the
wideband frames ``lookahead`` frames earlier:

- log-spectral distance of the STFT frames (what LSD measures, so the invented band gets the
  right level and shape),
- compressed complex spectrum error (|X|^0.3 with phase: the phase branch learns from it, and the
  original band stays put),
- multi-resolution log-magnitude error of the output waveform (at other frame sizes, which only
  consistent overlapping frames can satisfy).

The epoch with the best validation LSD is kept. Then the level of the invented band is set
(:func:`choose_extension_gain`, on the validation clips) and recorded in the config. The run
folder (:class:`edgeaudio.training.TrainingRun`) gets ``weights.safetensors`` with a sidecar:
command, config, data and the metrics on the held-out voices, with the soxr upsampling baseline's
beside them (``upsampling_*``); ``--ship`` copies both into the package as the default. Running
the same command again resumes; under torchrun every trainer process trains its share.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeaudio.errors import UsageError
from edgeaudio.plugins.bwe.data import (
    HELDOUT,
    TrainPairs,
    default_corpus,
    read_corpus,
    telephone_input,
    utterances,
)
from edgeaudio.plugins.bwe.task import BweTrainOptions

TEST_SECONDS, TEST_PER_VOICE = 4.0, 8
VAL_SECONDS, VAL_PER_VOICE, VAL_ITEMS = 3.0, 2, 8
MR_RESOLUTIONS = (256, 512, 1024)
EXTENSION_GAINS_DB = (0.0, -3.0, -6.0, -9.0, -12.0)


def train_bwe(task, out_dir: str, options: BweTrainOptions, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``options.epochs`` x ``options.items`` crops (``options``: those of ``edgeaudio train
    bwe``) into the run folder ``out_dir`` (see :class:`edgeaudio.training.TrainingRun`); return
    the run's result (and ship it when asked). Under torchrun rank 0 builds the corpus while the
    others wait, every rank trains on its share of each epoch's crops, and rank 0 alone chooses the
    band's level, scores and writes."""
    import torch

    from edgeaudio.training import TrainingRun, cosine_adamw, fit, load_weights, main_process_first

    o = options
    with TrainingRun(task, out_dir, o) as run:
        say = (log or run.say) if run.main else (lambda line: None)
        if o.threads:
            torch.set_num_threads(int(o.threads))
        if o.corpus and not (Path(o.corpus) / "SOURCES.json").is_file():
            raise UsageError(f"--corpus {o.corpus} is not a built speech corpus (no SOURCES.json)",
                             hint="build one: python -m edgeaudio.plugins.bwe.data --out DIR")
        with main_process_first():
            root = Path(o.corpus) if o.corpus else default_corpus(progress=run.progress)
        clips = read_corpus(root)
        train = [c for c in clips if c.split == "train"]
        validation = [(telephone_input(w), w) for _, w in utterances([c for c in clips if c.split == "val"],
                                                                       VAL_SECONDS, VAL_PER_VOICE)[:VAL_ITEMS]]
        if not train or not validation:
            raise UsageError(f"the corpus in {root} has {len(train)} training and {len(validation)} validation clips",
                             hint="a corpus needs both (every voice's every few clips go to validation)")
        model = type(task)({**task.config, "extension_gain_db": 0.0}).build_model()  # learn the true level
        say(f"training {sum(p.numel() for p in model.parameters()):,} parameters on {o.items} crops of {o.seconds:g} s "
            f"per epoch from {len(train)} clips")
        optimizer_factory, cosine_lr = cosine_adamw(o.lr, o.epochs, floor=0.05)  # decay to 5 % over the run
        config = run.config(epochs=o.epochs, batch_size=o.batch_size, lr=o.lr, seed=o.seed, grad_clip=1.0,
                            best_metric="val_lsd", best_mode="min", log_every=10)
        result = fit(model, TrainPairs(train, o.seconds, o.items), bwe_loss, config,
                     val_fn=lambda net: validation_metrics(net, validation),
                     optimizer_factory=optimizer_factory, on_epoch_end=cosine_lr)
        if not run.main:
            return run.finish(model, None)
        load_weights(model, result.best_checkpoint or result.last_checkpoint)
        gain, choice = choose_extension_gain(model, validation)
        task.config["extension_gain_db"] = gain
        say(f"the invented band's level: {gain:g} dB (best PESQ-WB on the validation clips)")
        test = [(voice, telephone_input(wide), wide) for voice, wide in utterances(
            [c for c in clips if c.split == "test"], TEST_SECONDS, TEST_PER_VOICE)]
        heldout = heldout_metrics(model, test)
        metrics = {**heldout["model"], **{f"upsampling_{k}": v for k, v in heldout["upsampling"].items()}}
        sidecar = run.sidecar({key: task.config[key] for key in task.default_config()}, result,
                              data=corpus_summary(root, clips), metrics=metrics,
                              details={"heldout": heldout, "extension_gain_choice": choice})
        say("held-out: " + "  ".join(f"{k} {v:.3f}" for k, v in heldout["model"].items())
            + f"  (soxr upsampling: LSD {heldout['upsampling']['lsd']:.3f})")
        done = run.finish(model, sidecar)
        if o.ship:
            ship_weights(run.weights)
        return done


def bwe_loss(model, batch):
    """Spectral LSD + compressed complex error on frames, multi-resolution error on the waveform.

    It calls ``offline``: the shared loop runs the loss inside the data-parallel wrapper, so under
    torchrun the gradients are averaged all the same.
    """
    import torch

    net = model
    narrow, wide = batch
    out, frames = net.offline(narrow)
    target = net.stft(wide, torch.zeros_like(wide[:, :, : net.hop]))[0]
    ahead = net.lookahead
    pred, target = frames[:, :, ahead:], target[:, :, : target.shape[2] - ahead]
    bins = net.bins
    power_pred = pred[:, :bins] ** 2 + pred[:, bins:] ** 2
    power_target = target[:, :bins] ** 2 + target[:, bins:] ** 2
    ref = power_target.mean(dim=(1, 2), keepdim=True) + 1e-10
    log_pred = torch.log10(power_pred / ref + 1e-5)
    log_target = torch.log10(power_target / ref + 1e-5)
    lsd = torch.sqrt(((log_pred - log_target) ** 2).mean(dim=1) + 1e-8).mean()
    complex_error = (_compressed(pred, power_pred, ref, bins) - _compressed(target, power_target, ref, bins)).pow(2).mean()
    delay = net.latency
    rms = wide.pow(2).mean(dim=(1, 2), keepdim=True).sqrt() + 1e-6
    waveform = _multires(out[:, 0, delay:] / rms[:, 0], wide[:, 0, : wide.shape[2] - delay] / rms[:, 0])
    loss = lsd + complex_error + 0.5 * waveform
    return loss, {"lsd": lsd.detach(), "complex": complex_error.detach(), "multires": waveform.detach()}


def _compressed(spec, power, ref, bins):
    """|X|^0.3 with X's phase, on level-normalised spectra: big bins matter, small ones still count."""
    import torch

    gain = (power / ref + 1e-8) ** 0.15 * torch.rsqrt(power + 1e-12 * ref)
    return torch.cat([spec[:, :bins] * gain, spec[:, bins:] * gain], dim=1)


def _multires(estimate, target):
    import torch

    total = 0.0
    for n_fft in MR_RESOLUTIONS:
        window = torch.hann_window(n_fft, device=estimate.device)
        spec = [torch.stft(x, n_fft, n_fft // 4, window=window, return_complex=True).abs() for x in (estimate, target)]
        total = total + (torch.log(spec[0] + 1e-4) - torch.log(spec[1] + 1e-4)).abs().mean()
    return total / len(MR_RESOLUTIONS)


def enhance(model, narrow: np.ndarray) -> np.ndarray:
    """The torch model on one clip from zero state, aligned with it (as ``BweTask.enhance``)."""
    import torch

    latency, hop = model.latency, model.hop
    padded = np.pad(narrow, (0, latency + (-(len(narrow) + latency)) % hop)).astype(np.float32)
    with torch.no_grad():
        out = model.offline(torch.from_numpy(padded)[None, None])[0][0, 0].numpy()
    return out[latency : latency + len(narrow)]


def choose_extension_gain(model, validation) -> tuple[float, dict[str, Any]]:
    """The gain (dB) on the invented band with the best PESQ-WB on the validation clips, among
    those that keep LSD at most half of the upsampling baseline's; leaves ``model`` at that gain.

    The network is trained to predict the band's true level, which is what LSD rewards; its fine
    structure is plausible rather than right, and PESQ-WB scores such a band best somewhat lower.
    """
    from edgeaudio.plugins.bwe import metrics
    from edgeaudio.plugins.bwe.model import Combine

    baseline = float(np.mean([metrics.lsd(wide, narrow) for narrow, wide in validation]))
    scores = {}
    for gain in EXTENSION_GAINS_DB:
        model.combine = Combine(gain)
        outputs = [(wide, enhance(model, narrow)) for narrow, wide in validation]
        scores[gain] = {"lsd": float(np.mean([metrics.lsd(w, e) for w, e in outputs])),
                        "pesq_wb": float(np.mean([metrics.pesq_wb(w, e) for w, e in outputs]))}
    allowed = [g for g in EXTENSION_GAINS_DB if scores[g]["lsd"] <= baseline / 2] or [0.0]
    best = max(allowed, key=lambda g: scores[g]["pesq_wb"])
    model.combine = Combine(best)
    return best, {"validation_upsampling_lsd": baseline, "by_gain_db": {str(g): s for g, s in scores.items()}, "chosen_db": best}


def validation_metrics(model, items) -> dict[str, float]:
    from edgeaudio.plugins.bwe import metrics

    scores = [(metrics.lsd(wide, est), metrics.lsd_extended(wide, est))
              for narrow, wide in items for est in [enhance(model, narrow)]]
    return {"lsd": float(np.mean([s[0] for s in scores])), "lsd_extended": float(np.mean([s[1] for s in scores]))}


def heldout_metrics(model, test) -> dict[str, Any]:
    """Mean metrics of the soxr upsampling baseline and of the model on the held-out voices."""
    from edgeaudio.plugins.bwe import metrics

    rows = {"upsampling": [], "model": []}
    for _, narrow, wide in test:
        rows["upsampling"].append(metrics.all_metrics(wide, narrow))
        rows["model"].append(metrics.all_metrics(wide, enhance(model, narrow)))
    means = {name: {k: round(float(np.mean([r[k] for r in items])), 4) for k in items[0]} for name, items in rows.items()}
    return {"items": len(test), "seconds_each": TEST_SECONDS, "voices": sorted({v for v, _, _ in test}), **means}


def corpus_summary(root: Path, clips) -> dict[str, Any]:
    manifest = json.loads((root / "SOURCES.json").read_text())
    packages = sorted({(c["package"], c["version"], c["licence"]) for c in manifest["clips"]})
    counts: dict[str, dict[str, int]] = {}
    for clip in clips:
        counts.setdefault(clip.split, {}).setdefault(clip.voice, 0)
        counts[clip.split][clip.voice] += 1
    return {
        "corpus": "python -m edgeaudio.plugins.bwe.data (built from Debian packages)",
        "packages": [{"package": p, "version": v, "licence": l} for p, v, l in packages],
        "heldout_voices": list(HELDOUT),
        "clips": counts,
        "hours": round(sum(c["seconds"] for c in manifest["clips"]) / 3600, 2),
        "left_out": manifest["dropped"],
    }


def ship_weights(weights: Path) -> Path:
    """Copy a run's weights and sidecar into the package as the shipped default."""
    from edgeaudio.plugins.bwe.task import WEIGHTS

    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, WEIGHTS)
    shutil.copyfile(weights.with_suffix(".json"), WEIGHTS.with_suffix(".json"))
    return WEIGHTS
