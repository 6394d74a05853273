"""Side-by-side benchmark of one bundle on every backend x precision in one process.

Timings on shared machines are noisy, so the report leads with ratios against torch eager
measured in the same run. Peak memory is the process's RSS high-water mark, reset before each
backend where Linux allows it (``/proc/self/clear_refs``).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeaudio.bundle import load_bundle
from edgeaudio.errors import BackendUnavailable, UsageError
from edgeaudio.runtime import load
from edgeaudio.task import InputKind

BENCH_PROMPT = "a horn honks twice, then someone types"  # what text-to-audio bundles generate when timed


@dataclass
class BenchRow:
    backend: str
    precision: str
    load_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    chunk_ms: float = 0.0
    rtf: float = 0.0
    peak_rss_mb: float = 0.0
    parity_max_abs: float | None = None
    speedup_vs_torch: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_audio(channels: int, sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Deterministic test signal: tones plus noise, so every backend sees the same input."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = 0.2 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 0.5 * t))
    return (tone[None, :] + 0.05 * rng.standard_normal((channels, t.size))).astype(np.float32)


def _whole_clips(session) -> bool:
    """Whether the bundle is timed a whole clip per call: no streaming graph, or text input."""
    return session.task.input_kind is InputKind.TEXT or not session.streaming


def _measure(session, audio: np.ndarray, chunk: int, warmup: int) -> tuple[list[float], dict[str, np.ndarray]]:
    """Per-chunk latencies through a Stream, or whole-clip timings for tasks without a streaming
    graph; text-to-audio tasks generate clips as long as ``audio`` from a fixed prompt and seed."""
    task = session.task
    if _whole_clips(session):
        seconds = audio.shape[1] / task.sample_rate
        times = []
        for _ in range(warmup + 3):
            start = time.perf_counter()
            if task.input_kind is InputKind.TEXT:
                outputs = task.generate(session.runner, BENCH_PROMPT, seconds=seconds, seed=0)
            else:
                outputs = session.process_raw(audio, task.sample_rate)
            times.append(time.perf_counter() - start)
        return times[warmup:], outputs
    warm = session.stream()
    for offset in range(0, min(warmup * chunk, audio.shape[1]), chunk):
        warm.accept(audio[:, offset : offset + chunk])
    stream = session.stream()
    times = []
    for offset in range(0, audio.shape[1], chunk):
        start = time.perf_counter()
        stream.accept(audio[:, offset : offset + chunk])
        times.append(time.perf_counter() - start)
    stream.flush()
    return times, stream.outputs()


def _max_abs(reference: dict[str, Any], outputs: dict[str, Any]) -> float | None:
    """Largest difference over the numeric outputs both runs produced with the same shape."""
    errors = [
        float(np.max(np.abs(np.asarray(outputs[k], np.float64) - np.asarray(v, np.float64))))
        for k, v in reference.items()
        if k in outputs and np.asarray(v).dtype.kind in "fiu" and np.shape(outputs[k]) == np.shape(v) and np.size(v)
    ]
    return max(errors) if errors else None


def run_bench(
    bundle: str | Path,
    backends: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    seconds: float = 10.0,
    chunk_ms: float = 100.0,
    threads: int | None = None,
    validation: Any = None,
    warmup: int = 3,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Benchmark every (backend, precision) artifact of ``bundle``; torch first as the baseline."""
    loaded = load_bundle(bundle)
    pairs = list(loaded.artifacts())
    pairs.sort(key=lambda pair: pair[0] != "torch")
    if backends:
        pairs = [pair for pair in pairs if pair[0] in backends or pair[0] == "torch"]
    if precisions:
        pairs = [pair for pair in pairs if pair[1] in precisions or pair[0] == "torch"]
    rows: list[BenchRow] = []
    reference: dict[str, np.ndarray] | None = None
    audio = None
    resettable = _reset_peak_rss()
    for backend, precision in pairs:
        log(f"bench {backend}/{precision}")
        row = BenchRow(backend, precision)
        rows.append(row)
        _reset_peak_rss()
        try:
            session = load(loaded, backend=backend, precision=precision, threads=threads)
        except BackendUnavailable as exc:
            row.error = str(exc)
            continue
        task = session.task
        if audio is None:
            audio = bench_audio(task.channels, task.sample_rate, seconds)
        chunk = audio.shape[1] if _whole_clips(session) else _chunk_samples(session, chunk_ms)
        row.load_s = session.load_seconds
        times, outputs = _measure(session, audio, chunk, warmup)
        row.chunk_ms = 1000 * chunk / task.sample_rate
        row.p50_ms = 1000 * float(np.percentile(times, 50))
        row.p95_ms = 1000 * float(np.percentile(times, 95))
        # streamed: compute over the whole audio; whole clips: the median call over one clip
        row.rtf = row.p50_ms / 1000 / seconds if _whole_clips(session) else float(np.sum(times)) / seconds
        if reference is None:
            reference = outputs
        else:
            row.parity_max_abs = _max_abs(reference, outputs)
        if validation is not None:
            row.metrics = task.evaluate(session.runner, validation)
        row.peak_rss_mb = _peak_rss_mb()
        del session
    torch_row = next((r for r in rows if r.backend == "torch" and not r.error), None)
    for row in rows:
        if torch_row and not row.error and row.p50_ms > 0:
            row.speedup_vs_torch = torch_row.p50_ms / row.p50_ms
    return {
        "bundle": str(loaded.root),
        "task": loaded.task_name,
        "bundle_size_mb": loaded.size_bytes() / 1e6,
        "audio_seconds": seconds,
        "threads": threads or os.cpu_count(),
        "peak_rss_reset_per_backend": resettable,
        "rows": [asdict(r) for r in rows],
    }


def _chunk_samples(session, chunk_ms: float) -> int:
    """``chunk_ms`` of audio rounded to whole streaming blocks (at least one)."""
    wanted = int(session.task.sample_rate * chunk_ms / 1000)
    try:
        block = session.runner.streaming_graph().streaming.block
    except UsageError:
        return max(wanted, 1)
    return max(block, (wanted // block) * block)
