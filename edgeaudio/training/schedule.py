"""AdamW with a per-epoch cosine learning-rate decay, as the task trainers use it.

``fit`` takes an optimizer factory and an epoch hook; this builds the pair. The hook sets the
rate for the next epoch on the optimizer itself, so it is saved with each checkpoint and a
resumed run keeps the schedule.
"""

from __future__ import annotations

import math
from typing import Callable

import torch


def cosine_adamw(
    lr: float, epochs: int, floor: float, weight_decay: float = 1e-4, clipped: bool = False
) -> tuple[Callable[[torch.nn.Module], torch.optim.Optimizer], Callable[[int, dict], None]]:
    """(optimizer_factory, on_epoch_end) for ``fit``.

    After epoch ``e`` the rate is ``lr * (floor + (1 - floor) * c)`` with
    ``c = (1 + cos(pi * e / epochs)) / 2``, decaying from ``lr`` to ``floor * lr``; with
    ``clipped`` it is ``lr * max(floor, c)`` instead (the cosine cut off at the floor).
    """
    built: list[torch.optim.Optimizer] = []

    def optimizer_factory(model: torch.nn.Module) -> torch.optim.Optimizer:
        built.append(torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay))
        return built[-1]

    def on_epoch_end(epoch: int, record: dict) -> None:
        c = 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        factor = max(floor, c) if clipped else floor + (1 - floor) * c
        for group in built[-1].param_groups:
            group["lr"] = lr * factor

    return optimizer_factory, on_epoch_end
