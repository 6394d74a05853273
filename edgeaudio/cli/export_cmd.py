"""``edgeaudio export TASK --target PROFILE``: build a checked bundle for a device profile."""

from __future__ import annotations

import click

from edgeaudio.cli.output import emit_json, note


@click.command("export")
@click.argument("task")
@click.option("--model", help="Another model of the task family, e.g. a published one (`edgeaudio plugins` lists each task's models).")
@click.option("--target", default="x86-cpu", show_default=True, help="Compute-target profile or family (jetson, x86-cpu, rpi5, ...).")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp32", "fp16", "int8"]), help="Precisions to build (default: the profile's).")
@click.option("--backend", "backends", multiple=True, help="Export targets to build (default: the profile's backends).")
@click.option("--checkpoint", type=click.Path(exists=True), help="Your own weights: the folder `edgeaudio train -o` wrote, or a .safetensors file (default: the task's shipped ones).")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Bundle directory (default: bundles/TASK-TARGET).")
@click.option("--archive", is_flag=True, help="Also write the single-file .eab archive.")
@click.option("--device", "array", help="For tasks trained per microphone array: the array whose model to export.")
@click.option("--sign", "sign", type=click.Path(dir_okay=False), metavar="KEY",
              help="Sign the bundle with this private key (`edgeaudio keygen NAME` writes NAME.key).")
@click.option("--calibration", type=click.Path(exists=True), metavar="DIR",
              help="Calibrate INT8 on your own data, in the task's format (see its README).")
@click.option("--validation", type=click.Path(exists=True), metavar="DIR",
              help="Judge INT8 on your own data, in the task's format (see its README).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def command(task, model, target, precisions, backends, checkpoint, output, archive, array, sign, calibration, validation, as_json):
    """Export TASK to a bundle for a target profile, with parity and accuracy checks."""
    from edgeaudio.api import export
    from edgeaudio.tasks import resolve_model

    task = resolve_model(task, model)
    result = export(task, target=target, precisions=precisions or None, backends=backends or None,
                    checkpoint=checkpoint, output=output, archive=archive, array=array, log=note, sign=sign,
                    calibration=calibration, validation=validation)
    if as_json:
        emit_json({"bundle": str(result.bundle_dir), "archive": str(result.archive) if result.archive else None, "manifest": result.manifest})
        return
    for message in result.notes:
        note(f"note: {message}")
    artifacts = sorted({f"{a['backend']}/{a['precision']}" for g in result.manifest["graphs"] for a in g["artifacts"]})
    click.echo(f"bundle: {result.bundle_dir} ({', '.join(artifacts)})")
    if result.archive:
        click.echo(f"archive: {result.archive}")
