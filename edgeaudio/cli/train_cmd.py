"""``edgeaudio train TASK``: run the task's own trainer with the options it declares.

A task's trainer options are the fields of its ``train_options`` dataclass (see
:mod:`edgeaudio.options`), so which options exist depends on TASK. :class:`TrainCommand` reads TASK
from the command line before click parses it and adds that task's options to this one run: then
``edgeaudio train seld --help`` lists the trainer's options with their defaults, and a misspelled
option or a value of the wrong type is click's usage error before any training starts.
"""

from __future__ import annotations

import os
from typing import Any

import click

from edgeaudio.cli.output import emit_json, table
from edgeaudio.errors import EdgeAudioError

_TASK = "edgeaudio.train.task"  # ctx.meta keys (meta is shared along the context chain)
_OPTIONS = "edgeaudio.train.options"


class TrainCommand(click.Command):
    """``train`` with the named task's trainer options added for the run at hand.

    The options live in ``ctx.meta``, never in ``self.params``: the command object is shared by
    every invocation in a process (tests run many), and one task's options must not leak into the
    next run.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        name = self._task_name(ctx, args)
        if name is not None:
            from edgeaudio.options import click_options
            from edgeaudio.tasks import get_task

            task = get_task(name)  # an unknown task is its UsageError, naming the installed ones
            options = click_options(task.train_options) if task.train_options is not None else []
            own = super().get_params(ctx)
            taken = {p.name for p in own} | {opt for p in own for opt in p.opts + p.secondary_opts}
            clashes = [o.name for o in options if o.name in taken or taken & {*o.opts, *o.secondary_opts}]
            if clashes:
                raise EdgeAudioError(
                    f"task '{name}' declares trainer options that `edgeaudio train` uses itself: {', '.join(clashes)}",
                    hint="rename those fields of the task's train_options",
                )
            ctx.meta[_TASK], ctx.meta[_OPTIONS] = task, options
        return super().parse_args(ctx, args)

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        own = super().get_params(ctx)  # this command's parameters, then --help
        return own[: len(self.params)] + ctx.meta.get(_OPTIONS, []) + own[len(self.params) :]

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command's own options, then the trainer's under a heading of their own."""
        trainer = ctx.meta.get(_OPTIONS, [])
        sections = [("Options", [p for p in self.get_params(ctx) if isinstance(p, click.Option) and p not in trainer])]
        if trainer:
            sections.append((f"Options of the {ctx.meta[_TASK].name} trainer", trainer))
        for title, params in sections:
            records = [record for record in (p.get_help_record(ctx) for p in params) if record is not None]
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)

    def _task_name(self, ctx: click.Context, args: list[str]) -> str | None:
        """The first positional argument, skipping this command's own options and their values;
        None when there is none or an option not known yet comes first (click then reports it)."""
        options = [p for p in super().get_params(ctx) if isinstance(p, click.Option)]
        takes_value = {opt: not p.is_flag for p in options for opt in p.opts + p.secondary_opts}
        items = iter(args)
        for arg in items:
            if arg == "--":
                return next(items, None)
            if not arg.startswith("-") or arg == "-":
                return arg
            opt = arg.split("=", 1)[0]
            if opt in takes_value:
                if takes_value[opt] and "=" not in arg:
                    next(items, None)  # its value
            elif arg.startswith("--") or arg[:2] not in takes_value:  # not -oDIR, a short option with its value
                return None
        return None


@click.command("train", cls=TrainCommand)
@click.argument("task")
@click.option("-o", "--output", default=None, help="Run directory (default: runs/TASK).")
@click.option("--json", "as_json", is_flag=True, help="Print the trainer's result as JSON.")
@click.pass_context
def command(ctx: click.Context, task: str, output: str | None, as_json: bool, **values: Any) -> None:
    """Train TASK with its own recipe.

    The trainer's options depend on TASK: `edgeaudio train TASK --help` lists them with their defaults.
    """
    from edgeaudio.options import from_click

    trainer = ctx.meta[_TASK]
    kind = trainer.train_options
    result = trainer.train(output or f"runs/{task}", from_click(kind, values) if kind is not None else None)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    if as_json:
        emit_json(result)
    elif isinstance(result, dict) and "run" in result:
        click.echo(_summary(result))
    elif result is not None:
        emit_json(result)


def _summary(result: dict[str, Any]) -> str:
    """A run's result for people: where it went, epochs per trained part, the headline metrics,
    and the command that exports it (``--json`` gives the same as JSON)."""
    lines = [f"run:      {result['run']}"]
    lines.append(f"weights:  {result.get('weights') or 'none written by this command'}")
    for name, path in (result.get("parts") or {}).items():
        lines.append(f"part:     {name} {path}")
    epochs = result.get("epochs") or {}
    if epochs:
        lines.append("epochs:   " + ", ".join(str(n) if name == "model" else f"{name} {n}" for name, n in epochs.items()))
    metrics = result.get("metrics") or {}
    if metrics:
        lines += ["", table([(name, f"{value:.4g}") for name, value in metrics.items()], ["metric", "value"])]
    if result.get("weights"):
        lines += ["", f"export:   edgeaudio export {result['task']} --checkpoint {result['run']}"]
    return "\n".join(lines)
