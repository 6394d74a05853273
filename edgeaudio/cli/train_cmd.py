"""``edgeaudio train TASK``: run the task's own trainer (options after the task go to it)."""

from __future__ import annotations

import os

import click

from edgeaudio.cli.output import emit_json


def _parse_extra(args: tuple[str, ...]) -> dict[str, object]:
    """``--key value`` / ``--flag`` pairs for the task trainer; values parsed as YAML scalars."""
    import yaml

    from edgeaudio.errors import UsageError

    options: dict[str, object] = {}
    items = list(args)
    while items:
        key = items.pop(0)
        if not key.startswith("--"):
            raise UsageError(f"unexpected argument '{key}'", hint="trainer options look like --name value")
        name = key[2:].replace("-", "_")
        if "=" in name:
            name, value = name.split("=", 1)
            options[name] = yaml.safe_load(value)
        elif items and not items[0].startswith("--"):
            options[name] = yaml.safe_load(items.pop(0))
        else:
            options[name] = True
    return options


@click.command("train", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("task")
@click.option("-o", "--output", default=None, help="Run directory (default: runs/TASK).")
@click.option("--json", "as_json", is_flag=True, help="Print the trainer's result as JSON.")
@click.pass_context
def command(ctx, task, output, as_json):
    """Train TASK with its own recipe; extra --options go to the task's trainer."""
    from edgeaudio.tasks import get_task

    options = _parse_extra(tuple(ctx.args))
    result = get_task(task).train(output or f"runs/{task}", **options)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    if as_json:
        emit_json(result)
    elif result is not None:
        click.echo(result)
