"""The sampling loop, in numpy, between the exported graphs: the same steps on every backend.

The noise comes from numpy's generator seeded by the user's seed, so a seed gives the same
starting point everywhere and backends differ only by their float arithmetic. Each Euler step of
the rectified flow runs the ``flow`` graph once on a batch of two (the prompt and the empty
prompt) and mixes the velocities with classifier-free guidance.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def flow_times(steps: int, shift: float = 1.0) -> np.ndarray:
    """``steps + 1`` flow times from 0 (noise) to 1 (data); ``shift`` > 1 spends more of the steps
    near the noise end, where a few-step sampler decides what the sound is (as SD3's shift)."""
    u = np.linspace(0.0, 1.0, steps + 1)
    return (u / (u + shift * (1.0 - u))).astype(np.float32)


def generate_mel(runner: Any, tokens: np.ndarray, pad: int, n_mels: int, frames: int, steps: int, guidance: float, seed: int,
                 shift: float = 1.0) -> np.ndarray:  # fmt: skip
    """tokens [2, L] (the prompt, then the empty prompt) -> normalised log-mel [1, n_mels, frames]."""
    mask = (tokens != pad).astype(np.float32)
    text = runner.graph("text_encoder").run({"tokens": tokens})["text"]
    flow = runner.graph("flow")
    guided = guidance != 1.0
    if not guided:  # plain conditional sampling needs the prompt only
        text, mask = text[:1], mask[:1]
    x = np.random.default_rng(seed).standard_normal((1, n_mels, frames)).astype(np.float32)
    times = flow_times(steps, shift)
    for start, end in zip(times[:-1], times[1:]):
        batch = np.repeat(x, len(text), axis=0)
        t = np.full(len(text), start, np.float32)
        velocity = flow.run({"mel": batch, "t": t, "text": text, "mask": mask})["velocity"]
        if guided:
            velocity = velocity[1:] + guidance * (velocity[:1] - velocity[1:])
        x = x + (end - start) * velocity.astype(np.float32)
    return x
