"""``edgeaudio keygen NAME``: an Ed25519 key pair for signing bundles (see ``edgeaudio.signing``)."""

from __future__ import annotations

import click

from edgeaudio.cli.output import note


@click.command("keygen")
@click.argument("name", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace NAME.key and NAME.pub if they exist.")
def command(name, force):
    """Write NAME.key (private, for `edgeaudio export --sign NAME.key`) and NAME.pub (public, for
    boards to trust: `--trust NAME.pub`, EDGEAUDIO_TRUST, or the trust folder)."""
    from edgeaudio.cache import config_root
    from edgeaudio.signing import TRUST_FOLDER, generate_keys

    private, public, kid = generate_keys(name, overwrite=force)
    click.echo(f"key {kid}: private {private} (keep it secret), public {public}")
    note(f"sign: edgeaudio export TASK --sign {private}; trust on a board: --trust {public}, "
         f"or copy it into {config_root() / TRUST_FOLDER}/")
