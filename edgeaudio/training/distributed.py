"""Where a process sits in a torchrun data-parallel run, and what the ranks share.

Under ``torchrun`` every process runs the same script; these helpers join the process group (gloo on
CPU, nccl on CUDA), pick each process's device, and let rank 0 alone write files and print. In one
process they reduce to resolving the device.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from edgeaudio.errors import UsageError


@dataclass
class Processes:
    """Where this process sits in a (possibly single-process) data-parallel run."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """True on the process that should write files and print: rank 0, or the only process.

    Before ``fit`` has set up the process group this falls back to torchrun's ``RANK`` variable, so
    scripts can ask it at any point.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def say(message: str) -> None:
    """One line on stderr from the main process only (the others stay quiet), printed so that a
    progress bar on the terminal is not torn; in a file it is just the line."""
    if is_main_process():
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)


@contextmanager
def process_group(device: str = "auto") -> Iterator[torch.device]:
    """Join the torchrun process group when there is one (gloo on CPU, nccl on CUDA) for the
    block, and leave it afterwards, also on error; yields this process's device.

    ``fit`` joins on its own. A trainer that also prepares data or writes results around ``fit``
    wraps all of it, so that :func:`main_process_first` can hold the other ranks while rank 0
    writes. A group someone else set up is used as is and left to them; in one process this
    only resolves the device.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = _resolve_device(device, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    owns_group = world_size > 1 and not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    try:
        yield resolved
    finally:
        if owns_group:
            dist.destroy_process_group()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block on rank 0 first and on the other ranks once it is done there.

    For work whose result lands on disk, such as synthesizing a data set: rank 0 writes it while
    the others wait at a barrier, then they run the same block and find it written. Inside
    :func:`process_group`; without a group (one process) it just runs the block.
    """
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if distributed and not is_main_process():
        dist.barrier()
    yield
    if distributed and is_main_process():
        dist.barrier()


@contextmanager
def joined_processes(device: str) -> Iterator[Processes]:
    """:func:`process_group` for ``fit``: yields where this process sits in the run."""
    with process_group(device) as resolved:
        rank = dist.get_rank() if dist.is_initialized() else 0
        yield Processes(rank=rank, world_size=int(os.environ.get("WORLD_SIZE", "1")), device=resolved)


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise UsageError(
            f"device '{name}' was asked for but torch sees no CUDA GPU", hint="use device='auto' or 'cpu'"
        )
    if device.index is None:
        device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


def wrap_for_processes(model: nn.Module, procs: Processes) -> nn.Module:
    """The model in DistributedDataParallel when several processes train it, else as it is."""
    if procs.world_size == 1:
        return model
    device_ids = [procs.device.index] if procs.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def share_from_main(metrics: dict[str, float], procs: Processes) -> dict[str, float]:
    """Send rank 0's metrics to every rank as JSON bytes (broadcast_object_list would pickle)."""
    if procs.world_size == 1:
        return metrics
    payload = torch.tensor(list(json.dumps(metrics).encode()), dtype=torch.uint8, device=procs.device)
    size = torch.tensor([payload.numel()], dtype=torch.int64, device=procs.device)
    dist.broadcast(size, src=0)
    if not procs.main:
        payload = torch.empty(int(size.item()), dtype=torch.uint8, device=procs.device)
    dist.broadcast(payload, src=0)
    return json.loads(bytes(payload.cpu().tolist()).decode())
