"""The sampling loop, in numpy, between the exported graphs: the same steps on every backend.

The noise comes from numpy's generator seeded by the user's seed, so a seed gives the same
starting point everywhere and backends differ only by their float arithmetic. Each Euler step of
the rectified flow runs the ``flow`` graph once on one batch holding every candidate twice (with
the prompt and with the empty prompt) and mixes the velocities with classifier-free guidance.

With several candidates the sampler also scores them, so the runtime can keep the one that best
matches the prompt, by the generator's own judgement (no other model is consulted):
- envelope fit: how close the candidate's time-averaged log-mel is to the spectral envelope the
  generator's prompt head predicts for the prompt (the ``envelope`` graph);
- prompt consistency: along the second half of the sampling path, how much better the prompt's
  velocity than the empty prompt's explains the straight path from the candidate's noise to where
  it ended (a diffusion-classifier score, read off velocities the sampler computed anyway).
Each is standardised over the candidates and the two are added.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def flow_times(steps: int, shift: float = 1.0) -> np.ndarray:
    """``steps + 1`` flow times from 0 (noise) to 1 (data); ``shift`` > 1 spends more of the steps
    near the noise end, where a few-step sampler decides what the sound is (as SD3's shift)."""
    u = np.linspace(0.0, 1.0, steps + 1)
    return (u / (u + shift * (1.0 - u))).astype(np.float32)


def initial_noise(seed: int, candidates: int, n_mels: int, frames: int) -> np.ndarray:
    """[candidates, n_mels, frames]: candidate 0 starts from the seed's own noise (so a single
    candidate is the plain sampler), candidate j > 0 from the generator seeded by (seed, j)."""
    generators = [np.random.default_rng(seed)] + [np.random.default_rng([seed, j]) for j in range(1, candidates)]
    return np.stack([g.standard_normal((n_mels, frames)).astype(np.float32) for g in generators])


def generate_mel(runner: Any, tokens: np.ndarray, pad: int, n_mels: int, frames: int, steps: int, guidance: float, seed: int,
                 shift: float = 1.0, candidates: int = 1) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """tokens [2, L] (the prompt, then the empty prompt) -> (normalised log-mel [candidates,
    n_mels, frames], each candidate's score [candidates]; higher matches the prompt better, all
    zero for one candidate)."""
    mask = (tokens != pad).astype(np.float32)
    text = runner.graph("text_encoder").run({"tokens": tokens})["text"]
    flow = runner.graph("flow")
    guided = guidance != 1.0
    if not guided:  # plain conditional sampling needs the prompt only
        text, mask = text[:1], mask[:1]
    texts, masks = np.repeat(text, candidates, axis=0), np.repeat(mask, candidates, axis=0)
    start_noise = initial_noise(seed, candidates, n_mels, frames)
    x = start_noise
    late: list[tuple[np.ndarray, np.ndarray]] = []  # (prompt, empty prompt) velocities, second half
    times = flow_times(steps, shift)
    for step, (start, end) in enumerate(zip(times[:-1], times[1:])):
        batch = np.concatenate([x] * len(text))
        t = np.full(len(batch), start, np.float32)
        velocity = flow.run({"mel": batch, "t": t, "text": texts, "mask": masks})["velocity"].astype(np.float32)
        if guided:
            prompted, empty = velocity[:candidates], velocity[candidates:]
            if candidates > 1 and step >= steps // 2:
                late.append((prompted, empty))
            velocity = empty + guidance * (prompted - empty)
        x = x + (end - start) * velocity
    if candidates == 1:
        return x, np.zeros(1, np.float32)
    envelope = runner.graph("envelope").run({"text": text[:1], "mask": mask[:1]})["envelope"]
    score = standardised(-np.mean((x.mean(axis=2) - envelope) ** 2, axis=1))
    if late:
        path = x - start_noise
        consistency = sum(np.mean((e - path) ** 2, axis=(1, 2)) - np.mean((p - path) ** 2, axis=(1, 2)) for p, e in late)
        score = score + standardised(consistency)
    return x, score.astype(np.float32)


def standardised(values: np.ndarray) -> np.ndarray:
    """Zero mean, unit spread over the candidates (all zero when they are equal)."""
    spread = float(np.std(values))
    return (values - np.mean(values)) / spread if spread > 0 else np.zeros_like(values)
