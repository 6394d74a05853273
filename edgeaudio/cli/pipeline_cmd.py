"""``edgeaudio run PIPELINE.yaml``: one capture fanned out to the stages of a pipeline spec.

Reached through ``edgeaudio run`` (a ``.yaml`` argument means a pipeline), not a command of its
own. The result stream goes to stdout (or ``--output``), choices and progress to stderr.
"""

from __future__ import annotations

import click

from edgeaudio.cli.output import note, recorded_array, table
from edgeaudio.errors import DeviceLost

SPEC_SUFFIXES = (".yaml", ".yml")


def is_pipeline_spec(argument: str | None) -> bool:
    return argument is not None and argument.lower().endswith(SPEC_SUFFIXES)


@click.command("run")
@click.argument("spec", metavar="PIPELINE.yaml")
@click.option("-i", "--input", "input_spec",
              help="Audio file, mic (the default), or a source a plugin brings (sim:seed=N,seconds=S).")
@click.option("--device", "array",
              help="Microphone array profile or family; default: the file's, else the spec's capture array.")
@click.option("--device-index", type=int, help="PortAudio device to capture from (see `edgeaudio devices --live`).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the result stream here instead of stdout.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), help="Stop after this much audio.")
@click.option("--realtime", is_flag=True, help="Play a file at the pace of a device, so the drop policies apply as live.")
@click.option("--stats", is_flag=True, help="Print each stage's latency, real-time factor and drops at the end.")
@click.option("--json", "as_json", is_flag=True, help='Print the summary as one JSON line {"summary": ...} at the end.')
@click.option("--backend", default="auto", show_default=True, help="For every stage that names none.")
@click.option("--precision", default="auto", show_default=True, help="For every stage that names none.")
@click.option("--chunk-ms", default=100.0, show_default=True, help="Chunk length for files and simulated input.")
@click.option("--force", is_flag=True, help="Run array models on audio from another array (their directions will be wrong).")
def command(spec, input_spec, array, device_index, output, seconds, realtime, stats, as_json, backend, precision, chunk_ms,
            force):  # fmt: skip
    """Run a pipeline: one capture (a file, a simulated array or a live array) fanned out to the
    spec's stages, each at its own pace. Results come as one stream of JSON lines
    {"stage", "time_s", "result"}; audio goes where the spec's sinks say."""
    from edgeaudio.api import pipeline
    from edgeaudio.live.sinks import to_json

    recorded = recorded_array(input_spec) if array is None else None
    pipe = pipeline(spec, array=array, recorded_array=recorded, backend=backend, precision=precision, force=force, log=note)
    for name, session in pipe.sessions.items():
        note(f"stage {name}: {session.reason}")
    source = pipe.open_source(input_spec, device_index=device_index, chunk_ms=chunk_ms, realtime=realtime, log=note)
    if source.realtime:
        note("running live; Ctrl-C stops")
    summary = pipe.run(source, seconds=seconds, output=output, log=note)
    if stats:
        for line in stats_lines(summary):
            note(line)
    if as_json:
        click.echo(to_json({"summary": summary}))
    if summary["error"]:
        raise DeviceLost(summary["error"], hint="results up to the loss were written; check the device and run again")


def stats_lines(summary: dict) -> list[str]:
    """The summary for people: the capture, then one row per stage."""
    capture = summary["capture"]
    rows = []
    for name, stage in summary["stages"].items():
        ms = stage["latency_ms"]
        latency = f"{ms['p50']:.1f} / {ms['p95']:.1f} / {ms['max']:.1f}" if ms else "-"
        unit = "window" if "every" in stage else "chunk"
        drops = f"{stage['drops']} {unit}(s), {stage['dropped_seconds']:.1f} s" if stage["drops"] else "0"
        rows.append([name, stage["task"], stage["drop"], stage["results"], f"{stage['rtf']:.4f}",
                     f"{stage['processing_rtf']:.4f}", latency, drops, f"{stage['waited_seconds']:.2f}",
                     "YES" if stage["fell_behind"] else "no"])  # fmt: skip
    headers = ["stage", "task", "policy", "results", "RTF model", "RTF all", "latency p50/p95/max ms", "dropped",
               "waited s", "fell behind"]  # fmt: skip
    return [
        f"input: {summary['source']}; ended: {summary['ended']}",
        f"audio {summary['audio_seconds']:.1f} s in {summary['wall_seconds']:.1f} s; CPU {summary['cpu_seconds']:.1f} s; "
        f"peak RSS {summary['peak_rss_mb']:.0f} MB",
        f"capture: dropped {capture['dropped_samples']} sample(s); input overflows {capture['input_overflows']}, "
        f"underflows {capture['input_underflows']}",
        *table(rows, headers).splitlines(),
        "fell behind real time: " + ("YES" if summary["fell_behind"] else "no"),
    ]
