"""Every hook edgeaudio calls, in one place. Plugin authors implement these with ``@hookimpl``.

A plugin is a module (or object) exposed through the ``edgeaudio`` entry-point group in its
package's ``pyproject.toml``::

    [project.entry-points.edgeaudio]
    my_task = "my_package.plugin"

Collection hooks receive a ``register`` callback and return nothing; each is called once, the
first time the registry that needs it is read. Implementations may accept fewer arguments than
the spec (pluggy), so hooks can grow new arguments without breaking plugins.
The built-in backends, export targets and profiles are plugins loaded through the same group.
"""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("edgeaudio")
hookimpl = pluggy.HookimplMarker("edgeaudio")


@hookspec
def register_tasks(register: Callable[[type], None]) -> None:
    """Register task families.

    Called: once, the first time a task is looked up (``edgeaudio.tasks.get_task`` and the CLI).
    Args:
        register: call ``register(TaskClass)`` with a subclass of ``edgeaudio.task.Task`` for each
            task the plugin provides (anything else is reported as the plugin's failure). A name
            several plugins register is reported and resolved by ``edgeaudio.tasks`` (the built-in
            task wins unless ``EDGEAUDIO_TASK_PLUGINS`` names another plugin).
    Returns: nothing. Not firstresult: every plugin's implementation runs.
    """


@hookspec
def register_export_targets(register: Callable[[type], None]) -> None:
    """Register export targets (the step that turns an ONNX graph into a backend artifact).

    Called: once, the first time ``edgeaudio export`` or ``edgeaudio doctor`` needs the targets.
    Args:
        register: call ``register(TargetClass)`` with a subclass of
            ``edgeaudio.exporters.base.ExportTarget``; ``TargetClass.name`` (e.g. ``"openvino"``)
            must be unique.
    Returns: nothing. Not firstresult.
    """


@hookspec
def register_backends(register: Callable[[type], None]) -> None:
    """Register runtime backends that execute bundle graphs.

    Called: once, the first time ``edgeaudio.load`` or ``edgeaudio doctor`` needs a backend.
    Args:
        register: call ``register(BackendClass)`` with a subclass of
            ``edgeaudio.backends.base.Backend``; ``BackendClass.name`` must be unique.
    Returns: nothing. Not firstresult.
    """


@hookspec
def register_profiles(register: Callable[[str], None]) -> None:
    """Register device profile YAML files (compute targets and microphone arrays).

    Called: once, the first time profiles are loaded (``edgeaudio devices``, ``--target``,
    ``--device``, ``--array``).
    Args:
        register: call ``register(path)`` with a YAML file or a directory of ``*.yaml`` files.
            Every file is validated; an invalid file is an error naming the file and the field.
    Returns: nothing. Not firstresult.
    """


@hookspec
def register_sinks(register: Callable[[object], None]) -> None:
    """Register result formats and extra sinks for ``edgeaudio run``.

    Called: once, the first time ``run`` builds its options for a task.
    Args:
        register: call ``register(edgeaudio.live.sinks.ResultFormat(...))`` for a ``--format NAME``
            choice, or ``register(edgeaudio.live.sinks.SinkOption(...))`` for an extra
            ``--NAME VALUE`` option; each applies to tasks whose ``result_kind`` it names.
    Returns: nothing. Not firstresult.
    """


@hookspec
def register_sources(register: Callable[[object], None]) -> None:
    """Register audio sources that ``run --input PREFIX:...`` opens (e.g. a simulated scene).

    Called: once, the first time an ``--input`` with a ``PREFIX:`` is opened.
    Args:
        register: call ``register(edgeaudio.live.sources.SourceKind(prefix, help, open))``;
            ``open(SourceRequest)`` returns an ``edgeaudio.live.sources.Source`` delivering the
            model's rate and channels.
    Returns: nothing. Not firstresult.
    """


@hookspec
def register_commands(cli) -> None:
    """Add commands to the ``edgeaudio`` command line.

    Called: once, when the CLI starts, after the built-in commands are attached.
    Args:
        cli: the top-level ``click.Group``; use ``@cli.command()`` or ``cli.add_command``.
            A plugin may also extend a built-in group, e.g. ``cli.commands["export"]``.
    Returns: nothing. Not firstresult.
    """
