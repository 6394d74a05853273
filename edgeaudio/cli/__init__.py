"""The ``edgeaudio`` command line: thin commands over the Python API, one module per group.

Every error prints one ``error:`` line and one ``hint:`` line, with exit code 2 for usage (a bad
option or value, an unknown task, input that does not fit the model) and 1 for runtime (a bundle
refused, a device missing or lost, a file that cannot be written), 130 when interrupted (Ctrl-C,
SIGTERM) before the work was done; tracebacks only with ``--debug``. A closed pipe on stdout
(``edgeaudio run ... | head -1``) ends the command quietly, as other Unix tools do (exit 1,
click's convention). Plugins add commands through the ``register_commands`` hook.
"""

from __future__ import annotations

import errno

import click

from edgeaudio.errors import EdgeAudioError

BUG_HINT = "this looks like a bug; rerun with --debug for the traceback and report it"


def _fail(ctx: click.Context, message: str, hint: str, code: int):
    click.echo(f"error: {message}", err=True)
    click.echo(f"hint: {hint}", err=True)
    ctx.exit(code)


def _usage_error(ctx: click.Context, exc: click.ClickException):
    where = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else ctx.command_path
    _fail(ctx, exc.format_message(), f"see `{where} --help`", exc.exit_code)


class EdgeAudioGroup(click.Group):
    """Turns every error into one line plus a hint instead of a traceback or click's usage block."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            _usage_error(ctx, exc)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BaseException as exc:  # --debug is known only once the group's callback has run
            self._report(ctx, exc, bool(ctx.obj and ctx.obj.get("debug")))
            raise

    def _report(self, ctx: click.Context, exc: BaseException, debug: bool) -> None:
        """Print ``exc`` as an error and a hint and exit; return to let the caller re-raise it."""
        if isinstance(exc, (click.exceptions.Exit, click.Abort, SystemExit, GeneratorExit)):
            return
        if isinstance(exc, click.ClickException):
            _usage_error(ctx, exc)
        if debug or (isinstance(exc, OSError) and exc.errno == errno.EPIPE):
            return  # a traceback; or a broken pipe, which click's main ends quietly
        if isinstance(exc, EdgeAudioError):
            default = "see `edgeaudio --help`" if exc.exit_code == 2 else "rerun with --debug for the details"
            _fail(ctx, str(exc), exc.hint or default, exc.exit_code)
        if isinstance(exc, KeyboardInterrupt):
            _fail(ctx, "interrupted", "what was in progress was discarded (no partial files); run it again", 130)
        if isinstance(exc, OSError):
            where = f": {exc.filename}" if exc.filename else ""
            _fail(ctx, f"{exc.strerror or exc}{where}", "check the path, its permissions and the free space", 1)
        if isinstance(exc, Exception):
            _fail(ctx, f"{type(exc).__name__}: {exc}", BUG_HINT, 1)


@click.group(cls=EdgeAudioGroup)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(package_name="edgeaudio")
@click.pass_context
def cli(ctx: click.Context, debug: bool):
    """edgeaudio: train, export, benchmark and run audio models on edge devices."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _attach_builtin_commands() -> None:
    from edgeaudio.cli import (bench_cmd, devices_cmd, doctor_cmd, eval_cmd, export_cmd, keygen_cmd, new_plugin_cmd,
                               plugins_cmd, run_cmd, train_cmd)

    for module in (plugins_cmd, devices_cmd, doctor_cmd, train_cmd, export_cmd, bench_cmd, run_cmd, eval_cmd, keygen_cmd,
                   new_plugin_cmd):
        cli.add_command(module.command)


def _attach_plugin_commands() -> None:
    """Let plugins add commands; a plugin whose hook fails is reported, not fatal."""
    from edgeaudio import registry

    for plugin_name, call in registry.each_plugin("register_commands"):
        try:
            call(cli=cli)
        except registry.PluginErrors as exc:
            registry.record_failure(plugin_name, f"register_commands: {registry.describe(exc)}")


_attach_builtin_commands()


def _terminate(signum, frame):
    """SIGTERM (a service manager, ``kill``) unwinds like Ctrl-C, so ``finally`` blocks remove
    staging folders and partial files; a live run stops between chunks and keeps its results."""
    raise KeyboardInterrupt


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    _attach_plugin_commands()
    cli(prog_name="edgeaudio")

