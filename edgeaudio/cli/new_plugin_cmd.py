"""``edgeaudio new-plugin NAME``: scaffold an installable task plugin.

The package is rendered from the templates in ``edgeaudio/templates/plugin`` (package data, named
``*.tmpl`` so nothing there is imported or collected as a test): a pyproject with the
``edgeaudio`` entry point, a working streaming task, tests that run ``edgeaudio.testing``, and a
README. ``${name}``-style placeholders are filled with ``string.Template``; a directory called
``__module__`` becomes the Python package name.
"""

from __future__ import annotations

import re
import string
from importlib import resources
from importlib.abc import Traversable
from importlib.metadata import version
from pathlib import Path

import click

from edgeaudio.cli.output import note
from edgeaudio.errors import UsageError

NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
TEMPLATE_SUFFIX = ".tmpl"
MODULE_PLACEHOLDER = "__module__"


def template_values(name: str) -> dict[str, str]:
    """What the templates' placeholders stand for, for the task ``name``."""
    major_minor = ".".join(version("edgeaudio").split(".")[:2])
    return {
        "name": name,
        "module": f"edgeaudio_{name}",
        "dist": f"edgeaudio-{name.replace('_', '-')}",
        "class_name": "".join(part.capitalize() for part in name.split("_")) + "Task",
        "edgeaudio_version": major_minor,
    }


def check_name(name: str) -> None:
    """NAME becomes a CLI task name, an entry point and part of a Python package name."""
    if not NAME.match(name):
        raise UsageError(
            f"'{name}' is not a usable plugin name",
            hint="use 1-32 lowercase letters, digits or '_', starting with a letter (e.g. 'keyword_spotter')",
        )
    from edgeaudio.tasks import task_classes

    taken = task_classes().get(name)
    if taken is not None:
        raise UsageError(
            f"a task named '{name}' is already installed ({taken.__module__})",
            hint="task names must be unique across plugins; pick another name",
        )


def scaffold(name: str, target: Path) -> list[Path]:
    """Render the templates into ``target`` (absent or empty) and return the files written."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"{target} already exists and is not an empty directory", hint="choose another --dir or remove it")
    values = template_values(name)
    written = []
    for relative, template in _templates(resources.files("edgeaudio") / "templates" / "plugin"):
        path = target / relative.replace(MODULE_PLACEHOLDER, values["module"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(string.Template(template.read_text(encoding="utf-8")).substitute(values), encoding="utf-8")
        written.append(path)
    return written


def _templates(root: Traversable, prefix: str = ""):
    """(relative output path, template) for every ``*.tmpl`` file under ``root``, sorted."""
    for entry in sorted(root.iterdir(), key=lambda item: item.name):
        if entry.is_dir():
            yield from _templates(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(TEMPLATE_SUFFIX):
            yield f"{prefix}{entry.name[: -len(TEMPLATE_SUFFIX)]}", entry


@click.command("new-plugin")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(path_type=Path),
              help="Directory to create the package in (default: ./edgeaudio-NAME); must not exist or be empty.")
def command(name: str, directory: Path | None):
    """Scaffold an installable task plugin NAME: entry point, working task, conformance tests, README."""
    check_name(name)
    target = directory or Path(template_values(name)["dist"])
    for path in scaffold(name, target):
        note(f"  wrote {path}")
    click.echo(f"created {target} (task '{name}')")
    click.echo("next:")
    click.echo(f"  pip install -e {target}")
    click.echo("  edgeaudio plugins")
    click.echo(f"  python -m pytest -q {target}")
