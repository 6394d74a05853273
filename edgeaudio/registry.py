"""The plugin manager: loads entry points of the ``edgeaudio`` group and collects registrations.

Built-in backends, export targets, profiles and tasks are entry points of the same group as
third-party plugins, so ``EDGEAUDIO_LOAD_PLUGINS`` (a comma-separated allowlist of entry-point
names; empty means none) applies to all of them. A plugin that fails to import is recorded in
``failures()`` with its error and skipped; it never breaks the CLI or the other plugins.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from edgeaudio import hookspecs

ENTRY_POINT_GROUP = "edgeaudio"
ALLOWLIST_ENV = "EDGEAUDIO_LOAD_PLUGINS"


@dataclass(frozen=True)
class PluginFailure:
    name: str
    error: str


_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_failures: list[PluginFailure] = []
_collected: dict[str, list[Any]] = {}


def allowlist() -> set[str] | None:
    """Names allowed by ``EDGEAUDIO_LOAD_PLUGINS``; None when the variable is unset (load all)."""
    raw = os.environ.get(ALLOWLIST_ENV)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, loading entry points on first use (idempotent)."""
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager("edgeaudio")
            pm.add_hookspecs(hookspecs)
            _load_entry_points(pm)
            _pm = pm
        return _pm


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    allowed = allowlist()
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken plugin must not break the others
            _failures.append(PluginFailure(ep.name, f"{type(exc).__name__}: {exc}"))


def failures() -> list[PluginFailure]:
    """Plugins that failed to import or register, with their errors."""
    get_plugin_manager()
    return list(_failures)


def record_failure(name: str, error: str) -> None:
    """Record a plugin failure noticed outside loading (e.g. while it adds CLI commands)."""
    _failures.append(PluginFailure(name, error))


def collect(hook_name: str) -> list[Any]:
    """Call a ``register_*`` collection hook once and return what plugins registered, in order.

    A plugin whose hook implementation raises is recorded as a failure and its registrations
    from that call are dropped.
    """
    with _lock:
        if hook_name in _collected:
            return list(_collected[hook_name])
        items: list[Any] = []
        for plugin_name, call in each_plugin(hook_name):
            found: list[Any] = []
            try:
                call(register=found.append)
            except Exception as exc:
                _failures.append(PluginFailure(plugin_name, f"{hook_name}: {type(exc).__name__}: {exc}"))
                continue
            items.extend(found)
        _collected[hook_name] = items
        return list(items)


def each_plugin(hook_name: str) -> list[tuple[str, Any]]:
    """``(plugin name, caller)`` for every plugin implementing ``hook_name``, in registration
    order; each caller is pluggy's hook caller restricted to that one plugin, so one plugin's
    failure can be reported with its name without stopping the others."""
    pm = get_plugin_manager()
    implementers = [impl.plugin for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls())]
    everyone = pm.get_plugins()
    return [(pm.get_name(plugin) or repr(plugin),
             pm.subset_hook_caller(hook_name, remove_plugins=[p for p in everyone if p is not plugin]))
            for plugin in implementers]


def plugin_of(obj: Any) -> str | None:
    """Name of the plugin whose module defines ``obj`` (best effort, for reports)."""
    module = getattr(obj, "__module__", "")
    pm = get_plugin_manager()
    for name, plugin in pm.list_name_plugin():
        plugin_module = getattr(plugin, "__name__", type(plugin).__module__)
        if module == plugin_module or module.startswith(plugin_module + "."):
            return name
    return None


def register(plugin: Any, name: str) -> None:
    """Register an in-process plugin object or module (tests, notebooks) and reset caches."""
    with _lock:
        get_plugin_manager().register(plugin, name=name)
        _collected.clear()


def unregister(name: str) -> None:
    with _lock:
        pm = get_plugin_manager()
        plugin = pm.get_plugin(name)
        if plugin is not None:
            pm.unregister(plugin)
        _collected.clear()


def reset() -> None:
    """Forget everything loaded; the next call reloads entry points (tests, env changes)."""
    global _pm
    with _lock:
        _pm = None
        _failures.clear()
        _collected.clear()


def plugin_info() -> list[dict[str, Any]]:
    """Name, version, module and implemented hooks of every loaded plugin."""
    pm = get_plugin_manager()
    dists = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dists[ep.name] = (ep.dist.name if ep.dist else None, ep.dist.version if ep.dist else None, ep.value)
    info = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        dist, version, value = dists.get(name, (None, None, getattr(plugin, "__name__", repr(plugin))))
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        info.append({"name": name, "module": value, "distribution": dist, "version": version, "hooks": hooks})
    return info
