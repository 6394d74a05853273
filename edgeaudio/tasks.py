"""Task lookup over the plugins' ``register_tasks`` hook."""

from __future__ import annotations

from typing import Any, Mapping

from edgeaudio import registry
from edgeaudio.errors import UsageError
from edgeaudio.task import Task


def task_classes() -> dict[str, type[Task]]:
    found: dict[str, type[Task]] = {}
    for cls in registry.collect("register_tasks"):
        if not cls.name:
            continue
        found.setdefault(cls.name, cls)
    return found


def get_task(name: str, config: Mapping[str, Any] | None = None) -> Task:
    classes = task_classes()
    if name not in classes:
        known = ", ".join(sorted(classes)) or "none"
        failed = [f.name for f in registry.failures()]
        hint = "see `edgeaudio plugins`" + (f"; plugins that failed to load: {', '.join(failed)}" if failed else "")
        raise UsageError(f"unknown task '{name}' (installed tasks: {known})", hint=hint)
    return classes[name](config)
