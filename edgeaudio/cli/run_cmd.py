"""``edgeaudio run TASK|BUNDLE``: a file, a simulated array or a live microphone array through a model.

Results go out as JSON lines (stdout, ``--output``, ``--udp``), waveforms to a WAV file or the
speaker. Choices and progress go to stderr, so stdout stays clean for results.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import click

from edgeaudio.cli.output import note
from edgeaudio.errors import DeviceLost, UsageError


def _resolve_bundle(name: str, array: str | None, input_spec: str | None, force: bool) -> str:
    """A bundle path as given, or for a task name the cached export of its shipped weights: for
    an array task, those for the array ``--device`` names or the input file declares."""
    if Path(name).exists():
        return name
    from edgeaudio.cache import default_bundle

    recorded = _input_array(name, array, input_spec)
    try:
        return str(default_bundle(name, log=note, array=recorded))
    except UsageError:
        if recorded is None or not force:
            raise
        note(f"no shipped '{name}' weights for {recorded}; running the default model anyway (--force)")
        return str(default_bundle(name, log=note))


def _input_array(task_name: str, array: str | None, input_spec: str | None) -> str | None:
    """The array profile the input comes from, for a task whose models are per array; else None."""
    from edgeaudio.tasks import get_task

    if "array" not in get_task(task_name).config:
        return None
    is_file = input_spec is not None and input_spec != "mic" and not input_spec.startswith("sim:")
    if array is not None:
        from edgeaudio.profiles import get_array

        return get_array(array, live_devices=[] if is_file else None)[0].name
    if is_file and Path(input_spec).is_file():
        from edgeaudio.audio.recording_array import declared_array

        return declared_array(input_spec)
    return None


@click.command("run")
@click.argument("task_or_bundle")
@click.argument("prompt", required=False)
@click.option("-i", "--input", "input_spec", help="Audio file, sim:seed=N,seconds=S[,library=PATH], or mic (the default).")
@click.option("--device", "array", help="Microphone array profile or family (e.g. respeaker); default: the task's array.")
@click.option("--device-index", type=int, help="PortAudio device to capture from (see `edgeaudio devices --live`).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write results here (JSON lines, or WAV for waveform tasks).")
@click.option("--udp", help="Send each result as a JSON datagram to host:port.")
@click.option("--speaker", is_flag=True, help="Play waveform results on the default output device (mic -> model -> speaker).")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True),
              help="Stop after this much audio; for text-to-audio, the length to generate.")
@click.option("--stats", is_flag=True, help="Print latency, real-time factor and drop counts at the end.")
@click.option("--json", "as_json", is_flag=True, help='Print the summary as one JSON line {"summary": ...} at the end.')
@click.option("--backend", default="auto", show_default=True)
@click.option("--precision", default="auto", show_default=True)
@click.option("--stream/--offline", default=True, show_default=True, help="Process chunk by chunk (as live) or a whole file at once.")
@click.option("--chunk-ms", default=100.0, show_default=True, help="Chunk length for files and simulated input.")
@click.option("--every", type=click.FloatRange(min=0, min_open=True),
              help="For tasks without a streaming graph (caption): one result per this many seconds [default: 5].")
@click.option("--steps", type=click.IntRange(min=1), help="Text-to-audio: sampling steps (default: the task's).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Text-to-audio: noise seed.")
@click.option("--guidance", type=float, help="Text-to-audio: classifier-free guidance scale (default: the task's).")
@click.option("--candidates", type=click.IntRange(min=1),
              help="Text-to-audio: sample this many clips and keep the one the generator ranks best (default: the task's).")
@click.option("--format", "fmt", type=click.Choice(["json", "dcase"]), default="json", show_default=True,
              help="Results as JSON lines, or (seld) DCASE CSV rows: frame,class,track,azimuth,elevation.")
@click.option("--plot", type=click.Path(dir_okay=False), help="seld: draw azimuth over time per class to this PNG.")
@click.option("--force", is_flag=True, help="Run an array model on audio from another array (its directions will be wrong).")
def command(
    task_or_bundle, prompt, input_spec, array, device_index, output, udp, speaker, seconds, stats, as_json, backend,
    precision, stream, chunk_ms, every, steps, seed, guidance, candidates, fmt, plot, force,
):  # fmt: skip
    """Run a task (its default bundle) or a bundle on a file, a simulated array or a live array;
    text-to-audio tasks take a PROMPT instead: edgeaudio run tta "a horn honks twice" -o out.wav"""
    from edgeaudio.runtime import load

    session = load(_resolve_bundle(task_or_bundle, array, input_spec, force), backend=backend, precision=precision)
    note(f"backend: {session.reason}")
    open_sinks = partial(_open_sinks, session.task, output, udp, speaker, fmt, plot)  # opened once the input is
    if session.task.inputs == "text":
        _report(_run_prompt(session, prompt, input_spec, open_sinks, seconds, steps, seed, guidance, candidates), stats, as_json)
        return
    if prompt is not None:
        raise UsageError(f"task '{session.task.name}' takes audio, not a prompt ('{prompt}')", hint="pass audio with --input FILE")
    if stream:
        summary = _run_stream(session, input_spec, array, device_index, open_sinks, seconds, chunk_ms, every, force)
    else:
        summary = _run_offline(session, input_spec, array, open_sinks, force)
    _report(summary, stats, as_json)
    if summary["error"]:
        raise DeviceLost(summary["error"], hint="results up to the loss were written; check the device and run again")


def _open_sinks(task, output: str | None, udp: str | None, speaker: bool, fmt: str = "json", plot: str | None = None) -> list:
    """Result sinks for the flags; results on stdout (JSON lines, or DCASE rows) when no other
    destination is named."""
    from edgeaudio.audio.event_sinks import AzimuthPlotSink, DcaseCsvSink
    from edgeaudio.audio.sinks import JsonLinesSink, SpeakerSink, UdpSink, WavSink, is_waveform_task

    lines = (lambda path: DcaseCsvSink(path, task)) if fmt == "dcase" else JsonLinesSink
    sinks = []
    if plot:
        sinks.append(AzimuthPlotSink(plot, task))
    if output:
        wav = output.endswith(".wav") and is_waveform_task(task)
        sinks.append(WavSink(output, task) if wav else lines(output))
    if udp:
        sinks.append(UdpSink(udp))
    if speaker:
        sinks.append(SpeakerSink(task))
    if not any(not isinstance(sink, AzimuthPlotSink) for sink in sinks):
        sinks.append(lines(None))
    return sinks


def _run_stream(session, input_spec, array, device_index, open_sinks, seconds, chunk_ms, every=None, force=False) -> dict:
    from edgeaudio.audio.live import run_live
    from edgeaudio.audio.sources import open_source

    source = open_source(input_spec, array, session, device_index=device_index, chunk_ms=chunk_ms, log=note, force=force)
    try:
        sinks = open_sinks()
    except Exception:
        source.close()
        raise
    if source.realtime:
        note("running live; Ctrl-C stops")
    summary = run_live(source, session.stream(every), sinks, seconds=seconds, log=note)
    _note_sinks(sinks)
    note(f"real-time factor {summary['rtf']:.4f} on {summary['audio_seconds']:.1f} s")
    return summary


def _run_offline(session, input_spec, array, open_sinks, force=False) -> dict:
    """The whole file in one call: the reference a streamed run must match."""
    from edgeaudio.audio import read_audio
    from edgeaudio.audio.recording_array import file_channel_map

    if input_spec is None or input_spec == "mic" or input_spec.startswith("sim:"):
        raise UsageError("--offline needs an audio file as --input", hint="drop --offline for live or simulated input")
    audio, rate, notes = read_audio(input_spec, sample_rate=session.sample_rate)
    for message in notes:
        note(message)
    channel_map = file_channel_map(Path(input_spec), audio.shape[0], array, session.task, force, note)
    if channel_map is not None:
        audio = audio[channel_map]
    results = [session.process(audio, rate)]
    sinks = open_sinks()
    for sink in sinks:
        sink.write(results)
        sink.close()
    _note_sinks(sinks)
    return {"ended": "end", "error": None, "audio_seconds": audio.shape[1] / rate}


def _run_prompt(session, prompt, input_spec, open_sinks, seconds, steps, seed, guidance, candidates) -> dict:
    """Generate audio from a text prompt; the WAV goes to --output or the speaker, a JSON line
    describing it (prompt, seed, steps, warnings, no samples) to stdout."""
    from edgeaudio.audio.sinks import JsonLinesSink, to_json

    if not prompt:
        raise UsageError(f"task '{session.task.name}' needs a text prompt", hint=f'edgeaudio run {session.task.name} "a horn honks twice" -o out.wav')
    if input_spec is not None:
        raise UsageError(f"task '{session.task.name}' generates audio from its prompt and takes no --input")
    sinks = open_sinks()
    if any(isinstance(sink, JsonLinesSink) for sink in sinks):
        for sink in sinks:
            sink.close()
        raise UsageError("text-to-audio writes audio: name a WAV file with --output out.wav or add --speaker")
    started = time.perf_counter()
    result = session.generate(prompt, seconds=seconds, steps=steps, seed=seed, guidance=guidance, candidates=candidates)
    wall = time.perf_counter() - started
    for warning in result["warnings"]:
        note(f"warning: {warning}")
    for sink in sinks:
        sink.write([result])
        sink.close()
    _note_sinks(sinks)
    audio_seconds = result["seconds"]
    note(f"generated {audio_seconds:.1f} s in {wall:.2f} s (real-time factor {wall / audio_seconds:.3f})")
    click.echo(to_json({k: v for k, v in result.items() if k != "audio"}))
    return {"ended": "end", "error": None, "audio_seconds": audio_seconds, "wall_seconds": wall, "rtf": wall / audio_seconds,
            "generated": True}  # fmt: skip


def _note_sinks(sinks) -> None:
    for sink in sinks:
        if line := sink.summary():
            note(line)


def _report(summary: dict, stats: bool, as_json: bool) -> None:
    from edgeaudio.audio.sinks import to_json

    if stats:
        for line in _stats_lines(summary):
            note(line)
    if as_json:
        click.echo(to_json({"summary": summary}))


def _stats_lines(summary: dict) -> list[str]:
    """The summary for people: what ran, how fast, how late, what was lost."""
    if summary.get("generated"):
        return [f"generated {summary['audio_seconds']:.1f} s in {summary['wall_seconds']:.2f} s, real-time factor {summary['rtf']:.4f}"]
    if "rtf" not in summary:
        return [f"offline: {summary['audio_seconds']:.1f} s of audio in one call"]
    ms = summary["latency_ms"]
    late = f"p50 {ms['p50']:.1f} ms, p95 {ms['p95']:.1f} ms, max {ms['max']:.1f} ms" if ms else "no results"
    return [
        f"input: {summary['source']}; ended: {summary['ended']}",
        f"audio {summary['audio_seconds']:.1f} s in {summary['wall_seconds']:.1f} s, {summary['results']} result(s)",
        f"real-time factor {summary['rtf']:.4f} (model), {summary['processing_rtf']:.4f} (model + output)",
        f"latency, capture to result out: {late}",
        f"dropped {summary['dropped_samples']} sample(s); input overflows {summary['input_overflows']}, "
        f"underflows {summary['input_underflows']}; output underflows {summary['output_underflows']}",
        "fell behind real time: " + ("YES" if summary["fell_behind"] else "no"),
    ]
