"""``edgeaudio bench BUNDLE``: latency, real-time factor, memory and parity per backend x precision."""

from __future__ import annotations

import click

from edgeaudio.cli.output import emit_json, note, table


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@click.command("bench")
@click.argument("bundle", type=click.Path(exists=True))
@click.option("--backends", "backends", multiple=True, help="Limit to these backends (torch always runs as the baseline).")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp32", "fp16", "int8"]))
@click.option("--seconds", default=10.0, show_default=True, help="Length of the benchmark signal.")
@click.option("--chunk-ms", default=100.0, show_default=True, help="Streaming chunk length.")
@click.option("--threads", type=int, help="Threads per backend (default: the runtime's).")
@click.option("--validate", is_flag=True, help="Also compute the task metric on its validation set.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(bundle, backends, precisions, seconds, chunk_ms, threads, validate, as_json):
    """Benchmark BUNDLE on every backend and precision it holds, side by side with torch eager."""
    from edgeaudio.api import bench

    report = bench(bundle, validate=validate, backends=backends or None, precisions=precisions or None, seconds=seconds,
                   chunk_ms=chunk_ms, threads=threads, log=note)
    if as_json:
        emit_json(report)
        return
    click.echo(f"{report['task']} bundle {report['bundle']} ({report['bundle_size_mb']:.2f} MB), "
               f"{report['audio_seconds']:.0f} s signal, threads {report['threads']}")
    rows = []
    for r in report["rows"]:
        if r["error"]:
            rows.append((r["backend"], r["precision"], "-", "-", "-", "-", "-", "-", "-", r["error"]))
            continue
        metrics = ", ".join(f"{k}={v:.3g}" for k, v in r["metrics"].items())
        rows.append((r["backend"], r["precision"], f"{r['load_s']:.2f}", f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}",
                     f"{r['rtf']:.4f}", _fmt(r["speedup_vs_torch"], ".2f") + "x", f"{r['peak_rss_mb']:.0f}",
                     _fmt(r["parity_max_abs"], ".1e"), metrics))
    click.echo(table(rows, ["backend", "prec", "load s", "p50 ms", "p95 ms", "RTF", "vs torch", "peak MB", "parity", "metrics"]))
