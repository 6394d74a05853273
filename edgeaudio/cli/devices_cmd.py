"""``edgeaudio devices``: the compute-target and microphone-array profiles, and live devices."""

from __future__ import annotations

import dataclasses

import click

from edgeaudio.cli.output import emit_json, table


@click.command("devices")
@click.option("--live", is_flag=True, help="Also list the audio devices PortAudio sees and the profile each matches.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(live: bool, as_json: bool):
    """List device profiles (compute targets and microphone arrays)."""
    from edgeaudio.profiles import ArrayProfile, load_profiles, match_live_devices, this_host

    profiles = load_profiles()
    host, reason = this_host()
    matches = match_live_devices() if live else []
    if as_json:
        data = {
            "host": {"profile": host.name, "reason": reason},
            "profiles": [dict(dataclasses.asdict(p), kind="array" if isinstance(p, ArrayProfile) else "target") for p in profiles.values()],
        }
        if live:
            data["live"] = [{"device": d.get("name"), "inputs": d.get("max_input_channels"), "profile": p.name if p else None} for d, p in matches]
        emit_json(data)
        return
    targets = [p for p in profiles.values() if not isinstance(p, ArrayProfile)]
    arrays = [p for p in profiles.values() if isinstance(p, ArrayProfile)]
    click.echo(f"this host: {host.name} ({reason})\n")
    click.echo(table([(p.name, p.family, p.arch, p.accelerator, ",".join(p.backends), ",".join(p.precisions)) for p in targets],
                     ["target", "family", "arch", "accel", "backends", "precisions"]))
    click.echo()
    click.echo(table([(p.name, p.family, p.num_mics, p.native_rate, p.capture_channels, p.description) for p in arrays],
                     ["array", "family", "mics", "rate", "captured", "description"]))
    if live:
        click.echo()
        if not matches:
            click.echo("no audio input devices found by PortAudio")
        for device, profile in matches:
            click.echo(f"{device.get('name')} ({device.get('max_input_channels')} in) -> {profile.name if profile else 'no profile'}")
