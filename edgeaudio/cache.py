"""Default bundles: a task name on the command line means its shipped weights exported for this
host, built once into the cache and reused (the key includes the weights' hash).

The default bundle is fp32 only: INT8 needs calibration data and the accuracy gate needs the
task's validation set, which a task may have to synthesize first; that belongs to a deliberate
``edgeaudio export``, not to the first ``edgeaudio run``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from edgeaudio.bundle import MANIFEST, sha256_file
from edgeaudio.errors import UsageError


def cache_root() -> Path:
    return Path(os.environ.get("EDGEAUDIO_CACHE", Path.home() / ".cache" / "edgeaudio"))


def default_bundle(task_name: str, log: Callable[[str], None] = print, array: str | None = None) -> Path:
    """The task's shipped model as an fp32 bundle for this host; ``array`` picks the weights
    trained for that microphone array (array tasks ship one set per array)."""
    from edgeaudio.exporters.pipeline import export_task, plan_export
    from edgeaudio.profiles import host_target
    from edgeaudio.tasks import get_task

    task = get_task(task_name, {"array": array} if array else None)
    checkpoint = task.default_checkpoint()
    if checkpoint is None and array:
        raise UsageError(
            f"task '{task_name}' ships no weights for array {array}",
            hint=f"train them (edgeaudio train {task_name} --array {array}), or run the default model with --force",
        )
    if checkpoint is None:
        raise UsageError(f"task '{task_name}' ships no default weights", hint=f"train it first: edgeaudio train {task_name}")
    profile, _ = host_target()
    key = f"{task_name}-{task.version}-{profile.name}-fp32-{sha256_file(checkpoint)[:12]}"
    target = cache_root() / "default-bundles" / key
    if (target / MANIFEST).is_file():
        return target
    log(f"exporting the shipped '{task_name}' model for {profile.name} at fp32 (first run only) -> {target}")
    plan, _ = plan_export(profile.name, precisions=["fp32"])
    export_task(task, plan, target, checkpoint=checkpoint, log=log)
    return target
