"""The ``edgeaudio`` command line: thin commands over the Python API, one module per group.

User errors print one line and a hint (exit 2 for usage, 1 for runtime); tracebacks only with
``--debug``. Plugins add commands through the ``register_commands`` hook.
"""

from __future__ import annotations

import click

from edgeaudio.errors import EdgeAudioError


class EdgeAudioGroup(click.Group):
    """Turns edgeaudio errors into one line plus a hint instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgeAudioError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            ctx.exit(exc.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            click.echo("hint: this looks like a bug; rerun with --debug for the traceback and report it", err=True)
            ctx.exit(1)


@click.group(cls=EdgeAudioGroup)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(package_name="edgeaudio")
@click.pass_context
def cli(ctx: click.Context, debug: bool):
    """edgeaudio: train, export, benchmark and run audio models on edge devices."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _attach_builtin_commands() -> None:
    from edgeaudio.cli import (bench_cmd, devices_cmd, doctor_cmd, eval_cmd, export_cmd, new_plugin_cmd, plugins_cmd,
                               run_cmd, train_cmd)

    for module in (plugins_cmd, devices_cmd, doctor_cmd, train_cmd, export_cmd, bench_cmd, run_cmd, eval_cmd, new_plugin_cmd):
        cli.add_command(module.command)


def _attach_plugin_commands() -> None:
    """Let plugins add commands; a plugin whose hook fails is reported, not fatal."""
    from edgeaudio import registry

    for plugin_name, call in registry.each_plugin("register_commands"):
        try:
            call(cli=cli)
        except Exception as exc:
            registry.record_failure(plugin_name, f"register_commands: {type(exc).__name__}: {exc}")


_attach_builtin_commands()


def main() -> None:
    _attach_plugin_commands()
    cli(prog_name="edgeaudio")

