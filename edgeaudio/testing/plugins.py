"""Registering plugins for a test: a task class checked before it is installed, or any plugin
object for the duration of a block."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from edgeaudio.hookspecs import hookimpl
from edgeaudio.task import Task


@contextmanager
def registered_plugin(plugin: Any, name: str) -> Iterator[Any]:
    """``plugin`` (a module or object with hook implementations) registered as ``name`` while the
    block runs, then unregistered. A plugin already registered under that name (an installed
    entry point, an enclosing block) is used as it is and left registered; another plugin under
    that name is an error.
    """
    from edgeaudio import registry

    existing = registry.get_plugin_manager().get_plugin(name)
    if existing is plugin:
        yield plugin
        return
    if existing is not None:
        raise AssertionError(f"plugin name '{name}' is already taken by {existing!r}")
    registry.register(plugin, name)
    try:
        yield plugin
    finally:
        registry.unregister(name)


@contextmanager
def _registered(task_ref: str | type[Task]) -> Iterator[None]:
    """Register a task class given directly (not installed) for the duration of one check."""
    from edgeaudio.tasks import task_classes

    if isinstance(task_ref, str):
        yield
        return
    existing = task_classes().get(task_ref.name)
    if existing is task_ref:
        yield
        return
    if existing is not None:
        raise AssertionError(f"task name '{task_ref.name}' is already taken by {existing.__module__}.{existing.__qualname__}")
    with registered_plugin(_InlinePlugin(task_ref), f"conformance:{task_ref.name}"):
        yield


class _InlinePlugin:
    """A one-task plugin object, as a test would register it."""

    def __init__(self, task_class: type[Task]):
        self.task_class = task_class

    @hookimpl
    def register_tasks(self, register):
        register(self.task_class)
