"""``edgeaudio train enhance``: mix noisy speech on the fly, train with the shared loop, ship weights.

The recipe: fresh 4 s mixtures every epoch from the corpus's training split (or random crops of
a paired noisy/clean folder with ``--pairs``), a loss on the output waveform that the graph
actually produces (power-compressed complex spectra as in GTCRN, plus SI-SDR), AdamW with a
cosine learning-rate decay, under :func:`edgeaudio.training.fit` (seeded, checkpointed,
resumable, data parallel under torchrun). The result is the run folder
(:class:`edgeaudio.training.TrainingRun`): ``weights.safetensors`` with a sidecar that records the
command, data and the held-out metrics (overall, and per input-SNR bucket in its details).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeaudio.errors import UsageError
from edgeaudio.plugins.enhance.task import EnhanceTrainOptions

COMPRESSION = 0.3  # power-law compression of spectral magnitudes in the loss (GTCRN's)
SI_SDR_WEIGHT = 0.5  # per dB: the waveform term the acceptance metric judges, about as large as the spectral ones


def train_enhance(
    task, out_dir: str | Path, options: EnhanceTrainOptions, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Train the enhancer with ``options`` (those of ``edgeaudio train enhance``) into the run
    folder ``out_dir`` (see :class:`edgeaudio.training.TrainingRun`); returns the run's result.

    ``items``: mixtures per epoch. ``corpus``: a built corpus (default: the cache's, built on
    first use). ``pairs``: train on a paired noisy/clean folder instead. ``test_pairs``: the
    paired folder to score at the end (default: the corpus's held-out test set, or with
    ``pairs`` the task's shipped validation pairs). ``threads``: torch
    threads (1 leaves the other cores to the machine's other work). ``test_clips``: score only the
    first N held-out test clips. ``init``: weights to fine-tune from (a .safetensors, or
    ``default`` for the shipped ones). ``ship``: also copy the weights into the package as the default.
    Under torchrun rank 0 builds the corpus while the others wait, every rank trains on its share
    of each epoch's mixtures, and rank 0 alone scores and writes.
    """
    import torch

    from edgeaudio.plugins.enhance.build_corpus import default_corpus
    from edgeaudio.plugins.enhance.data import MixtureDataset, PairCrops, Pools, read_pairs
    from edgeaudio.plugins.enhance.model import parameter_count
    from edgeaudio.plugins.enhance.task import VALIDATION_DIR
    from edgeaudio.training import TrainingRun, load_init, main_process_first

    o = options
    with TrainingRun(task, out_dir, o) as run:
        say = (log or run.say) if run.main else (lambda line: None)
        torch.set_num_threads(int(o.threads))
        corpus_dir = Path(o.corpus) if o.corpus else default_corpus()
        for folder, flag in ((o.pairs, "--pairs"), (o.test_pairs, "--test-pairs")):
            if folder and not Path(folder).is_dir():
                raise UsageError(f"{flag} {folder} is not a folder", hint="give a paired folder with noisy/ and clean/")
        if o.pairs:
            dataset = PairCrops(read_pairs(o.pairs), o.items, o.seconds)
            data_info = {"source": str(o.pairs), "pairs": len(dataset.pairs)}
            test_dir = Path(o.test_pairs) if o.test_pairs else VALIDATION_DIR
        else:
            with main_process_first():
                _ensure_corpus(corpus_dir, explicit=o.corpus is not None, log=say)
            dataset = MixtureDataset(Pools.load(corpus_dir, "train"), o.items, o.seconds)
            data_info = _corpus_info(corpus_dir)
            test_dir = Path(o.test_pairs) if o.test_pairs else corpus_dir / "test"
        model = task.build_model()
        start = load_init(model, o.init, task.default_checkpoint()) if o.init else None
        if start:
            say(f"initialised from {start['path']}")
        say(f"training {parameter_count(model):,} parameters on {o.items} fresh {o.seconds:g} s mixtures per epoch "
            f"for {o.epochs} epochs")
        result = _fit(run, model, dataset, VALIDATION_DIR, o)
        if not run.main:
            return run.finish(model, None)
        say(f"scoring the held-out pairs in {test_dir} (SI-SDR, PESQ, STOI, DNSMOS)")
        heldout = heldout_metrics(model, test_dir, limit=o.test_clips, progress=run.progress)
        overall = heldout["overall"]
        data_info = {**data_info, "test_pairs": str(test_dir), "items_per_epoch": o.items, "seconds_per_item": o.seconds}
        sidecar = run.sidecar(task.config, result, data=data_info, metrics=overall, init=start,
                              details={"heldout": heldout, "parameters": parameter_count(model)})
        say(f"held-out: SI-SDR {overall['si_sdr']:.2f} dB ({overall['si_sdr_i']:+.2f}), PESQ {overall['pesq']:.2f}, "
            f"STOI {overall['stoi']:.3f}, DNSMOS OVRL {overall['dnsmos_ovrl']:.2f}")
        done = run.finish(model, sidecar)
        if o.ship:
            from edgeaudio.plugins.enhance.task import WEIGHTS_DIR

            WEIGHTS_DIR.mkdir(exist_ok=True)
            (WEIGHTS_DIR / "enhance.safetensors").write_bytes(run.weights.read_bytes())
            (WEIGHTS_DIR / "enhance.json").write_text(run.weights.with_suffix(".json").read_text())
            say(f"shipped as the default weights in {WEIGHTS_DIR}")
        return done


def _ensure_corpus(corpus: Path, explicit: bool, log) -> None:
    if (corpus / "CORPUS.json").is_file():
        return
    if explicit:
        raise UsageError(f"{corpus} is not a built corpus", hint="python -m edgeaudio.plugins.enhance.build_corpus --out DIR")
    from edgeaudio.plugins.enhance.build_corpus import build

    log(f"building the corpus into {corpus} (first run only)")
    build(corpus)


def _corpus_info(corpus: Path) -> dict[str, Any]:
    manifest = json.loads((corpus / "CORPUS.json").read_text())
    keys = ("split", "package", "licence", "utterances", "seconds")
    speech = {name: {k: v[k] for k in keys} for name, v in manifest["speech"].items()}
    return {
        "source": "python -m edgeaudio.plugins.enhance.build_corpus",
        "packages": manifest["packages"],
        "speech": speech,
        "noise_clips": {split: len(clips) for split, clips in manifest["noise"].items()},
        "noise_recordings_test": sorted({c["recording"] for c in manifest["noise"]["test"]}),
        "rooms": {split: rooms["count"] for split, rooms in manifest["rooms"].items()},
        "test": manifest["test"],
    }


def enhancement_loss(model, noisy, clean):
    """Compressed complex + magnitude spectral MSE (30 / 70, GTCRN's mix) minus SI-SDR.

    The graph's output lags its input by ``DELAY`` samples; the clean target is delayed to match,
    and both are analysed with the graph's own STFT.
    """
    import torch
    import torch.nn.functional as F

    from edgeaudio.plugins.enhance.model import DELAY, HOP

    whole = noisy.shape[-1] // HOP * HOP  # the graph takes whole hops
    noisy, clean = noisy[..., :whole], clean[..., :whole]
    net = getattr(model, "module", model)
    enhanced = model(noisy, *net.initial_state(noisy.shape[0]))[0]
    target = F.pad(clean, (DELAY, 0))[..., : clean.shape[-1]]
    est_re, est_im = net.analysis.spectrum(enhanced)
    ref_re, ref_im = net.analysis.spectrum(target)
    est_mag = torch.sqrt(est_re**2 + est_im**2 + 1e-8)
    ref_mag = torch.sqrt(ref_re**2 + ref_im**2 + 1e-8)
    est_c, ref_c = est_mag**COMPRESSION, ref_mag**COMPRESSION
    complex_term = F.mse_loss(est_c * est_re / est_mag, ref_c * ref_re / ref_mag) + F.mse_loss(
        est_c * est_im / est_mag, ref_c * ref_im / ref_mag
    )
    magnitude_term = F.mse_loss(est_c, ref_c)
    sdr = batch_si_sdr(enhanced[..., DELAY:], clean[..., : clean.shape[-1] - DELAY])
    loss = 30 * complex_term + 70 * magnitude_term - SI_SDR_WEIGHT * sdr.mean()
    return loss, {"si_sdr": sdr.mean().detach()}


def batch_si_sdr(estimate, reference):
    """SI-SDR in dB per clip of [batch, 1, samples] tensors (the torch twin of metrics.si_sdr)."""
    import torch

    estimate = estimate - estimate.mean(dim=-1, keepdim=True)
    reference = reference - reference.mean(dim=-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / ((reference**2).sum(-1, keepdim=True) + 1e-8)
    target = scale * reference
    return 10 * torch.log10(((target**2).sum(-1) + 1e-8) / (((estimate - target) ** 2).sum(-1) + 1e-8)).squeeze(-1)


def enhance_clip(model, audio: np.ndarray) -> np.ndarray:
    """Torch enhancement of one clip [samples], delay removed: the reference the backends match."""
    import torch

    from edgeaudio.plugins.enhance.model import DELAY, HOP

    padded = np.pad(audio, (0, DELAY + (-(len(audio) + DELAY)) % HOP)).astype(np.float32)
    with torch.no_grad():
        out = model.offline(torch.from_numpy(padded)[None, None])[0, 0].numpy()
    return out[DELAY : DELAY + len(audio)]


def heldout_metrics(model, folder: Path, limit: int | None = None, full: bool = True, progress: bool = True) -> dict:
    """Every metric on a paired folder (the corpus's held-out test set), overall and per bucket; the
    progress bar shows on a terminal only."""
    from tqdm import tqdm

    from edgeaudio.plugins.enhance.data import read_pairs
    from edgeaudio.plugins.enhance.metrics import score, summarize

    model.eval()
    rows = [score(enhance_clip(model, p.noisy), p.clean, p.noisy, full=full)
            for p in tqdm(read_pairs(folder, limit), desc="held-out", unit="clip", disable=None if progress else True, leave=False)]
    return summarize(rows)


def _fit(run, model, dataset, validation: Path, o: EnhanceTrainOptions):
    """Train with the shared loop (cosine decay); SI-SDR on the shipped validation pairs is logged
    per epoch.

    The best-epoch choice stays on the training loss: the validation pairs come from held-out
    voices and must not steer training.
    """
    from edgeaudio.plugins.enhance.data import read_pairs
    from edgeaudio.training import cosine_adamw, fit

    pairs = read_pairs(validation) if validation.is_dir() else []
    make_optimizer, cosine_decay = cosine_adamw(o.lr, o.epochs, floor=0.01)

    def loss_fn(net, batch):
        return enhancement_loss(net, *batch)

    def validate(net) -> dict[str, float]:
        from edgeaudio.plugins.enhance.metrics import si_sdr

        return {"si_sdr": float(np.mean([si_sdr(enhance_clip(net, p.noisy), p.clean) for p in pairs]))}

    config = run.config(epochs=o.epochs, batch_size=o.batch_size, lr=o.lr, seed=o.seed, grad_clip=5.0, log_every=10)
    result = fit(model, dataset, loss_fn, config, val_fn=validate if pairs else None,
                 optimizer_factory=make_optimizer, on_epoch_end=cosine_decay)
    model.eval()
    return result
