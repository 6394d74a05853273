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


def _recorded_array(input_spec: str | None) -> str | None:
    """The array an input file declares in its header (edgeaudio's WAV comment), if any."""
    if input_spec is None or input_spec == "mic" or not Path(input_spec).is_file():
        return None
    from edgeaudio.audio.recording_array import declared_array

    return declared_array(input_spec)


def _task_class(name: str):
    """The task class ``name`` means: an installed task, else the task of the bundle at that path;
    None when it is neither (the command reports that once it runs)."""
    from edgeaudio.tasks import task_classes

    classes = task_classes()
    if name in classes:
        return classes[name]
    manifest = Path(name) / "manifest.json"
    if manifest.is_file():
        import json

        try:
            return classes.get(json.loads(manifest.read_text())["task"]["name"])
        except (ValueError, KeyError, TypeError):
            return None
    return None


def _task_params(cls) -> list[click.Parameter]:
    """The options that depend on the task: ``--format`` with the result formats plugins bring for
    its kind of results, plugins' extra sinks, and the task's own run options."""
    formats, extra = ["json"], []
    if cls is not None:
        from edgeaudio.live.sinks import plugin_sinks

        found, options = plugin_sinks(cls)
        formats += [name for name in found if name != "json"]
        extra += [click.Option([f"--{name}", f"sink_{name}"], metavar=option.metavar, help=option.help)
                  for name, option in options.items()]
        if cls.run_options is not None:
            from edgeaudio.options import click_options

            extra += click_options(cls.run_options)
    format_help = "Results as JSON lines" + (" (`edgeaudio run TASK --help` lists the task's formats)" if cls is None else "")
    if cls is not None:
        for name, fmt in plugin_sinks(cls)[0].items():
            format_help += f"; {name}: {fmt.help}"
    return [click.Option(["--format", "fmt"], type=click.Choice(formats), default="json", show_default=True,
                         help=format_help + ".")] + extra


class RunCommand(click.Command):
    """``run`` whose options follow the task named first: ``edgeaudio run tta --help`` lists the
    text-to-audio options, ``edgeaudio run seld --help`` the event formats; the core knows none."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._core_params = list(self.params)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = next((arg for arg in args if not arg.startswith("-")), None)
        self.params = list(self._core_params) + _task_params(_task_class(first) if first else None)
        return super().parse_args(ctx, args)


@click.command("run", cls=RunCommand)
@click.argument("task_or_bundle")
@click.argument("prompt", required=False)
@click.option("-i", "--input", "input_spec",
              help="Audio file, mic (the default), or a source a plugin brings (sim:seed=N,seconds=S[,library=PATH]).")
@click.option("--device", "array", help="Microphone array profile or family (e.g. respeaker); default: the task's array.")
@click.option("--device-index", type=int, help="PortAudio device to capture from (see `edgeaudio devices --live`).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write results here (JSON lines, or WAV for waveform tasks).")
@click.option("--udp", help="Send each result as a JSON datagram to host:port.")
@click.option("--speaker", is_flag=True, help="Play waveform results on the default output device (mic -> model -> speaker).")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True),
              help="Stop after this much audio; for tasks that generate from text, the length to generate.")
@click.option("--stats", is_flag=True, help="Print latency, real-time factor and drop counts at the end.")
@click.option("--json", "as_json", is_flag=True, help='Print the summary as one JSON line {"summary": ...} at the end.')
@click.option("--backend", default="auto", show_default=True)
@click.option("--precision", default="auto", show_default=True)
@click.option("--stream/--offline", default=True, show_default=True, help="Process chunk by chunk (as live) or a whole file at once.")
@click.option("--chunk-ms", default=100.0, show_default=True, help="Chunk length for files and simulated input.")
@click.option("--every", type=click.FloatRange(min=0, min_open=True),
              help="For tasks that take whole clips (no streaming graph): one result per this many seconds [default: 5].")
@click.option("--force", is_flag=True, help="Run an array model on audio from another array (its directions will be wrong).")
def command(task_or_bundle, prompt, input_spec, array, device_index, output, udp, speaker, seconds, stats, as_json, backend,
            precision, stream, chunk_ms, every, force, fmt, **task_options):  # fmt: skip
    """Run a task (its default bundle) or a bundle on a file, a simulated array or a live array;
    tasks that generate audio from text take a PROMPT instead: edgeaudio run tta "a horn honks twice" -o out.wav

    Options that depend on the task (result formats, extra sinks, the task's own options) are
    listed by `edgeaudio run TASK --help`."""
    from edgeaudio.api import open_session
    from edgeaudio.task import InputKind

    recorded = _recorded_array(input_spec)  # the file's header, read once for the whole run
    session = open_session(task_or_bundle, backend=backend, precision=precision, array=array,
                           recorded_array=recorded, force=force, log=note)
    note(f"backend: {session.reason}")
    task = session.task
    sinks_wanted = {name[len("sink_"):]: value for name, value in task_options.items() if name.startswith("sink_") and value}
    open_sinks = partial(_open_sinks, task, output, udp, speaker, fmt, sinks_wanted)  # opened once the input is
    if task.input_kind is InputKind.TEXT:
        options = _run_options(task, task_options)
        _report(_run_prompt(session, prompt, input_spec, open_sinks, seconds, options), stats, as_json)
        return
    if prompt is not None:
        raise UsageError(f"task '{task.name}' takes audio, not a prompt ('{prompt}')", hint="pass audio with --input FILE")
    if stream:
        summary = _run_stream(session, input_spec, array, device_index, open_sinks, seconds, chunk_ms, every, force, recorded)
    else:
        summary = _run_offline(session, input_spec, array, open_sinks, force, recorded)
    _report(summary, stats, as_json)
    if summary["error"]:
        raise DeviceLost(summary["error"], hint="results up to the loss were written; check the device and run again")


def _run_options(task, values: dict) -> dict:
    """The task's own run options as keywords (its ``run_options`` dataclass, filled from the flags)."""
    if task.run_options is None:
        return {}
    import dataclasses

    from edgeaudio.options import from_click

    return dataclasses.asdict(from_click(task.run_options, values))


def _open_sinks(task, output: str | None, udp: str | None, speaker: bool, fmt: str = "json",
                extra: dict[str, str] | None = None) -> list:
    """Result sinks for the flags; results on stdout (JSON lines, or the chosen format) when no
    other destination is named. Extra sinks (``extra``: plugin sink name -> value) do not count
    as a destination."""
    from edgeaudio.live.sinks import JsonLinesSink, SpeakerSink, UdpSink, WavSink, is_waveform_task, plugin_sinks

    formats, options = plugin_sinks(task)
    lines = (lambda path: formats[fmt].open(path, task)) if fmt != "json" else JsonLinesSink
    sinks = [options[name].open(value, task) for name, value in (extra or {}).items()]
    destinations = []
    if output:
        wav = output.endswith(".wav") and is_waveform_task(task)
        destinations.append(WavSink(output, task) if wav else lines(output))
    if udp:
        destinations.append(UdpSink(udp))
    if speaker:
        destinations.append(SpeakerSink(task))
    return sinks + (destinations or [lines(None)])


def _run_stream(session, input_spec, array, device_index, open_sinks, seconds, chunk_ms, every=None, force=False,
                recorded=False) -> dict:
    from edgeaudio.live.loop import run_live
    from edgeaudio.live.sources import open_source

    source = open_source(input_spec, array, session.task, device_index=device_index, chunk_ms=chunk_ms, log=note, force=force,
                         declared=recorded)
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


def _run_offline(session, input_spec, array, open_sinks, force=False, recorded=False) -> dict:
    """The whole file in one call: the reference a streamed run must match."""
    from edgeaudio.audio import read_audio
    from edgeaudio.audio.recording_array import file_channel_map
    from edgeaudio.live.sources import plugin_source_kind

    if input_spec is None or input_spec == "mic" or plugin_source_kind(input_spec) is not None:
        raise UsageError("--offline needs an audio file as --input", hint="drop --offline for live or simulated input")
    audio, rate, notes = read_audio(input_spec, sample_rate=session.sample_rate)
    for message in notes:
        note(message)
    channel_map = file_channel_map(Path(input_spec), audio.shape[0], array, session.task, force, note, recorded)
    if channel_map is not None:
        audio = audio[channel_map]
    results = [session.process(audio, rate)]
    sinks = open_sinks()
    for sink in sinks:
        sink.write(results)
        sink.close()
    _note_sinks(sinks)
    return {"ended": "end", "error": None, "audio_seconds": audio.shape[1] / rate}


def _run_prompt(session, prompt, input_spec, open_sinks, seconds, options: dict) -> dict:
    """Generate audio from a text prompt; the WAV goes to --output or the speaker, a JSON line
    describing it (the result without its samples; warnings noted on stderr) to stdout."""
    import numpy as np

    from edgeaudio.live.sinks import JsonLinesSink, to_json

    task = session.task
    if not prompt:
        raise UsageError(f"task '{task.name}' needs a text prompt", hint=f'edgeaudio run {task.name} "a horn honks twice" -o out.wav')
    if input_spec is not None:
        raise UsageError(f"task '{task.name}' generates audio from its prompt and takes no --input")
    sinks = open_sinks()
    if any(isinstance(sink, JsonLinesSink) for sink in sinks):
        for sink in sinks:
            sink.close()
        raise UsageError("this task writes audio: name a WAV file with --output out.wav or add --speaker")
    started = time.perf_counter()
    result = session.generate(prompt, seconds=seconds, **options)
    wall = time.perf_counter() - started
    for warning in result.get("warnings", []) if isinstance(result, dict) else []:
        note(f"warning: {warning}")
    for sink in sinks:
        sink.write([result])
        sink.close()
    _note_sinks(sinks)
    audio_seconds = np.asarray(task.results_to_audio([result])).shape[-1] / task.sample_rate
    note(f"generated {audio_seconds:.1f} s in {wall:.2f} s (real-time factor {wall / audio_seconds:.3f})")
    if isinstance(result, dict):
        click.echo(to_json({k: v for k, v in result.items() if not isinstance(v, np.ndarray)}))
    return {"ended": "end", "error": None, "audio_seconds": audio_seconds, "wall_seconds": wall, "rtf": wall / audio_seconds,
            "generated": True}  # fmt: skip


def _note_sinks(sinks) -> None:
    for sink in sinks:
        if line := sink.summary():
            note(line)


def _report(summary: dict, stats: bool, as_json: bool) -> None:
    from edgeaudio.live.sinks import to_json

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

