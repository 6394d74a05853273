"""``edgeaudio bench BUNDLE``: per backend x precision, in a process each: latency per chunk (p50/p99),
real-time factor, the runtime's overhead over the bare backend, memory, parity, speed-up vs torch."""

from __future__ import annotations

import click

from edgeaudio.cli.output import emit_json, note, table
from edgeaudio.options import finite_float


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@click.command("bench")
@click.argument("bundle", type=click.Path(exists=True))
@click.option("--backends", "backends", multiple=True, help="Limit to these backends (torch always runs as the baseline).")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp32", "fp16", "int8"]))
@click.option("--seconds", type=finite_float(0.1, 3600), default=10.0, show_default=True, help="Length of the benchmark signal.")
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False),
              help="Time on this recording instead of the synthetic signal (resampled to the model's rate).")
@click.option("--chunk-ms", type=finite_float(1, 60000), help="Streaming chunk length [default: one graph block, the task's smallest chunk].")
@click.option("--threads", type=click.IntRange(1, 1024), help="Threads per backend (default: the runtime's).")
@click.option("--rounds", type=click.IntRange(1, 1000), default=5, show_default=True, help="Timing rounds, runtime and bare backend interleaved.")
@click.option("--validate", is_flag=True, help="Also compute the task metric on its validation set.")
@click.option("--trust", multiple=True, type=click.Path(dir_okay=False), metavar="PUBKEY",
              help="Run only a bundle signed by this public key (repeatable; see also EDGEAUDIO_TRUST).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(bundle, backends, precisions, seconds, input_path, chunk_ms, threads, rounds, validate, trust, as_json):
    """Benchmark BUNDLE on every backend and precision it holds, each in a fresh process, side by
    side with torch eager. "x bare" is the runtime's time (decoding included) over the same graph
    calls through the plain vendor runtime on the same loaded graph (the onnxruntime.InferenceSession,
    the OpenVINO compiled model): whole signal in one Session.process call, and streamed chunk by chunk."""
    from edgeaudio.api import bench

    audio = _read_input(bundle, input_path) if input_path else None
    report = bench(bundle, validate=validate, backends=backends or None, precisions=precisions or None, seconds=seconds,
                   chunk_ms=chunk_ms, threads=threads, rounds=rounds, audio=audio, trust=trust or None, log=note)
    if as_json:
        emit_json(report)
        return
    click.echo(f"{report['task']} bundle {report['bundle']} ({report['bundle_size_mb']:.2f} MB), "
               f"{report['audio_seconds']:.1f} s signal, threads {report['threads']}"
               + ("" if report["peak_rss_isolated"] else "; peak RSS not isolated (in-process plugin)"))
    rows = []
    for r in report["rows"]:
        if r["error"]:
            rows.append((r["backend"], r["precision"], *["-"] * 11, r["error"]))
            continue
        metrics = ", ".join(f"{k}={v:.3g}" for k, v in r["metrics"].items())
        rows.append((r["backend"], r["precision"], f"{r['load_s']:.2f}", f"{r['clip_ms']:.1f}", _fmt(r["overhead_clip"], ".2f"),
                     f"{r['chunk_ms']:.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", _fmt(r["overhead_stream"], ".2f"),
                     f"{r['rtf']:.4f}", _fmt(r["speedup_vs_torch"], ".2f") + "x", f"{r['peak_rss_mb']:.0f}",
                     _fmt(r["parity_max_abs"], ".1e"), metrics))
    click.echo(table(rows, ["backend", "prec", "load s", "clip ms", "x bare", "chunk ms", "p50 ms", "p99 ms", "x bare",
                            "RTF", "vs torch", "peak MB", "parity", "metrics"]))


def _read_input(bundle: str, path: str):
    """The recording at the bundle's rate with its channels, or its first channel for a mono model."""
    from edgeaudio.audio import read_audio
    from edgeaudio.bundle import load_bundle
    from edgeaudio.errors import AudioInputError

    info = load_bundle(bundle).manifest["audio"]
    audio, _, notes = read_audio(path, sample_rate=info["sample_rate"])
    for message in notes:
        note(message)
    if audio.shape[0] == info["channels"]:
        return audio
    if info["channels"] == 1:
        note(f"bench: channel 1 of {audio.shape[0]} in {path}")
        return audio[:1]
    raise AudioInputError(f"{path} has {audio.shape[0]} channel(s), the model takes {info['channels']}")
