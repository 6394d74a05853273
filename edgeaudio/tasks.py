"""Task lookup over the plugins' ``register_tasks`` hook.

Two plugins may register a task of the same name. The choice is deterministic and reported
(``conflicts``, shown by ``edgeaudio plugins`` and ``doctor``): the built-in task wins, else the
plugin whose name sorts first, unless the user names the plugin to use in ``EDGEAUDIO_TASK_PLUGINS``
(``seld=my_plugin,caption=other``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from edgeaudio import registry
from edgeaudio.errors import UsageError
from edgeaudio.task import Task

CHOICE_ENV = "EDGEAUDIO_TASK_PLUGINS"


@dataclass(frozen=True)
class Conflict:
    """Task ``task`` is registered by several plugins: ``used`` provides it, ``ignored`` do not, ``why``."""

    task: str
    used: str
    ignored: tuple[str, ...]
    why: str


def _valid_task(item: Any) -> str | None:
    if not (isinstance(item, type) and issubclass(item, Task)):
        return "which is not a subclass of edgeaudio.task.Task"
    if not isinstance(item.name, str) or not item.name.strip() or item.name != item.name.strip():
        return f"whose name {item.name!r} is not a task name"
    return None


def _choices() -> dict[str, str]:
    pairs = (part.split("=", 1) for part in os.environ.get(CHOICE_ENV, "").split(",") if "=" in part)
    return {task.strip(): plugin.strip() for task, plugin in pairs}


def _resolve() -> tuple[dict[str, type[Task]], list[Conflict]]:
    providers: dict[str, dict[str, type[Task]]] = {}
    for plugin, cls in registry.collect_from("register_tasks", _valid_task):
        providers.setdefault(cls.name, {}).setdefault(plugin, cls)
    chosen, conflicts = {}, []
    wanted = _choices()
    for name, by_plugin in providers.items():
        plugins = sorted(by_plugin, key=lambda p: (not registry.is_builtin(p), p))
        if wanted.get(name) in by_plugin:
            used, why = wanted[name], f"chosen by {CHOICE_ENV}"
        elif registry.is_builtin(plugins[0]):
            used, why = plugins[0], f"the built-in task wins; set {CHOICE_ENV}={name}=PLUGIN to use another"
        else:
            used, why = plugins[0], f"the first plugin by name wins; set {CHOICE_ENV}={name}=PLUGIN to choose"
        if name in wanted and wanted[name] not in by_plugin:
            why = f"{CHOICE_ENV} names '{wanted[name]}', which does not provide it; " + why
        chosen[name] = by_plugin[used]
        if len(by_plugin) > 1 or name in wanted and wanted[name] != used:
            conflicts.append(Conflict(name, used, tuple(p for p in plugins if p != used), why))
    return chosen, conflicts


def task_classes() -> dict[str, type[Task]]:
    return _resolve()[0]


def conflicts() -> list[Conflict]:
    """Task names registered by more than one plugin (or chosen in vain), and how each was resolved."""
    return _resolve()[1]


def resolve_model(name: str, model: str | None) -> str:
    """The task that runs model ``model`` of task family ``name`` (``Task.models``): ``name``
    itself for None or ``default``."""
    if model is None or model == "default":
        return name
    classes = task_classes()
    if name not in classes:
        raise UsageError(f"--model {model} needs a task name, not '{name}'",
                         hint="a bundle holds one model already; leave --model out")
    models = dict(classes[name].models)
    if model not in models:
        known = ", ".join(["default", *sorted(models)])
        raise UsageError(f"task '{name}' has no model '{model}' (models: {known})",
                         hint=f"see `edgeaudio run {name} --help`")
    if models[model] not in classes:
        raise UsageError(f"model '{model}' of task '{name}' is task '{models[model]}', which is not installed",
                         hint="see `edgeaudio plugins` for plugins that failed to load")
    return models[model]


def get_task(name: str, config: Mapping[str, Any] | None = None) -> Task:
    classes = task_classes()
    if name not in classes:
        known = ", ".join(sorted(classes)) or "none"
        failed = [f.name for f in registry.failures()]
        hint = "see `edgeaudio plugins`" + (f"; plugins that failed to load: {', '.join(failed)}" if failed else "")
        raise UsageError(f"unknown task '{name}' (installed tasks: {known})", hint=hint)
    return classes[name](config)
