"""Bandwidth extension vs plain band-limited upsampling on voices the model never heard.

    python benchmarks/bwe_vs_upsampling.py [--threads 1] [--json bwe.json] [--bundle DIR]

Every item is a 4 s utterance of a held-out voice (see ``HELDOUT`` in the plugin's data.py), made
narrowband as an 8 kHz recording is (soxr HQ down to 8 kHz) and brought back to 16 kHz by soxr HQ.
That signal is the baseline row and the model's input. The shipped weights are exported for this
host (torch reference, ONNX Runtime and OpenVINO, fp32 and whatever INT8 passed the LSD gate) and
each backend runs every item through a Session; the real-time factor is audio seconds per compute
second, for whole clips (Session) and for 100 ms chunks through a Stream. Both are given in wall
time and in the process's CPU time: on a shared machine wall time includes waiting for a core,
while CPU time is what the work itself costs. Prints the README table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from edgeaudio.plugins.bwe import metrics
from edgeaudio.plugins.bwe.data import (
    NARROW_RATE,
    SAMPLE_RATE,
    default_corpus,
    read_corpus,
    telephone_input,
    utterances,
)
from edgeaudio.plugins.bwe.train import TEST_PER_VOICE, TEST_SECONDS
from edgeaudio.runtime import stream_steps
from tqdm import tqdm

import edgeaudio
from _common import export_shipped

CHUNK = 1600  # 100 ms


def test_items() -> list[tuple[str, np.ndarray, np.ndarray]]:
    clips = [c for c in read_corpus(default_corpus()) if c.split == "test"]
    return [(voice, telephone_input(wide), wide) for voice, wide in utterances(clips, TEST_SECONDS, TEST_PER_VOICE)]


def score(items, outputs) -> dict[str, float]:
    rows = [metrics.all_metrics(wide, out) for (_, _, wide), out in zip(items, outputs)]
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


def baseline_row(items) -> dict:
    """The narrowband input itself, timed as the resampling that makes it from 8 kHz audio."""
    import soxr

    narrow8 = [soxr.resample(wide, SAMPLE_RATE, NARROW_RATE, quality="HQ") for _, _, wide in items]
    with Timer() as timer:
        for audio in narrow8:
            soxr.resample(audio, NARROW_RATE, SAMPLE_RATE, quality="HQ")
    audio_seconds = sum(len(n) for _, n, _ in items) / SAMPLE_RATE
    return {"system": "soxr HQ upsampling (baseline)", **score(items, [n for _, n, _ in items]),
            "session": timer.speed(audio_seconds), "stream": None}


def model_row(bundle: Path, backend: str, precision: str, items, threads: int) -> dict:
    session = edgeaudio.load(bundle, backend=backend, precision=precision, threads=threads)
    task = session.task
    session.process(items[0][1][:CHUNK], SAMPLE_RATE)  # warm-up: first-call allocations
    results = []
    with Timer() as clip_timer:
        for _, narrow, _ in tqdm(items, desc=f"{backend}/{precision}", leave=False):
            results.append(session.process(narrow, SAMPLE_RATE))
    outputs = [task.results_to_audio(r)[0] for r in results]
    audio_seconds = sum(len(n) for _, n, _ in items) / SAMPLE_RATE
    stream = session.stream()
    joined = np.concatenate([n for _, n, _ in items])[None]
    with Timer() as stream_timer:
        for step in stream_steps(stream, joined, CHUNK):
            step()
    return {"system": f"bwe {backend}/{precision}", **score(items, outputs),
            "session": clip_timer.speed(audio_seconds), "stream": stream_timer.speed(audio_seconds)}


class Timer:
    """Wall and process CPU seconds of a block; ``speed`` turns them into times real time."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def speed(self, audio_seconds: float) -> dict[str, float]:
        return {"wall": audio_seconds / self.wall, "cpu": audio_seconds / max(self.cpu, 1e-9)}


def table(rows: list[dict]) -> str:
    header = ("| system | LSD | LSD 4-8 kHz | PESQ-WB | SI-SDR (dB) | x real time, clip: wall (CPU) "
              "| x real time, 100 ms stream: wall (CPU) |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in rows:
        speeds = [f"{s['wall']:.0f} ({s['cpu']:.0f})" if s else "-" for s in (r["session"], r["stream"])]
        lines.append(f"| {r['system']} | {r['lsd']:.3f} | {r['lsd_extended']:.3f} | {r['pesq_wb']:.3f} | "
                     f"{r['si_sdr']:.2f} | {speeds[0]} | {speeds[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="threads per backend (default 1)")
    parser.add_argument("--bundle", type=Path, help="an exported bwe bundle (default: export the shipped weights)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    items = test_items()
    load = os.getloadavg()[0]
    print(f"{len(items)} held-out utterances of {TEST_SECONDS:.0f} s from {len({v for v, _, _ in items})} voices")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or export_shipped("bwe", Path(tmp) / "bwe")
        pairs = sorted(edgeaudio.load(bundle, backend="torch").bundle.artifacts())
        rows = [baseline_row(items)] + [model_row(bundle, b, p, items, args.threads) for b, p in pairs]
    print(table(rows))
    print(f"threads per backend: {args.threads}; {os.cpu_count()} CPUs, load average {load:.1f} at the start")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "items": len(items), "load_average": load,
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
