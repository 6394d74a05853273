"""Soak: hours of audio through one Stream in 20 ms chunks, as fast as it runs, watching memory.

    python benchmarks/soak.py [--hours 2] [--chunk-ms 20] [--tasks seld,enhance] [--backend onnxruntime]
                              [--threads 1] [--bundle TASK=DIR] [--json soak.json]

A board runs a stream for days, so a stream must hold only what decoding needs: its graph state,
less than one block of audio and the decoder's own carry (SELD's live tracks). This pushes real
audio, looped, through ``Session.stream()`` chunk by chunk with nothing held on the caller's side
(results are counted and dropped, as a sink would send them on): SELD the bundled 4-microphone
scene (``examples/scenes``, events in every second), enhancement its shipped noisy validation
clips. It reports the process's RSS (``/proc/self/status`` VmRSS) after 10 minutes of audio,
when every buffer and cache has reached its size, then every 10 minutes and at the end, with the
count of objects the garbage collector tracks. The growth from 10 minutes to the end is the
figure that matters; a stream that kept its outputs would grow by the audio it saw.

Each task runs in its own process, so one task's memory does not hide in the other's. Bundles:
the task's shipped model exported for this host (fp32, cached), or ``--bundle TASK=DIR``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from _common import ROOT, SCENE

CHECKPOINT_S = 600.0  # RSS is read every 10 minutes of audio, the first one after warm-up


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def task_audio(task: str) -> np.ndarray:
    """The real recording looped for ``task``, [channels, samples] at 16 kHz."""
    import soundfile as sf

    if task == "seld":
        audio, _ = sf.read(SCENE, dtype="float32", always_2d=True)
        return np.ascontiguousarray(audio.T)
    folder = ROOT / "plugins" / "enhance" / "validation" / "noisy"
    return np.concatenate([sf.read(path, dtype="float32")[0] for path in sorted(folder.glob("*.wav"))])[None]


def soak(task: str, bundle: str | None, backend: str, threads: int | None, hours: float, chunk_ms: float) -> dict:
    import edgeaudio
    from edgeaudio.api import open_session

    session = edgeaudio.load(bundle, backend=backend, threads=threads) if bundle else \
        open_session(task, backend=backend, threads=threads, log=lambda message: None)
    audio = task_audio(task)
    rate = session.sample_rate
    chunk = int(rate * chunk_ms / 1000)
    total = int(hours * 3600 * rate) // chunk * chunk
    stream = session.stream()
    checkpoints, results, done, position = [], 0, 0, 0
    next_check = int(CHECKPOINT_S * rate)
    started = time.perf_counter()
    while done < total:
        if position + chunk > audio.shape[1]:
            position = 0
        results += len(stream.accept(audio[:, position : position + chunk]))
        position += chunk
        done += chunk
        if done >= next_check or done >= total:
            gc.collect()
            checkpoints.append({"audio_minutes": round(done / rate / 60, 1), "rss_mb": round(rss_mb(), 1),
                                "gc_objects": len(gc.get_objects()), "wall_s": round(time.perf_counter() - started, 1)})
            next_check += int(CHECKPOINT_S * rate)
    results += len(stream.flush())
    first, last = checkpoints[0], checkpoints[-1]
    return {"task": task, "backend": session.backend, "precision": session.precision, "chunk_ms": chunk_ms,
            "audio_hours": round(done / rate / 3600, 3), "results": results, "wall_s": last["wall_s"],
            "rss_after_warmup_mb": first["rss_mb"], "rss_end_mb": last["rss_mb"],
            "rss_growth_mb": round(last["rss_mb"] - first["rss_mb"], 1),
            "gc_objects_growth": last["gc_objects"] - first["gc_objects"], "checkpoints": checkpoints}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--chunk-ms", type=float, default=20.0)
    parser.add_argument("--tasks", default="seld,enhance")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bundle", action="append", default=[], metavar="TASK=DIR")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    bundles = dict(item.split("=", 1) for item in args.bundle)
    rows = []
    for task in args.tasks.split(","):
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            rows.append(pool.submit(soak, task, bundles.get(task), args.backend, args.threads, args.hours,
                                    args.chunk_ms).result())
        row = rows[-1]
        print(f"{task}: {row['audio_hours']} h in {row['wall_s']:.0f} s, RSS after 10 min {row['rss_after_warmup_mb']} MB, "
              f"at the end {row['rss_end_mb']} MB ({row['rss_growth_mb']:+.1f} MB); "
              f"gc objects {row['gc_objects_growth']:+d}", flush=True)
    print("\n| task | backend | audio | chunk | RSS after 10 min | RSS at the end | growth | gc-tracked objects, growth |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['task']} | {row['backend']}/{row['precision']} | {row['audio_hours']} h | {row['chunk_ms']:.0f} ms | "
              f"{row['rss_after_warmup_mb']} MB | {row['rss_end_mb']} MB | {row['rss_growth_mb']:+.1f} MB | "
              f"{row['gc_objects_growth']:+d} |")
    if args.json:
        args.json.write_text(json.dumps({"host": os.uname().machine, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
