"""``edgeaudio plugins``: what is loaded, from where, implementing which hooks, what failed, and
which plugin provides a task that several register."""

from __future__ import annotations

import click

from edgeaudio import registry
from edgeaudio.cli.output import emit_json, table


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(as_json: bool):
    """List loaded plugins, plugins that failed to load, and task names several plugins register."""
    from edgeaudio.tasks import conflicts, task_classes

    models = {name: dict(cls.models) for name, cls in sorted(task_classes().items()) if cls.models}
    info = registry.plugin_info()
    clashes = [{"task": c.task, "used": c.used, "ignored": list(c.ignored), "why": c.why} for c in conflicts()]
    failures = [{"name": f.name, "error": f.error} for f in registry.failures()]
    allow = registry.allowlist()
    if as_json:
        emit_json({"plugins": info, "failed": failures, "task_conflicts": clashes, "task_models": models,
                   "allowlist": sorted(allow) if allow is not None else None})
        return
    if allow is not None:
        click.echo(f"{registry.ALLOWLIST_ENV} allows: {', '.join(sorted(allow)) or '(nothing)'}")
    rows = [(p["name"], p["version"] or "-", p["module"], ", ".join(p["hooks"])) for p in info]
    click.echo(table(rows, ["plugin", "version", "module", "hooks"]) if rows else "no plugins loaded")
    for name, variants in models.items():
        click.echo(f"task '{name}' models: default, " + ", ".join(f"{m} (task {t})" for m, t in sorted(variants.items()))
                   + f"; pick one with --model, e.g. edgeaudio run {name} --model {min(variants)}")
    for failure in failures:
        click.echo(f"FAILED {failure['name']}: {failure['error']}")
    for clash in clashes:
        click.echo(f"CONFLICT task '{clash['task']}': from '{clash['used']}', not from {', '.join(clash['ignored']) or '-'} "
                   f"({clash['why']})")
