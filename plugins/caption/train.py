"""``edgeaudio train caption``: compose captioned clips, train with the shared loop, ship weights.

The recipe: split the event library by recording (held-out recordings never reach training),
compose ``clips`` 10 s training clips from the training half (each event replayed at a random
speed and spectral tilt) and ``test_clips`` from the held-out
half, build the vocabulary from the training captions, compute the log-mel features once (the
front end has no weights, so recomputing them every epoch would only burn CPU), and train the
encoder and decoder under :func:`edgeaudio.training.fit` with teacher forcing, a fresh reference
caption drawn per clip and epoch, and SpecAugment-style masks. The best epoch by held-out CIDEr-D
is written into the run folder (:class:`edgeaudio.training.TrainingRun`) as ``weights.safetensors``
with a sidecar (command, data, config with the vocabulary and the event classes, metrics). Running
the same command again resumes; under torchrun every process trains its share.

``captions_csv`` trains on real captioned audio instead (Clotho or AudioCaps layout).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeaudio.errors import UsageError
from edgeaudio.plugins.caption.task import CaptionTrainOptions
from edgeaudio.plugins.shared.event_library import library_packages, open_library

SLICE = 250  # training clips composed at once


def train_caption(
    task, out_dir: str | Path, options: CaptionTrainOptions, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Train with ``options`` (those of ``edgeaudio train caption``) into the run folder
    ``out_dir`` (see :class:`edgeaudio.training.TrainingRun`); returns the run's result.
    ``threads``: torch threads (1 is fastest on a machine shared with other jobs).
    ``stem``: the encoder's stem, ``conv2d`` or ``conv1d`` (default: the task config's).
    ``workers``: processes composing the training clips (the same clips as one process makes).
    ``device``: where to train (``cpu``, ``cuda``, ``auto``); the clips are composed on the CPU.
    The tagging head learns the event classes the training captions name; with captions that name
    none, the model has no tagging head and reports no events. Under torchrun every process
    composes the same clips (they depend on the seed alone) and trains on its share; rank 0 alone
    scores and writes."""
    import torch

    from edgeaudio.events.build_library import training_edition
    from edgeaudio.plugins.caption.data import synthesize_set
    from edgeaudio.plugins.caption.tokenizer import Vocabulary
    from edgeaudio.training import TrainingRun, cosine_adamw, fit, load_weights, main_process_first, seed_everything

    o = options
    with TrainingRun(task, out_dir, o) as run:
        say = (log or run.say) if run.main else (lambda line: None)
        if o.captions_csv and not o.audio_dir:
            raise UsageError("--captions-csv needs --audio-dir (where the clips are)")
        if o.library and not Path(o.library).is_dir():
            raise UsageError(f"--library {o.library} is not a folder", hint="give an event library folder (one folder per class)")
        if o.threads:
            torch.set_num_threads(int(o.threads))
        if o.stem is not None:
            task.config["stem"] = o.stem
        frontend = _frontend(task)
        if o.captions_csv:
            train_set, test_set, data = _real_data(o.captions_csv, o.captions_format, o.audio_dir, o.test_clips, o.seed)
            features, captions = _features(frontend, train_set), [clip.captions for clip in train_set]
        else:
            say(f"composing {o.clips} training clips (augmented) and {o.test_clips} held-out clips from the event library")
            edition = training_edition(o.library)
            task.config["library_edition"] = edition  # None: the user's own library
            with main_process_first():  # rank 0 builds the built-in library on first use
                train_library = open_library(o.library, held_out=False)
            features, captions = _compose(train_library, o.clips, o.seed, frontend, o.workers, run.progress)
            test_set = synthesize_set(open_library(o.library, held_out=True), o.test_clips, o.seed + 1)
            data = {"library": str(o.library or "builtin"), "library_edition": edition, "train_clips": o.clips,
                    "test_clips": o.test_clips, "clip_seconds": 10.0,
                    "augment": "speed 0.8-1.25x, spectral tilt, SpecAugment masks",
                    "library_packages": library_packages(train_library.root)}  # fmt: skip
        vocab = Vocabulary.build(c for refs in captions for c in refs)
        tags = _named_tags(captions, task.config["tags"])
        if not tags:
            say("the training captions name none of the event classes: the model gets no tagging head and reports no events")
        task.config.update(vocab=vocab.words, seed=o.seed, tags=tags)
        seed_everything(o.seed)
        model = task.build_model()
        say(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, vocabulary {len(vocab)} words, "
            f"{len(tags)} event classes")
        test_features = _features(frontend, test_set)
        dataset = CaptionDataset(features, captions, vocab, task.config["max_tokens"], tags)

        def loss_fn(net, batch):
            feats, tokens, targets = batch
            logits, tag_logits = net(_spec_augment(feats), tokens[:, :-1])
            words = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), ignore_index=vocab.pad, label_smoothing=0.1
            )
            if tag_logits is None:
                return words, {"words": words.detach()}
            tagging = torch.nn.functional.binary_cross_entropy_with_logits(tag_logits, targets)
            return words + tagging, {"words": words.detach(), "tagging": tagging.detach()}

        def val_fn(net):
            return _scores(greedy_captions(net, test_features, vocab, task.config["max_tokens"]), test_set)

        config = run.config(epochs=o.epochs, batch_size=o.batch_size, lr=o.lr, weight_decay=0.01, seed=o.seed,
                            grad_clip=1.0, best_metric="val_cider_d", best_mode="max", device=o.device)
        factory, on_epoch_end = cosine_adamw(config.lr, o.epochs, floor=0.02, weight_decay=config.weight_decay, clipped=True)
        result = fit(model, dataset, loss_fn, config, val_fn=val_fn, optimizer_factory=factory, on_epoch_end=on_epoch_end)
        if not run.main:
            return run.finish(model, None)
        load_weights(model, result.best_checkpoint or result.last_checkpoint)
        model.eval()
        metrics = val_fn(model)
        say("held-out: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        return run.finish(model, run.sidecar(task.config, result, data=data, metrics=metrics))


def _named_tags(captions: list[list[str]], tags: list[str]) -> list[str]:
    """The event classes (of ``tags``, in that order) that at least one training caption names:
    a class no caption names would be a tagging head output that never saw a positive."""
    from edgeaudio.plugins.caption.data import EVENT_KEYWORDS
    from edgeaudio.plugins.caption.metrics import mentioned_classes

    named = set().union(*(mentioned_classes(c, EVENT_KEYWORDS) for refs in captions for c in refs))
    return [tag for tag in tags if tag in named]


def _compose(library, clips: int, seed: int, frontend, workers: int, progress: bool):
    """Log-mel features [clips, n_mels, frames] (float16) and reference captions of the training
    clips, composed a slice at a time (only the features stay in memory), by ``workers``
    processes. Clip i depends only on (seed, i), so any number of workers gives the same set."""
    import multiprocessing
    from contextlib import nullcontext

    import torch
    from tqdm import tqdm

    slices = [(first, min(SLICE, clips - first)) for first in range(0, clips, SLICE)]
    compose = partial(_compose_slice, library, seed, frontend)
    # fork where there is one: a spawned worker re-imports the caller's main module, which
    # loops forever in a script without an ``if __name__ == "__main__"`` guard
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = multiprocessing.get_context(method).Pool(workers, initializer=_one_thread) if workers > 1 else nullcontext()
    features, captions = [], []
    with pool, tqdm(total=clips, desc="composing", unit="clip", disable=None if progress else True) as bar:
        for part_features, part_captions in (pool.imap if workers > 1 else map)(compose, slices):
            features.append(part_features)
            captions += part_captions
            bar.update(len(part_captions))
    return torch.cat(features), captions


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _compose_slice(library, seed: int, frontend, piece: tuple[int, int]):
    from edgeaudio.plugins.caption.data import synthesize_set

    first, count = piece
    part = synthesize_set(library, count, seed, augment=True, first=first)
    return _features(frontend, part), [clip.captions for clip in part]


def _real_data(captions_csv, captions_format, audio_dir, test_clips, seed):
    from edgeaudio.plugins.caption.data import load_captioned_files, read_audiocaps, read_clotho

    readers = {"clotho": read_clotho, "audiocaps": read_audiocaps}
    if captions_format not in readers:
        raise UsageError(f"unknown captions format '{captions_format}'", hint="use clotho or audiocaps")
    files = readers[captions_format](captions_csv, audio_dir)
    order = np.random.default_rng(seed).permutation(len(files))
    clips = load_captioned_files([files[i] for i in order], seconds=10.0)
    n_test = min(test_clips, len(clips) // 5)
    return clips[n_test:], clips[:n_test], {"captions_csv": str(captions_csv), "format": captions_format, "clips": len(clips)}


def _frontend(task):
    """The graph's log-mel front end on its own (it has no weights, so it needs no vocabulary)."""
    from edgeaudio.plugins.caption.model import HOP, N_FFT, LogMel

    return LogMel(task.sample_rate, N_FFT, HOP, task.config["n_mels"])


def _features(frontend, clips, batch: int = 16):
    """Log-mel of every clip through the graph's own front end, as float16."""
    import torch

    parts = []
    with torch.inference_mode():
        for start in range(0, len(clips), batch):
            audio = torch.from_numpy(np.stack([c.audio for c in clips[start : start + batch]]))[:, None]
            parts.append(frontend(audio).to(torch.float16))
    return torch.cat(parts)


class CaptionDataset:
    """(features, tokens, tags) with one of the clip's reference captions drawn per access; the
    draw uses torch's global generator, which ``fit`` reseeds every epoch, so runs are
    reproducible. Tags are the classes the references mention (through the synonym table), so
    they come from captions alone and work for Clotho/AudioCaps as well as composed clips."""

    def __init__(self, features, captions: list[list[str]], vocab, max_tokens: int, tags: list[str]):
        import torch

        from edgeaudio.plugins.caption.data import EVENT_KEYWORDS
        from edgeaudio.plugins.caption.metrics import mentioned_classes

        self.features = features
        self.tokens, self.tags = [], []
        for refs in captions:
            padded = [ids + [vocab.pad] * (max_tokens - len(ids)) for ids in (vocab.encode(c, max_tokens) for c in refs)]
            self.tokens.append(torch.tensor(padded, dtype=torch.int64))
            said = set().union(*(mentioned_classes(c, EVENT_KEYWORDS) for c in refs))
            self.tags.append(torch.tensor([float(t in said) for t in tags]))

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int):
        import torch

        refs = self.tokens[index]
        return self.features[index].float(), refs[int(torch.randint(len(refs), ()))], self.tags[index]


def _spec_augment(feats):
    """Two time masks (up to 0.5 s) and two mel-band masks (up to 8 bands) per clip, filled with
    the clip's mean: the model must not rely on any one moment or band."""
    import torch

    batch, bands, frames = feats.shape
    out = feats.clone()
    mean = feats.mean(dim=(1, 2))
    for b in range(batch):
        for _ in range(2):
            width = int(torch.randint(0, 50, ()))
            start = int(torch.randint(0, max(1, frames - width), ()))
            out[b, :, start : start + width] = mean[b]
            height = int(torch.randint(0, 8, ()))
            low = int(torch.randint(0, max(1, bands - height), ()))
            out[b, low : low + height, :] = mean[b]
    return out


def greedy_captions(model, features, vocab, max_tokens: int, batch: int = 64) -> list[str]:
    """Greedy captions for precomputed features with the torch decoder step (same search as the
    runtime's), for validation during training."""
    import torch

    from edgeaudio.plugins.caption.search import greedy

    captions = []
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(features), batch):
            feats = features[start : start + batch].float().to(device)
            keys, values = model.decoder.memory_kv(model.encoder(feats))
            n = feats.shape[0]

            def step(tokens, position, cache, n=n, keys=keys, values=values):
                out = model.decoder.step(torch.from_numpy(tokens).to(device), torch.full((n, 1), position, device=device),
                                         keys, values, cache["k"], cache["v"])  # fmt: skip
                return out[0].cpu().numpy(), {"k": out[1], "v": out[2]}

            empty = torch.from_numpy(model.empty_cache(n)).to(device)
            for ids in greedy(step, {"k": empty, "v": empty}, n, vocab.bos, vocab.eos, max_tokens):
                text = vocab.decode(ids)
                captions.append(text[:1].upper() + text[1:] + "." if text else "")
    return captions


def _scores(captions: list[str], clips) -> dict[str, float]:
    from edgeaudio.plugins.caption.data import EVENT_KEYWORDS
    from edgeaudio.plugins.caption.metrics import caption_scores, event_scores

    scores = caption_scores(captions, [c.captions for c in clips])
    if all(c.labels for c in clips):
        scores.update(event_scores(captions, [c.labels for c in clips], EVENT_KEYWORDS))
    return scores
