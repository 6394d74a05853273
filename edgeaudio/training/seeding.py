"""Seeding: every random generator is reseeded at the start of each epoch from ``(seed, epoch, rank)``.

That is what makes a resumed run bit-identical to an uninterrupted one without storing generator
states: no state carries over an epoch boundary, so validation, callbacks or another rank drawing
random numbers cannot shift what the next epoch sees.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from edgeaudio.errors import UsageError
from edgeaudio.training.distributed import Processes

if TYPE_CHECKING:
    from edgeaudio.training.loop import TrainConfig


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) at once; call it before building a model."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class SeededBatches:
    """A shuffling loader whose order and worker seeds depend only on (seed, epoch, rank).

    The generator shuffles (the DistributedSampler does under torchrun, seeded with ``config.seed``)
    and draws the base seed from which torch seeds each worker's python, numpy and torch
    generators, so augmentation inside workers is reproducible too.
    """

    loader: DataLoader
    generator: torch.Generator
    seed: int
    rank: int

    @classmethod
    def create(cls, dataset, config: TrainConfig, procs: Processes, collate_fn) -> SeededBatches:
        sampler = None
        if procs.world_size > 1:
            sampler = DistributedSampler(dataset, procs.world_size, procs.rank, seed=config.seed)
        generator = torch.Generator()
        loader = DataLoader(
            dataset,
            batch_size=config.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=config.num_workers,
            collate_fn=collate_fn,
            generator=generator,
            pin_memory=procs.device.type == "cuda",
        )
        if len(loader) == 0:
            raise UsageError("the training dataset is empty")
        return cls(loader, generator, config.seed, procs.rank)

    def for_epoch(self, epoch: int) -> DataLoader:
        """Reseed the global generators and the loader for ``epoch``; nothing carries over epochs."""
        global_seed, loader_seed = np.random.SeedSequence([self.seed, epoch, self.rank]).generate_state(2)
        seed_everything(int(global_seed))
        self.generator.manual_seed(int(loader_seed))
        if isinstance(self.loader.sampler, DistributedSampler):
            self.loader.sampler.set_epoch(epoch)
        return self.loader
