"""An exponential moving average of a model's weights, updated after every optimizer step.

Generative models sampled from their raw weights change audibly from one checkpoint to the next
(the last steps' noise is in them); the average over the last ~1 / (1 - decay) steps is the usual
remedy (as in diffusion and flow-matching training).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """``shadow``: a copy of the model whose parameters follow
    ``shadow = decay * shadow + (1 - decay) * weights`` and whose buffers are copied as they are."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = copy.deepcopy(model).eval()
        self.shadow.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        shadow = list(self.shadow.parameters())
        current = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(shadow, current, 1.0 - self.decay)
        for kept, buffer in zip(self.shadow.buffers(), model.buffers()):
            kept.copy_(buffer)
