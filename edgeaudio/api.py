"""The Python API the CLI calls and users script: export, load, bench, evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from edgeaudio.runtime import Session, load
from edgeaudio.task import Task
from edgeaudio.tasks import get_task, task_classes

__all__ = ["export", "load", "bench", "evaluate", "Session"]


def export(
    task: str,
    target: str = "x86-cpu",
    precisions: Sequence[str] | None = None,
    backends: Sequence[str] | None = None,
    checkpoint: str | None = None,
    output: str | Path | None = None,
    archive: bool = False,
    config: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
):
    """Export a task to a checked bundle for a target profile (family names allowed).

    A ``checkpoint`` with a JSON sidecar (as every trainer writes) brings the config it was
    trained with (classes, array, sizes), under any ``config`` given here."""
    from edgeaudio.exporters.pipeline import export_task, plan_export

    plan, reason = plan_export(target, precisions, backends)
    log(f"target: {reason}")
    sidecar = Path(checkpoint).with_suffix(".json") if checkpoint else None
    if sidecar is not None and sidecar.is_file():
        trained = task_classes().get(task, Task).trained_config(json.loads(sidecar.read_text()))
        if trained:
            log(f"config: as {checkpoint} was trained ({sidecar.name})")
            config = {**trained, **(config or {})}
    task_obj = get_task(task, config)
    output = Path(output) if output else Path("bundles") / f"{task}-{plan.profile}"
    return export_task(task_obj, plan, output, checkpoint=checkpoint, archive=archive, log=log)


def bench(bundle: str | Path, **options):
    """Benchmark every backend x precision of a bundle side by side; see ``edgeaudio.bench``."""
    from edgeaudio.bench import run_bench

    return run_bench(bundle, **options)


def evaluate(bundle: str | Path, backend: str = "auto", precision: str = "auto", dataset: Any = None) -> dict[str, float]:
    """The task's metrics for a bundle on one backend (the task's validation set by default)."""
    session = load(bundle, backend=backend, precision=precision)
    data = dataset if dataset is not None else session.task.validation_set()
    return session.task.evaluate(session.runner, data)
