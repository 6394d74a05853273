"""``edgeaudio eval BUNDLE``: the task's own metrics for a bundle on one backend."""

from __future__ import annotations

import click

from edgeaudio.cli.output import emit_json, note


@click.command("eval")
@click.argument("bundle", type=click.Path(exists=True))
@click.option("--backend", default="auto", show_default=True)
@click.option("--precision", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(bundle, backend, precision, as_json):
    """Evaluate BUNDLE on the task's validation set."""
    from edgeaudio.api import evaluate, load

    session = load(bundle, backend=backend, precision=precision)
    note(f"backend: {session.reason}")
    metrics = evaluate(session)
    if as_json:
        emit_json({"backend": session.backend, "precision": session.precision, "metrics": metrics})
        return
    for name, value in metrics.items():
        click.echo(f"{name}: {value:.4g}")
