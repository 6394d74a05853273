"""``edgeaudio run TASK|BUNDLE``: a file, a simulated array or a live microphone array through a model.

Results go out as JSON lines (stdout, ``--output``, ``--udp``), waveforms to a WAV file or the
speaker. Choices and progress go to stderr, so stdout stays clean for results.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Iterator

import click

from edgeaudio.cli.output import note, recorded_array

OFFLINE_SEGMENT_S = 10.0  # --offline on a streaming task: audio read and run per segment of this length
from edgeaudio.errors import DeviceLost, UsageError
from edgeaudio.options import finite_float


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


def _option_value(args: list[str], option: str) -> str | None:
    """The value given to ``option`` in raw ``args`` (``--model x`` or ``--model=x``), if any."""
    for index, arg in enumerate(args):
        if arg == option and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(option + "="):
            return arg[len(option) + 1:]
    return None


def _model_task(name: str, model: str | None) -> str:
    """The task ``--model`` picks in family ``name``; ``name`` when it picks none or nothing valid
    (the command itself reports a bad choice once it runs)."""
    from edgeaudio.tasks import resolve_model

    try:
        return resolve_model(name, model)
    except UsageError:
        return name


class RunCommand(click.Command):
    """``run`` whose options follow the task named first: ``edgeaudio run tta --help`` lists the
    text-to-audio options, ``edgeaudio run seld --help`` the event formats; the core knows none."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._core_params = list(self.params)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = next((arg for arg in args if not arg.startswith("-")), None)
        if first is not None:
            first = _model_task(first, _option_value(args, "--model"))
        self.params = list(self._core_params) + _task_params(_task_class(first) if first else None)
        return super().parse_args(ctx, args)

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        """A pipeline spec (``edgeaudio run PIPELINE.yaml``) is run, and its --help given, by
        the pipeline command (cli/pipeline_cmd.py)."""
        from edgeaudio.cli import pipeline_cmd

        if pipeline_cmd.is_pipeline_spec(next((arg for arg in args if not arg.startswith("-")), None)):
            return pipeline_cmd.command.make_context(info_name, args, parent=parent, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)


@click.command("run", cls=RunCommand)
@click.argument("task_or_bundle")
@click.argument("prompt", required=False)
@click.option("-i", "--input", "input_spec",
              help="Audio file, mic (the default), or a source a plugin brings (sim:seed=N,seconds=S[,library=PATH]).")
@click.option("--device", "array", help="Microphone array profile or family (e.g. respeaker); default: the task's array.")
@click.option("--device-index", type=click.IntRange(0, 4095), help="PortAudio device to capture from (see `edgeaudio devices --live`).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write results here (JSON lines, or WAV for waveform tasks).")
@click.option("--udp", help="Send each result as a JSON datagram to host:port.")
@click.option("--speaker", is_flag=True, help="Play waveform results on the default output device (mic -> model -> speaker).")
@click.option("--seconds", type=finite_float(0, 86400, min_open=True),
              help="Stop after this much audio; for tasks that generate from text, the length to generate.")
@click.option("--stats", is_flag=True, help="Print latency, real-time factor and drop counts at the end.")
@click.option("--json", "as_json", is_flag=True, help='Print the summary as one JSON line {"summary": ...} at the end.')
@click.option("--model", help="Another model of the task family, e.g. a published one (`edgeaudio plugins` lists each task's models).")
@click.option("--backend", default="auto", show_default=True)
@click.option("--precision", default="auto", show_default=True)
@click.option("--stream/--offline", default=True, show_default=True,
              help="Process chunk by chunk (as live) or a whole file at once (streaming models: in 10 s segments, memory flat).")
@click.option("--chunk-ms", type=finite_float(1, 60000), default=100.0, show_default=True,
              help="Chunk length for files and simulated input.")
@click.option("--every", type=finite_float(0.1, 3600),
              help="For tasks that take whole clips (no streaming graph): one result per this many seconds [default: 5].")
@click.option("--force", is_flag=True, help="Run an array model on audio from another array (its directions will be wrong).")
@click.option("--trust", multiple=True, type=click.Path(dir_okay=False), metavar="PUBKEY",
              help="Run only a bundle signed by this public key (repeatable; see also EDGEAUDIO_TRUST).")
def command(task_or_bundle, prompt, input_spec, array, device_index, output, udp, speaker, seconds, stats, as_json, model,
            backend, precision, stream, chunk_ms, every, force, trust, fmt, **task_options):  # fmt: skip
    """Run a task (its default bundle) or a bundle on a file, a simulated array or a live array;
    tasks that generate audio from text take a PROMPT instead: edgeaudio run tta "a horn honks twice" -o out.wav

    A pipeline spec runs several models on one capture: edgeaudio run PIPELINE.yaml (see its --help).

    Options that depend on the task (result formats, extra sinks, the task's own options) are
    listed by `edgeaudio run TASK --help`."""
    from edgeaudio.api import open_session
    from edgeaudio.task import InputKind

    from edgeaudio.live.sinks import check_outputs
    from edgeaudio.tasks import resolve_model

    task_or_bundle = resolve_model(task_or_bundle, model)
    sinks_wanted = {name[len("sink_"):]: value for name, value in task_options.items() if name.startswith("sink_") and value}
    check_outputs({"--output": output, **{f"--{name}": value for name, value in sinks_wanted.items()}},
                  {"--input": input_spec, "the bundle": task_or_bundle if Path(task_or_bundle).exists() else None})
    cls = _task_class(task_or_bundle)
    if every is not None and cls is not None and every < cls.min_input_seconds:
        raise UsageError(f"--every {every:g} is shorter than the {cls.min_input_seconds:g} s task '{cls.name}' needs to "
                         "mean anything", hint=f"use --every {cls.min_input_seconds:g} or more")
    recorded = recorded_array(input_spec)  # the file's header, read once for the whole run
    session = open_session(task_or_bundle, backend=backend, precision=precision, array=array,
                           recorded_array=recorded, force=force, log=note, trust=trust)
    note(f"backend: {session.reason}")
    task = session.task
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
    from edgeaudio.live.sinks import (JsonLinesSink, SpeakerSink, UdpSink, WavSink, close_sinks, is_waveform_task,
                                      plugin_sinks)

    formats, options = plugin_sinks(task)
    lines = (lambda path: formats[fmt].open(path, task)) if fmt != "json" else JsonLinesSink
    sinks = []
    try:  # a sink that cannot open releases the ones opened before it, leaving no file behind
        sinks += [options[name].open(value, task) for name, value in (extra or {}).items()]
        named = len(sinks)
        if output:
            wav = output.endswith(".wav") and is_waveform_task(task)
            sinks.append(WavSink(output, task) if wav else lines(output))
        if udp:
            sinks.append(UdpSink(udp))
        if speaker:
            sinks.append(SpeakerSink(task))
        if len(sinks) == named:
            sinks.append(lines(None))
    except BaseException:
        close_sinks(sinks, failed=True)
        raise
    return sinks


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
    """The whole file at once, unpaced: the reference a streamed run must match. A task with a
    streaming graph reads it in segments through one Stream (``_run_offline_segments``); a task
    that takes whole clips gets it in one call."""
    from edgeaudio.audio import read_audio
    from edgeaudio.audio.checks import InputCheck
    from edgeaudio.audio.recording_array import file_channel_map
    from edgeaudio.live.sources import plugin_source_kind

    if input_spec is None or input_spec == "mic" or plugin_source_kind(input_spec) is not None:
        raise UsageError("--offline needs an audio file as --input", hint="drop --offline for live or simulated input")
    if session.streaming:
        return _run_offline_segments(session, input_spec, array, open_sinks, force, recorded)
    audio, rate, notes = read_audio(input_spec, sample_rate=session.sample_rate)
    for message in notes:
        note(message)
    channel_map = file_channel_map(Path(input_spec), audio.shape[0], array, session.task, force, note, recorded)
    if channel_map is not None:
        audio = audio[channel_map]
    check = InputCheck(rate, session.task.min_input_seconds, f"file {Path(input_spec).name}")
    for message in check.update(audio) + check.finish():
        note(message)
    _write_all(open_sinks(), [session.process(audio, rate)])
    return {"ended": "end", "error": None, "audio_seconds": audio.shape[1] / rate}


def _run_offline_segments(session, input_spec, array, open_sinks, force, recorded) -> dict:
    """A file through one Stream in ``OFFLINE_SEGMENT_S`` segments, read and resampled block by
    block: memory stays flat on hour-long files (a whole hour of 4-channel audio alone would be
    0.9 GB), results go out segment by segment, and they are one call's results (the graph carries
    its state across segments; a kernel may round float32 differently at another length). A
    failure aborts every sink (no partial file)."""
    from edgeaudio.audio.checks import InputCheck
    from edgeaudio.live.sinks import write_results
    from edgeaudio.live.sources import open_source

    rate = session.sample_rate
    source = open_source(input_spec, array, session.task, chunk_ms=1000 * OFFLINE_SEGMENT_S, log=note, force=force,
                         declared=recorded)
    block = session.runner.streaming_graph().streaming.block / rate
    check = InputCheck(rate, max(session.task.min_input_seconds, block), f"file {Path(input_spec).name}")
    stream = session.stream()
    try:
        sinks = open_sinks()
    except Exception:
        source.close()
        raise
    with _delivering(sinks):
        with source:
            for chunk, _ in source:
                for message in check.update(chunk):
                    note(message)
                write_results(sinks, stream.accept(chunk))
        for message in check.finish():
            note(message)
        write_results(sinks, stream.flush())
    return {"ended": "end", "error": None, "audio_seconds": stream.samples_in / rate}


def _run_prompt(session, prompt, input_spec, open_sinks, seconds, options: dict) -> dict:
    """Generate audio from a text prompt; the WAV goes to --output or the speaker, a JSON line
    describing it (the result without its samples; warnings noted on stderr) to stdout."""
    import numpy as np

    from edgeaudio.live.sinks import JsonLinesSink, close_sinks, to_json

    task = session.task
    if not prompt:
        raise UsageError(f"task '{task.name}' needs a text prompt", hint=f'edgeaudio run {task.name} "a horn honks twice" -o out.wav')
    if input_spec is not None:
        raise UsageError(f"task '{task.name}' generates audio from its prompt and takes no --input",
                         hint=f'edgeaudio run {task.name} "{prompt}" -o out.wav')
    sinks = open_sinks()
    if any(isinstance(sink, JsonLinesSink) for sink in sinks):
        close_sinks(sinks, failed=True)
        raise UsageError("this task writes audio: name a WAV file with --output out.wav or add --speaker",
                         hint=f'edgeaudio run {task.name} "{prompt}" -o out.wav')
    try:
        started = time.perf_counter()
        result = session.generate(prompt, seconds=seconds, **options)
        wall = time.perf_counter() - started
    except BaseException:
        close_sinks(sinks, failed=True)
        raise
    for warning in result.get("warnings", []) if isinstance(result, dict) else []:
        note(f"warning: {warning}")
    _write_all(sinks, [result])
    audio_seconds = np.asarray(task.results_to_audio([result])).shape[-1] / task.sample_rate
    note(f"generated {audio_seconds:.1f} s in {wall:.2f} s (real-time factor {wall / audio_seconds:.3f})")
    if isinstance(result, dict):
        click.echo(to_json({k: v for k, v in result.items() if not isinstance(v, np.ndarray)}))
    return {"ended": "end", "error": None, "audio_seconds": audio_seconds, "wall_seconds": wall, "rtf": wall / audio_seconds,
            "generated": True}  # fmt: skip


def _write_all(sinks, results: list) -> None:
    """``results`` to every sink once checked finite, then close them all; on a failure abort
    every one (no partial file)."""
    from edgeaudio.live.sinks import write_results

    with _delivering(sinks):
        write_results(sinks, results)


@contextmanager
def _delivering(sinks) -> Iterator[None]:
    """Close every sink and say what it wrote when the block ends; if it fails, abort them all
    instead, so no partial file is left."""
    from edgeaudio.live.sinks import close_sinks

    try:
        yield
    except BaseException:
        close_sinks(sinks, failed=True)
        raise
    close_sinks(sinks, failed=False)
    _note_sinks(sinks)


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
        return [f"offline: {summary['audio_seconds']:.1f} s of audio, unpaced"]
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

