"""Speech enhancement vs RNNoise and spectral gating, on the held-out test set, in one process.

    python benchmarks/enhance_vs_rnnoise.py [--threads 1] [--limit N] [--json enhance.json] [--bundle DIR] [--dfn3]

Every system enhances the same clips: the corpus's held-out mixtures (voices, noise recordings
and rooms that training never saw; ``python -m edgeaudio.plugins.enhance.build_corpus``), 4 s
each, 24 per input-SNR bucket from -5 to 20 dB. Rows: the noisy input itself; ``noisereduce``
(non-stationary spectral gating); RNNoise through ``pyrnnoise`` (48 kHz only: soxr HQ to 48 kHz
and back); and the shipped enhance model exported for this host, on every backend and precision
the export kept (torch reference, ONNX Runtime and OpenVINO, fp32 and INT8 that passed the gate).

Metrics: SI-SDR and its improvement over the input, PESQ-WB, STOI, DNSMOS P.835 (SIG, BAK, OVRL).
Each system's output is aligned to the clean signal first: the model by its fixed 16 ms delay,
the others by the one lag (0-40 ms) that maximises their mean SI-SDR over the set.

Real-time factor (RTF): processor seconds per audio second on ``--threads`` threads, counted as
process CPU time so that other work on a shared machine does not inflate it (wall-clock RTFs are
in the JSON too). The model and RNNoise are timed streaming, as live audio would run them: the
model through a Stream fed 100 ms chunks (runtime overhead included), RNNoise frame by frame
through its C library (pyrnnoise's ``librnnoise``) with its resampling timed apart; noisereduce
on whole clips, which it needs. Prints Markdown tables (overall, then SI-SDR improvement per
input-SNR bucket).

``--dfn3`` (needs ``edgeaudio[dfn3]``) adds DeepFilterNet3 twice: through the wheel's own C runtime
(libDF, frame by frame through ctypes) and through edgeaudio (``enhance --model dfn3`` exported for
this host, every backend and precision the export kept), both at 48 kHz (soxr HQ up and down,
timed apart) and aligned by their fixed 1440-sample (30 ms) lag. edgeaudio's rows are streamed in
10 ms chunks (one hop per call, the smallest chunk) for their RTF, and record the largest
difference from the C runtime's output and the SI-SDR between the two.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from _common import export_shipped

SAMPLE_RATE = 16000
CHUNK = 1600  # 100 ms, as `edgeaudio run` feeds a stream
MAX_LAG = 640  # 40 ms
SHARED_TOLERANCE = 1e-4
POOL: dict = {"executor": None}  # processes that score clips in parallel (--jobs)


def test_pairs(limit: int | None):
    from edgeaudio.errors import UsageError
    from edgeaudio.plugins.enhance.build_corpus import default_corpus
    from edgeaudio.plugins.enhance.data import read_pairs

    if not (default_corpus() / "CORPUS.json").is_file():
        raise UsageError(f"no corpus at {default_corpus()}", hint="python -m edgeaudio.plugins.enhance.build_corpus --install")
    return read_pairs(default_corpus() / "test", limit)


def scored_row(system: str, pairs, outputs: list[np.ndarray], rtf: float | None, extra: dict | None = None, lag: int = 0) -> dict:
    from edgeaudio.plugins.enhance.metrics import score, summarize

    cleans, noisies = [p.clean for p in pairs], [p.noisy for p in pairs]
    if POOL["executor"] is None:
        rows = [score(*args) for args in tqdm(list(zip(outputs, cleans, noisies)), desc=f"scoring {system}", leave=False)]
    else:
        rows = list(POOL["executor"].map(score, outputs, cleans, noisies, chunksize=4))
    return {"system": system, "rtf": rtf, "lag_samples": lag, **(extra or {}), "metrics": summarize(rows)}


def aligned(outputs: list[np.ndarray], pairs) -> tuple[list[np.ndarray], int]:
    """Outputs shifted by the one lag that maximises their mean SI-SDR (systems with a delay)."""
    from edgeaudio.plugins.enhance.metrics import si_sdr

    def shift(out: np.ndarray, lag: int) -> np.ndarray:
        return np.concatenate([out[lag:], np.zeros(lag, np.float32)])

    lags = range(0, MAX_LAG + 1, 16)
    sample = list(zip(outputs, pairs))[:20]
    coarse = max(lags, key=lambda lag: np.mean([si_sdr(shift(o, lag), p.clean) for o, p in sample]))
    fine = range(max(0, coarse - 16), min(MAX_LAG, coarse + 16) + 1)
    lag = max(fine, key=lambda lag: np.mean([si_sdr(shift(o, lag), p.clean) for o, p in sample]))
    return [shift(o, lag) for o in outputs], lag


class Clock:
    """Accumulated wall and process-CPU seconds of the timed blocks."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu


def timed(function: Callable[[np.ndarray], np.ndarray], pairs, name: str) -> tuple[list[np.ndarray], Clock]:
    outputs, clock = [], Clock()
    for pair in tqdm(pairs, desc=name, leave=False):
        with clock:
            out = function(pair.noisy)
        outputs.append(np.asarray(out, np.float32)[: len(pair.noisy)])
    return outputs, clock


def _audio_seconds(pairs) -> float:
    return sum(len(p.noisy) for p in pairs) / SAMPLE_RATE


def noisy_row(pairs) -> dict:
    return scored_row("noisy input", pairs, [p.noisy for p in pairs], None)


def noisereduce_row(pairs) -> dict:
    import noisereduce

    outputs, clock = timed(lambda x: noisereduce.reduce_noise(y=x, sr=SAMPLE_RATE, n_jobs=1), pairs, "noisereduce")
    outputs, lag = aligned(outputs, pairs)
    seconds = _audio_seconds(pairs)
    return scored_row("noisereduce (spectral gating)", pairs, outputs, clock.cpu / seconds,
                      {"rtf_wall": clock.wall / seconds}, lag=lag)


def rnnoise_row(pairs) -> dict:
    """RNNoise on 10 ms frames at 48 kHz, called straight through ctypes so Python adds little;
    it takes and returns 16-bit sample values as floats."""
    import ctypes

    import soxr
    from pyrnnoise import rnnoise

    frame = rnnoise.FRAME_SIZE
    pointer = ctypes.POINTER(ctypes.c_float)
    outputs, network, resampling = [], Clock(), Clock()
    for pair in tqdm(pairs, desc="rnnoise", leave=False):
        with resampling:
            up = soxr.resample(pair.noisy, SAMPLE_RATE, 48000, quality="HQ") * 32768.0
        up = np.ascontiguousarray(np.pad(up, (0, -len(up) % frame)), dtype=np.float32)
        out = np.empty_like(up)
        state = rnnoise.create()
        with network:
            for i in range(0, len(up), frame):
                rnnoise.lib.rnnoise_process_frame(state, out[i:].ctypes.data_as(pointer), up[i:].ctypes.data_as(pointer))
        rnnoise.destroy(state)
        with resampling:
            down = soxr.resample(out / 32768.0, 48000, SAMPLE_RATE, quality="HQ")
        outputs.append(down[: len(pair.noisy)].astype(np.float32))
    outputs, lag = aligned(outputs, pairs)
    seconds = _audio_seconds(pairs)
    return scored_row("RNNoise (pyrnnoise, 48 kHz)", pairs, outputs, network.cpu / seconds,
                      {"rtf_wall": network.wall / seconds, "rtf_with_resampling": (network.cpu + resampling.cpu) / seconds},
                      lag=lag)


DFN3_RATE, DFN3_HOP, DFN3_LAG = 48000, 480, 1440


def _up(audio: np.ndarray) -> np.ndarray:
    import soxr

    return soxr.resample(audio, SAMPLE_RATE, DFN3_RATE, quality="HQ").astype(np.float32)


def _down(audio: np.ndarray, length: int) -> np.ndarray:
    import soxr

    out = soxr.resample(audio, DFN3_RATE, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return np.pad(out, (0, max(length - len(out), 0)))[:length]


def _percentiles(seconds: list[float]) -> dict[str, float]:
    return {"p50": 1000 * float(np.percentile(seconds, 50)), "p99": 1000 * float(np.percentile(seconds, 99))}


def dfn3_c_row(pairs) -> tuple[dict, list[np.ndarray]]:
    """DeepFilterNet3 through the wheel's C runtime (a fresh state per clip, 10 ms hops); also
    returns its 48 kHz outputs, lag removed, for the agreement figures."""
    from edgeaudio.plugins.enhance.dfn3_capi import DfnRuntime

    outputs, raw, network, resampling, hops = [], [], Clock(), Clock(), []
    for pair in tqdm(pairs, desc="dfn3 C runtime", leave=False):
        with resampling:
            up = _up(pair.noisy)
        with DfnRuntime() as runtime, network:
            out, _ = runtime.process(np.pad(up, (0, DFN3_LAG)), hops)
        out = out[DFN3_LAG : DFN3_LAG + len(up)]
        raw.append(out)
        with resampling:
            outputs.append(_down(out, len(pair.noisy)))
    seconds = _audio_seconds(pairs)
    row = scored_row("DeepFilterNet3 (its C runtime, 48 kHz)", pairs, outputs, network.cpu / seconds,
                     {"rtf_wall": network.wall / seconds, "rtf_resampling": resampling.cpu / seconds,
                      "hop_ms": _percentiles(hops)}, lag=0)
    return row, raw


def dfn3_rows(bundle: Path, pairs, threads: int, reference: list[np.ndarray]) -> list[dict]:
    """DeepFilterNet3 through edgeaudio, one row per backend/precision of its bundle: whole clips
    (one graph call each) scored, a 10 ms-chunk Stream over all clips timed."""
    import edgeaudio
    from edgeaudio.plugins.enhance.metrics import si_sdr
    from edgeaudio.runtime import stream_steps

    rows = []
    for backend, precision in sorted(edgeaudio.load(bundle, backend="onnxruntime").bundle.artifacts()):
        session = edgeaudio.load(bundle, backend=backend, precision=precision, threads=threads)
        graph = session.runner.streaming_graph()
        outputs, raw, clip = [], [], Clock()
        for pair in tqdm(pairs, desc=f"dfn3 {backend}/{precision}", leave=False):
            up = _up(pair.noisy)
            with clip:
                out = graph.run_offline(up[None], DFN3_LAG)["enhanced"][0, 0, DFN3_LAG:]
            raw.append(out)
            outputs.append(_down(out, len(pair.noisy)))
        joined = np.concatenate([_up(p.noisy) for p in pairs])[None]
        *pieces, flush = stream_steps(session.stream(), joined, DFN3_HOP)
        clock, hops = Clock(), []
        with clock:
            for piece in pieces:
                began = time.perf_counter()
                piece()
                hops.append(time.perf_counter() - began)
            flush()
        seconds = joined.shape[1] / DFN3_RATE
        agreement = [si_sdr(ours, theirs[: len(ours)]) for ours, theirs in zip(raw, reference)]
        extra = {"rtf_wall": clock.wall / seconds, "rtf_whole_clip": clip.cpu / seconds, "hop_ms": _percentiles(hops),
                 "vs_c_runtime": {"si_sdr_min": float(np.min(agreement)), "si_sdr_median": float(np.median(agreement)),
                                  "max_abs_diff": max(float(np.max(np.abs(o - r[: len(o)]))) for o, r in zip(raw, reference))}}
        rows.append(scored_row(f"DeepFilterNet3 edgeaudio {backend}/{precision}", pairs, outputs, clock.cpu / seconds,
                               extra, lag=0))
    return rows


def model_rows(bundle: Path, pairs, threads: int) -> list[dict]:
    """One row per backend/precision of the bundle, torch first.

    An artifact whose outputs match torch's to SHARED_TOLERANCE on every clip (the fp32 ones do,
    by the export's parity check) would score the same to the printed digits; it shares torch's
    quality metrics instead of recomputing them (DNSMOS alone costs about a second per clip) and
    records its largest difference. Its real-time factor is always its own.
    """
    import edgeaudio
    from edgeaudio.plugins.enhance.task import enhance_audio
    from edgeaudio.runtime import stream_steps

    rows, reference = [], None
    pairs_built = sorted(edgeaudio.load(bundle, backend="torch").bundle.artifacts(), key=lambda p: (p[0] != "torch", p))
    joined = np.concatenate([p.noisy for p in pairs])[None]
    for backend, precision in pairs_built:
        session = edgeaudio.load(bundle, backend=backend, precision=precision, threads=threads)
        graph = session.runner.streaming_graph()
        enhance_audio(graph, pairs[0].noisy[:CHUNK])  # warm-up: first-call allocations
        outputs, clip = timed(lambda x: enhance_audio(graph, x), pairs, f"{backend}/{precision}")
        stream, clock = session.stream(), Clock()
        with clock:
            for step in stream_steps(stream, joined, CHUNK):
                step()
        seconds = joined.shape[1] / SAMPLE_RATE
        name = f"enhance {backend}/{precision}"
        timing = {"rtf_wall": clock.wall / seconds, "rtf_graph_wall": stream.real_time_factor(),
                  "rtf_whole_clip": clip.cpu / _audio_seconds(pairs)}
        difference = None if reference is None else max(float(np.max(np.abs(o - r))) for o, r in zip(outputs, reference[0]))
        if difference is not None and difference < SHARED_TOLERANCE:
            shared = {"metrics_from": reference[1]["system"], "max_abs_diff": difference}
            rows.append({**reference[1], "system": name, "rtf": clock.cpu / seconds, **timing, **shared})
            continue
        rows.append(scored_row(name, pairs, outputs, clock.cpu / seconds, {**timing, "max_abs_diff": difference}, lag=256))
        if reference is None:
            reference = (outputs, rows[-1])
    return rows


def tables(rows: list[dict]) -> str:
    head = ["| system | SI-SDR (dB) | SI-SDRi (dB) | PESQ-WB | STOI | DNSMOS SIG | DNSMOS BAK | DNSMOS OVRL | RTF |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["metrics"]["overall"]
        rtf = f"{r['rtf']:.4f}" if r["rtf"] is not None else "-"
        system = r["system"] + (f" (= {r['metrics_from'].split()[-1]})" if r.get("metrics_from") else "")
        head.append(f"| {system} | {m['si_sdr']:.2f} | {m['si_sdr_i']:.2f} | {m['pesq']:.2f} | {m['stoi']:.3f} | "
                    f"{m['dnsmos_sig']:.2f} | {m['dnsmos_bak']:.2f} | {m['dnsmos_ovrl']:.2f} | {rtf} |")
    buckets = [b for b in rows[0]["metrics"] if b != "overall"]
    per = ["", "SI-SDR improvement (dB) per input-SNR bucket:", "",
           "| system | " + " | ".join(f"{b} ({rows[0]['metrics'][b]['clips']})" for b in buckets) + " |",
           "|---|" + "---|" * len(buckets)]
    for r in rows:
        per.append(f"| {r['system']} | " + " | ".join(f"{r['metrics'][b]['si_sdr_i']:.2f}" for b in buckets) + " |")
    dfn3 = [r for r in rows if r.get("hop_ms")]
    if dfn3:
        per += ["", "DeepFilterNet3: edgeaudio against its C runtime (48 kHz output, per clip; streamed one 10 ms hop per call):",
                "", "| system | SI-SDR to the C runtime: min / median (dB) | max abs difference | RTF streamed | "
                "p50 / p99 per hop (ms) | RTF whole clip |", "|---|---|---|---|---|---|"]
        for r in dfn3:
            a = r.get("vs_c_runtime")
            agreement = f"{a['si_sdr_min']:.1f} / {a['si_sdr_median']:.1f} | {a['max_abs_diff']:.2e}" if a else "(reference) | -"
            whole = f"{r['rtf_whole_clip']:.4f}" if "rtf_whole_clip" in r else "-"
            per.append(f"| {r['system']} | {agreement} | {r['rtf']:.4f} | {r['hop_ms']['p50']:.2f} / {r['hop_ms']['p99']:.2f} | "
                       f"{whole} |")
    return "\n".join(head + per)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="threads for every system (default 1)")
    parser.add_argument("--limit", type=int, help="use only the first N test clips (the order cycles through the SNR buckets)")
    parser.add_argument("--jobs", type=int, default=1, help="processes that compute the metrics (timings stay in one)")
    parser.add_argument("--bundle", type=Path, help="an exported enhance bundle (default: export the shipped weights)")
    parser.add_argument("--dfn3", action="store_true", help="add DeepFilterNet3: its C runtime and through edgeaudio")
    parser.add_argument("--dfn3-bundle", type=Path, help="an exported enhance-dfn3 bundle (default: export it)")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    from edgeaudio.bundle import load_bundle

    torch.set_num_threads(args.threads)
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        POOL["executor"] = ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"))
    pairs = test_pairs(args.limit)
    print(f"{len(pairs)} held-out clips, {_audio_seconds(pairs):.0f} s of audio, {args.threads} thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or export_shipped("enhance", Path(tmp) / "enhance")
        rows = [noisy_row(pairs), noisereduce_row(pairs), rnnoise_row(pairs)] + model_rows(bundle, pairs, args.threads)
        reports = load_bundle(bundle).manifest["reports"]
        if args.dfn3:
            c_row, reference = dfn3_c_row(pairs)
            dfn3_bundle = args.dfn3_bundle or export_shipped("enhance-dfn3", Path(tmp) / "enhance-dfn3")
            rows += [c_row] + dfn3_rows(dfn3_bundle, pairs, args.threads, reference)
    print(tables(rows))
    if args.json:
        info = {"clips": len(pairs), "threads": args.threads, "host": f"{platform.system()} {platform.machine()}",
                "cpu_count": os.cpu_count(), "int8_gate": reports.get("gate"), "export_notes": reports.get("notes"), "rows": rows}
        args.json.write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    main()
