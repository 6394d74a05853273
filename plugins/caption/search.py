"""Greedy and beam search over a decoder-step function, shared by the runtime (any backend) and
the trainer's validation (torch), so a caption is produced the same way everywhere.

``step(tokens [B, 1] int64, position int, cache) -> (log_probs [B, vocab] float, cache)``; the
cache is a dict of arrays with the batch (hypothesis) on axis 1, which beam search reorders.
Ties are broken towards the lower token id and the earlier hypothesis (stable sorts), so equal
log-probabilities from two backends give equal captions.

``guide(words so far) -> [vocab] float``, optional: added to a hypothesis's log-probabilities
before each choice, so a caller can steer what a caption still has to say (the captioning task's
tag guidance lowers ``<eos>`` and raises the words of events not named yet).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

Step = Callable[[np.ndarray, int, dict], tuple[np.ndarray, dict]]
Guide = Callable[[list[int]], np.ndarray]


def _guided(log_probs: np.ndarray, histories: list[list[int]], guide: Guide | None) -> np.ndarray:
    if guide is None:
        return log_probs
    return log_probs.astype(np.float64) + np.stack([guide(history) for history in histories])


def greedy(
    step: Step, cache: dict, batch: int, bos: int, eos: int, max_tokens: int, guide: Guide | None = None
) -> list[list[int]]:
    """The most likely next word, ``batch`` sequences at once; each ends at its ``<eos>``."""
    tokens = np.full((batch, 1), bos, np.int64)
    out = [[] for _ in range(batch)]
    done = np.zeros(batch, bool)
    for position in range(max_tokens - 1):
        log_probs, cache = step(tokens, position, cache)
        tokens = np.argmax(_guided(log_probs, out, guide), axis=1).astype(np.int64)[:, None]
        for i in np.flatnonzero(~done):
            if tokens[i, 0] == eos:
                done[i] = True
            else:
                out[i].append(int(tokens[i, 0]))
        if done.all():
            break
    return out


def beam_search(
    step: Step, cache: dict, beam: int, bos: int, eos: int, max_tokens: int, length_penalty: float = 1.0,
    guide: Guide | None = None,
) -> list[int]:
    """Best sequence among ``beam`` hypotheses run as one batch (the caller repeats the memory
    ``beam`` times). Finished hypotheses are ranked by total log-prob / length ** penalty."""
    tokens = np.full((beam, 1), bos, np.int64)
    scores = np.full(beam, -np.inf)
    scores[0] = 0.0  # all hypotheses start identical: expand only the first
    history = [[] for _ in range(beam)]
    finished: list[tuple[float, list[int]]] = []
    for position in range(max_tokens - 1):
        log_probs, cache = step(tokens, position, cache)
        vocab = log_probs.shape[1]
        # (log-prob + guide) + score per hypothesis and word, summed in place: fewer numpy calls
        # per word, each of which costs more than its arithmetic beside a decoder step
        total = np.array(log_probs, dtype=np.float64)
        if guide is not None:
            total += np.array([guide(said) for said in history])
        total += scores[:, None]
        total = total.ravel()
        order = np.argsort(-total, kind="stable")[: 2 * beam]
        parents, words, alive = [], [], []
        for flat, value in zip(order.tolist(), total[order].tolist()):  # plain ints and floats: cheaper per item
            parent, word = divmod(flat, vocab)
            if not math.isfinite(value):
                break
            if word == eos:
                length = len(history[parent]) + 1
                finished.append((value / length**length_penalty, history[parent]))
            elif len(alive) < beam:
                parents.append(parent)
                words.append(word)
                alive.append(value)
        if len(finished) >= beam or not alive:
            break
        while len(alive) < beam:  # keep the batch shape fixed: pad with dead copies
            parents.append(parents[0])
            words.append(words[0])
            alive.append(-np.inf)
        if parents != list(range(beam)):  # every hypothesis kept its own row: nothing to reorder
            # np.take keeps the rows C-contiguous (indexing axis 1 does not), as a backend reads
            # them in place: ONNX Runtime and OpenVINO copy a strided input first, in their call
            index = np.asarray(parents)
            cache = {name: np.take(value, index, axis=1) for name, value in cache.items()}
        history = [history[p] + [w] for p, w in zip(parents, words)]
        tokens = np.asarray(words, np.int64)[:, None]
        scores = np.asarray(alive)
    else:
        finished += [(float(s) / max(1, len(h)) ** length_penalty, h) for s, h in zip(scores, history) if np.isfinite(s)]
    return max(finished, key=lambda item: item[0])[1] if finished else []
