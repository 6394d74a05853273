"""Training support shared by every task: one seeded, resumable, multi-process training loop, and
one run folder (``TrainingRun``) that every trainer writes.

Needs torch, which ships in the ``train`` extra; importing this package without it says so.
"""

from edgeaudio.errors import require

require("torch", "train")

from edgeaudio.training.loop import (  # noqa: E402  (after the torch check on purpose)
    TrainConfig,
    TrainResult,
    fit,
    is_main_process,
    load_init,
    load_weights,
    main_process_first,
    process_group,
    save_weights,
    seed_everything,
)
from edgeaudio.training.run import TrainingRun  # noqa: E402
from edgeaudio.training.schedule import cosine_adamw  # noqa: E402

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingRun",
    "cosine_adamw",
    "fit",
    "is_main_process",
    "load_init",
    "load_weights",
    "main_process_first",
    "process_group",
    "save_weights",
    "seed_everything",
]
