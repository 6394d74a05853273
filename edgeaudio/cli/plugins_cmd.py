"""``edgeaudio plugins``: what is loaded, from where, implementing which hooks, and what failed."""

from __future__ import annotations

import click

from edgeaudio import registry
from edgeaudio.cli.output import emit_json, table


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(as_json: bool):
    """List loaded plugins and plugins that failed to load."""
    info = registry.plugin_info()
    failures = [{"name": f.name, "error": f.error} for f in registry.failures()]
    allow = registry.allowlist()
    if as_json:
        emit_json({"plugins": info, "failed": failures, "allowlist": sorted(allow) if allow is not None else None})
        return
    if allow is not None:
        click.echo(f"{registry.ALLOWLIST_ENV} allows: {', '.join(sorted(allow)) or '(nothing)'}")
    rows = [(p["name"], p["version"] or "-", p["module"], ", ".join(p["hooks"])) for p in info]
    click.echo(table(rows, ["plugin", "version", "module", "hooks"]) if rows else "no plugins loaded")
    for failure in failures:
        click.echo(f"FAILED {failure['name']}: {failure['error']}")
