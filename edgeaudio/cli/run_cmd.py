"""``edgeaudio run TASK|BUNDLE --input FILE``: results as JSON lines, waveforms to ``--output``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeaudio.cli.output import note


def _resolve_bundle(name: str, backend: str) -> str:
    """A bundle path as given, or for a task name the cached export of its shipped weights."""
    if Path(name).exists():
        return name
    from edgeaudio.cache import default_bundle

    return str(default_bundle(name, log=note))


@click.command("run")
@click.argument("task_or_bundle")
@click.option("-i", "--input", "input_path", required=True, type=click.Path(dir_okay=False), help="Audio file to process.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write results here (JSON lines, or WAV for waveform tasks).")
@click.option("--backend", default="auto", show_default=True)
@click.option("--precision", default="auto", show_default=True)
@click.option("--stream/--offline", default=True, show_default=True, help="Process chunk by chunk (as live) or the whole clip at once.")
@click.option("--chunk-ms", default=100.0, show_default=True)
def command(task_or_bundle, input_path, output, backend, precision, stream, chunk_ms):
    """Run a task (its default bundle) or a bundle on an audio file."""
    from edgeaudio.audio import read_audio, write_audio
    from edgeaudio.runtime import load

    session = load(_resolve_bundle(task_or_bundle, backend), backend=backend, precision=precision)
    note(f"backend: {session.reason}")
    audio, rate, notes = read_audio(input_path, sample_rate=session.sample_rate)
    for message in notes:
        note(message)
    results = _stream(session, audio, chunk_ms) if stream else [session.process(audio, rate)]
    waveform = session.task.results_to_audio(results)
    if waveform is not None and output and output.endswith(".wav"):
        write_audio(output, waveform, session.sample_rate)
        note(f"wrote {output}")
        return
    lines = [json.dumps(item, default=float) for result in results for item in (result if isinstance(result, list) else [result])]
    if output:
        Path(output).write_text("\n".join(lines) + "\n")
        note(f"wrote {len(lines)} result line(s) to {output}")
    else:
        for line in lines:
            click.echo(line)


def _stream(session, audio, chunk_ms: float) -> list:
    stream = session.stream()
    chunk = max(1, int(session.sample_rate * chunk_ms / 1000))
    results = []
    for offset in range(0, audio.shape[1], chunk):
        results.extend(stream.accept(audio[:, offset : offset + chunk]))
    results.extend(stream.flush())
    note(f"real-time factor {stream.real_time_factor():.4f} on {audio.shape[1] / session.sample_rate:.1f} s")
    return results
