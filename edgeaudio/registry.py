"""The plugin manager: loads entry points of the ``edgeaudio`` group and collects registrations.

Built-in backends, export targets, profiles and tasks are entry points of the same group as
third-party plugins, so ``EDGEAUDIO_LOAD_PLUGINS`` (a comma-separated allowlist of entry-point
names; empty means none) applies to all of them. A plugin that fails to import (any exception,
``SystemExit`` included) is recorded in ``failures()`` with its error and skipped; so is a hook
implementation that raises, a registration of the wrong kind (``collect``'s ``valid``), and a
hook implementation whose name no hook spec has (a misspelling pluggy would otherwise ignore).
None of them breaks the CLI or the other plugins.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable

import pluggy

from edgeaudio import hookspecs
from edgeaudio.errors import did_you_mean

ENTRY_POINT_GROUP = "edgeaudio"
ALLOWLIST_ENV = "EDGEAUDIO_LOAD_PLUGINS"
BUILTIN_DISTRIBUTION = "edgeaudio"
# what a plugin may raise at import or in a hook and still be only its own failure: any Exception,
# and SystemExit (a plugin calling sys.exit must not end every command); Ctrl-C still stops
PluginErrors = (Exception, SystemExit)


@dataclass(frozen=True)
class PluginFailure:
    name: str
    error: str


_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_failures: list[PluginFailure] = []
_collected: dict[str, list[tuple[str, Any]]] = {}
_builtin: set[str] = set()


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
        except PluginErrors as exc:  # a broken plugin must not break the others
            record_failure(ep.name, describe(exc))
            continue
        if ep.dist is not None and ep.dist.name == BUILTIN_DISTRIBUTION:
            _builtin.add(ep.name)
        _check_hook_names(pm, plugin, ep.name)


def describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}): the plugin tried to end the program"
    return f"{type(exc).__name__}: {exc}"


def _check_hook_names(pm: pluggy.PluginManager, plugin: Any, name: str) -> None:
    """Report hook implementations of ``plugin`` that no hook spec names: pluggy keeps them
    without ever calling them, so a misspelt ``register_task`` would do nothing, silently."""
    known = [spec for spec in dir(hookspecs) if spec.startswith("register_")]
    for caller in pm.get_hookcallers(plugin) or []:
        if not caller.has_spec():
            close = did_you_mean(caller.name, known).strip()
            guess = f" ({close})" if close else f" (hooks: {', '.join(known)})"
            record_failure(name, f"implements unknown hook '{caller.name}'{guess}; it is never called")


def is_builtin(name: str) -> bool:
    """Whether plugin ``name`` was loaded from an entry point of edgeaudio itself."""
    get_plugin_manager()
    return name in _builtin


def failures() -> list[PluginFailure]:
    """Plugins that failed to import or register, with their errors."""
    get_plugin_manager()
    return list(_failures)


def record_failure(name: str, error: str) -> None:
    """Record a plugin failure (once: a hook called again after ``register`` fails the same way)."""
    failure = PluginFailure(name, error)
    if failure not in _failures:
        _failures.append(failure)


def collect(hook_name: str, valid: Callable[[Any], str | None] | None = None) -> list[Any]:
    """Call a ``register_*`` collection hook once and return what plugins registered, in order
    (see ``collect_from``)."""
    return [item for _, item in collect_from(hook_name, valid)]


def collect_from(hook_name: str, valid: Callable[[Any], str | None] | None = None) -> list[tuple[str, Any]]:
    """``(plugin name, registered item)`` for every registration through a ``register_*`` hook,
    in order; the hook is called once per process (until ``reset``/``register``).

    A plugin whose hook implementation raises is recorded as a failure and its registrations
    from that call are dropped. ``valid(item)`` says what is wrong with a registration (None: it
    is fine); such an item is dropped and recorded as the plugin's failure, instead of breaking
    every later command that reads the registry.
    """
    with _lock:
        if hook_name in _collected:
            return list(_collected[hook_name])
        items: list[tuple[str, Any]] = []
        for plugin_name, call in each_plugin(hook_name):
            found: list[Any] = []
            try:
                call(register=found.append)
            except PluginErrors as exc:
                record_failure(plugin_name, f"{hook_name}: {describe(exc)}")
                continue
            for item in found:
                problem = valid(item) if valid is not None else None
                if problem is not None:
                    record_failure(plugin_name, f"{hook_name}: registered {item!r}, {problem}; ignored")
                else:
                    items.append((plugin_name, item))
        _collected[hook_name] = items
        return list(items)


def subclass_check(base: type) -> Callable[[Any], str | None]:
    """A ``collect`` validator: the item must be a subclass of ``base`` with a non-empty ``name``."""

    def check(item: Any) -> str | None:
        if not (isinstance(item, type) and issubclass(item, base)):
            return f"which is not a subclass of {base.__module__}.{base.__qualname__}"
        return None if isinstance(getattr(item, "name", None), str) and item.name else "which has no name"

    return check


def instance_check(*kinds: type) -> Callable[[Any], str | None]:
    """A ``collect`` validator: the item must be an instance of one of ``kinds``."""
    names = " or ".join(f"{k.__module__}.{k.__qualname__}" for k in kinds)
    return lambda item: None if isinstance(item, kinds) else f"which is not a {names}"


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
        pm = get_plugin_manager()
        pm.register(plugin, name=name)
        _check_hook_names(pm, plugin, name)
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
        _builtin.clear()


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
