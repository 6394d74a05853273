"""``edgeaudio doctor``: what is installed and which backends and targets work here, and why not."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

import click

from edgeaudio import registry
from edgeaudio.cli.output import emit_json

PACKAGES = ("edgeaudio", "numpy", "torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt", "sounddevice", "soundfile", "soxr", "pluggy")


def _installed() -> dict[str, str | None]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _check(classes) -> list[dict]:
    rows = []
    for name, cls in sorted(classes.items()):
        try:
            ok, why = cls.available()
        except Exception as exc:
            ok, why = False, f"check failed: {type(exc).__name__}: {exc}"
        rows.append({"name": name, "ok": ok, "why": why})
    return rows


def _portaudio() -> dict:
    try:
        import sounddevice as sd

        inputs = [d["name"] for d in sd.query_devices() if d["max_input_channels"] > 0]
        return {"ok": True, "why": f"PortAudio {sd.get_portaudio_version()[1]}; {len(inputs)} input device(s)"}
    except Exception as exc:
        return {"ok": False, "why": f"{type(exc).__name__}: {exc} (install libportaudio2 and edgeaudio[mic])"}


def report() -> dict:
    from edgeaudio.backends.base import backends
    from edgeaudio.exporters.base import export_targets
    from edgeaudio.profiles import this_host
    from edgeaudio.tasks import conflicts, task_classes

    host, reason = this_host()
    return {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "host_profile": {"name": host.name, "reason": reason},
        "packages": _installed(),
        "backends": _check(backends()),
        "export_targets": _check(export_targets()),
        "tasks": sorted(task_classes()),
        "audio": _portaudio(),
        "plugin_failures": [{"name": f.name, "error": f.error} for f in registry.failures()],
        "task_conflicts": [{"task": c.task, "used": c.used, "ignored": list(c.ignored), "why": c.why} for c in conflicts()],
    }


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(as_json: bool):
    """Check this host: packages, backends, export targets, audio, plugin failures."""
    data = report()
    if as_json:
        emit_json(data)
        return
    mark = {True: "ok  ", False: "no  "}
    click.echo(f"python {data['python']} on {data['platform']}; host profile {data['host_profile']['name']} ({data['host_profile']['reason']})")
    click.echo("packages: " + ", ".join(f"{k} {v}" if v else f"{k} (missing)" for k, v in data["packages"].items()))
    for section in ("backends", "export_targets"):
        click.echo(f"{section.replace('_', ' ')}:")
        for row in data[section]:
            click.echo(f"  {mark[row['ok']]}{row['name']}: {row['why']}")
    click.echo(f"tasks: {', '.join(data['tasks']) or 'none'}")
    click.echo(f"audio: {mark[data['audio']['ok']]}{data['audio']['why']}")
    for failure in data["plugin_failures"]:
        click.echo(f"plugin FAILED {failure['name']}: {failure['error']}")
    for clash in data["task_conflicts"]:
        click.echo(f"task CONFLICT '{clash['task']}': from '{clash['used']}', not from {', '.join(clash['ignored']) or '-'} "
                   f"({clash['why']})")
