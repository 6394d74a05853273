"""``edgeaudio eval BUNDLE``: the task's own metrics for a bundle on one backend."""

from __future__ import annotations

import click

from edgeaudio.cli.output import emit_json, note


@click.command("eval")
@click.argument("bundle", type=click.Path(exists=True))
@click.option("--backend", default="auto", show_default=True)
@click.option("--precision", default="auto", show_default=True)
@click.option("--trust", multiple=True, type=click.Path(dir_okay=False), metavar="PUBKEY",
              help="Run only a bundle signed by this public key (repeatable; see also EDGEAUDIO_TRUST).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(bundle, backend, precision, trust, as_json):
    """Evaluate BUNDLE on the task's validation set; the set's content hash says which data."""
    from edgeaudio.api import evaluation, load

    session = load(bundle, backend=backend, precision=precision, trust=trust)
    note(f"backend: {session.reason}")
    report = evaluation(session)
    if as_json:
        emit_json({"backend": session.backend, "precision": session.precision, **report})
        return
    for name, value in report["metrics"].items():
        click.echo(f"{name}: {value:.4g}")
    click.echo(f"validation set: {report['dataset_items']} item(s), content sha256 {report['dataset_sha256'][:16]}")
