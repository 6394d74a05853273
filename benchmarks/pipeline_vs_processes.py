"""The home-monitor pipeline on one core, against the same three tasks as three `edgeaudio run`s.

    python benchmarks/pipeline_vs_processes.py [--minutes 3] [--cpu 0] [--backend onnxruntime] [--json out.json]

Input: the shipped 20 s ReSpeaker 4-mic scene (``examples/scenes/respeaker-4mic-scene.wav``)
looped to ``--minutes`` and written as a 4-channel WAV that names its array, as a capture would.
Every command runs as its own process pinned to one core (``sched_setaffinity``, as ``taskset -c
CPU``), measured by the kernel when it exits (``wait4``): CPU time (user + system) and peak RSS,
start-up, imports and model loading included. Each stage's real-time factor (model, decode and
output, per second of its input) and latency from capture to result come from the run's own
``--json`` summary.

Rows:

- pipeline, real time: ``edgeaudio run examples/pipelines/home-monitor.yaml --input LONG.wav
  --realtime``, the file delivered at the pace of a device, so the drop policies apply and the
  latencies are those of a live run (a result's wait for the other stages on the one core
  included). The shipped spec gives every stage ``threads: 1``; the same spec without it (each
  model on the backend's default threads) runs too, because between calls an ONNX Runtime thread
  pool spins, which on one core costs CPU;
- pipeline, full speed: the same specs reading the file as fast as the stages take it;
- three processes: ``edgeaudio run seld --input LONG.wav``, ``edgeaudio run enhance --input
  MIC0.wav -o enhanced.wav`` (channel 0 of the scene) and ``edgeaudio run caption --input
  enhanced.wav --every 5``, one after another at full speed, on the backend's default threads
  (``edgeaudio run`` has no thread option). Their CPU times and their peak RSS add up (three
  processes listening at once hold all three in memory).

The pipeline's results are checked against the three processes' (SELD frames and captions as
JSON, the enhanced audio sample for sample) and the benchmark says whether they are equal. The
default bundles are exported (into ``EDGEAUDIO_CACHE``) before anything is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import EDGEAUDIO, ROOT, SCENE

SPEC = ROOT / "examples" / "pipelines" / "home-monitor.yaml"
ARRAY = "respeaker-4mic"


def long_scene(minutes: float, folder: Path) -> tuple[Path, Path, float]:
    """The scene looped to ``minutes`` (4 channels, its array named) and its channel 0 alone."""
    import soundfile as sf

    from edgeaudio.audio.recording_array import write_tagged

    audio, rate = sf.read(str(SCENE), dtype="int16")
    repeats = max(1, round(minutes * 60 * rate / len(audio)))
    looped = np.tile(audio, (repeats, 1))
    scene = write_tagged(folder / "long-scene.wav", looped.T, rate, ARRAY)
    mic0 = folder / "long-mic0.wav"
    sf.write(str(mic0), looped[:, 0].astype(np.float32) / 32768, rate, subtype="FLOAT")
    return scene, mic0, len(looped) / rate


def measured(command: list[str], cpu: int, cwd: Path) -> dict:
    """Run ``command`` in ``cwd`` pinned to core ``cpu``; its summary (the last line it prints)
    and the kernel's account of its wall time, CPU time and peak RSS."""
    out, err = cwd / "stdout.txt", cwd / "stderr.txt"
    started = time.monotonic()
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen(command, cwd=cwd, stdout=stdout, stderr=stderr,
                                   preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{err.read_text()[-3000:]}")
    return {
        "command": " ".join(command),
        "wall_s": round(time.monotonic() - started, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "summary": json.loads(out.read_text().splitlines()[-1])["summary"],
    }


def warm_up(backend: str) -> None:
    """Export the default bundles once, before anything is measured."""
    from edgeaudio.api import open_session

    for task, array in (("seld", ARRAY), ("enhance", None), ("caption", None)):
        open_session(task, backend=backend, precision="fp32", array=array, log=lambda message: None)


def run_all(minutes: float, cpu: int, backend: str, folder: Path) -> dict:
    scene, mic0, seconds = long_scene(minutes, folder)
    print(f"input: {scene.name}, {seconds:.0f} s, 4 channels at 16 kHz; pinned to core {cpu}; backend {backend}",
          file=sys.stderr)
    warm_up(backend)
    common = ["--backend", backend, "--precision", "fp32", "--json"]
    specs = {"threads_1": SPEC, "default_threads": default_threads_spec(folder)}
    runs = {}
    for name, spec, extra in (("pipeline_realtime", "threads_1", ["--realtime"]),
                              ("pipeline_realtime_default_threads", "default_threads", ["--realtime"]),
                              ("pipeline_full_speed", "threads_1", []),
                              ("pipeline_full_speed_default_threads", "default_threads", [])):
        work = folder / name
        work.mkdir()
        print(f"running {name} ...", file=sys.stderr)
        command = EDGEAUDIO + ["run", str(specs[spec]), "--input", str(scene), "-o", "stream.jsonl", *extra, *common]
        runs[name] = measured(command, cpu, work)
    work = folder / "processes"
    work.mkdir()
    print("running the three processes ...", file=sys.stderr)
    runs["processes"] = {
        "seld": measured(EDGEAUDIO + ["run", "seld", "--input", str(scene), "-o", "seld.jsonl", *common], cpu, work),
        "enhance": measured(EDGEAUDIO + ["run", "enhance", "--input", str(mic0), "-o", "enhanced.wav", *common], cpu, work),
        "caption": measured(EDGEAUDIO + ["run", "caption", "--input", "enhanced.wav", "--every", "5", "-o", "captions.jsonl",
                                         *common], cpu, work),
    }  # fmt: skip
    same = {run: same_results(folder / run, work) for run in runs if run.startswith("pipeline")}
    return {"audio_seconds": seconds, "cpu": cpu, "backend": backend, "machine": machine(), "runs": runs,
            "same_results": same}  # fmt: skip


def default_threads_spec(folder: Path) -> Path:
    """The shipped spec without its per-stage ``threads: 1``: each model on the backend's
    default threads, as `edgeaudio run` (which has no thread option) runs it."""
    import yaml

    spec = yaml.safe_load(SPEC.read_text())
    for stage in spec["stages"].values():
        stage.pop("threads", None)
    path = folder / "home-monitor-default-threads.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def same_results(piped: Path, alone: Path) -> dict[str, bool]:
    """Whether each stage's results in the pipeline equal its process's on the same input."""
    import soundfile as sf

    stream = [json.loads(line) for line in (piped / "stream.jsonl").read_text().splitlines()]

    def lines(path: Path) -> list:
        return [json.loads(line) for line in path.read_text().splitlines()]

    enhanced_piped, _ = sf.read(str(piped / "home-monitor-enhanced.wav"), dtype="float32")
    enhanced_alone, _ = sf.read(str(alone / "enhanced.wav"), dtype="float32")
    return {
        "seld": [r["result"] for r in stream if r["stage"] == "seld"] == lines(alone / "seld.jsonl"),
        "enhance": enhanced_piped.shape == enhanced_alone.shape and bool(np.array_equal(enhanced_piped, enhanced_alone)),
        "caption": [r["result"] for r in stream if r["stage"] == "caption"] == lines(alone / "captions.jsonl"),
    }


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    return f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def latency(summary: dict) -> str:
    ms = summary["latency_ms"]
    return f"{ms['p50']:.1f} / {ms['p95']:.1f} / {ms['max']:.1f}" if ms else "-"


def tables(report: dict) -> str:
    runs, audio = report["runs"], report["audio_seconds"]
    processes = runs["processes"]
    rows = ["| setup, one core | wall s | CPU s | CPU s per audio s | peak RSS MB | drops | fell behind |",
            "|---|---|---|---|---|---|---|"]
    for name, label in (("pipeline_realtime", "pipeline, real time (`--realtime`), `threads: 1` per stage (as shipped)"),
                        ("pipeline_realtime_default_threads", "pipeline, real time, backend's default threads"),
                        ("pipeline_full_speed", "pipeline, file at full speed, `threads: 1`"),
                        ("pipeline_full_speed_default_threads", "pipeline, file at full speed, default threads")):
        run = runs[name]
        summary = run["summary"]
        drops = summary["drops"] + summary["capture"]["dropped_samples"]
        rows.append(f"| {label} | {run['wall_s']:.1f} | {run['cpu_s']:.1f} | {run['cpu_s'] / audio:.4f} | "
                    f"{run['peak_rss_mb']:.0f} | {drops} | {'yes' if summary['fell_behind'] else 'no'} |")
    wall, cpu = sum(p["wall_s"] for p in processes.values()), sum(p["cpu_s"] for p in processes.values())
    rss = sum(p["peak_rss_mb"] for p in processes.values())
    each = " + ".join(f"{p['peak_rss_mb']:.0f}" for p in processes.values())
    drops = sum(p["summary"]["dropped_samples"] for p in processes.values())
    rows.append(f"| three `edgeaudio run` processes, files at full speed, default threads | {wall:.1f} | {cpu:.1f} | "
                f"{cpu / audio:.4f} | {rss:.0f} ({each}) | {drops} | - |")
    stage_rows = ["| stage | pipeline, real time, `threads: 1`: RTF | latency p50 / p95 / max ms | "
                  "pipeline, real time, default threads: RTF | latency p50 / p95 / max ms | "
                  "process alone, full speed: RTF | latency p50 / p95 / max ms |", "|---|---|---|---|---|---|---|"]
    for stage in ("seld", "enhance", "caption"):
        live = runs["pipeline_realtime"]["summary"]["stages"][stage]
        spinning = runs["pipeline_realtime_default_threads"]["summary"]["stages"][stage]
        alone = processes[stage]["summary"]
        stage_rows.append(f"| {stage} | {live['processing_rtf']:.4f} | {latency(live)} | {spinning['processing_rtf']:.4f} | "
                          f"{latency(spinning)} | {alone['processing_rtf']:.4f} | {latency(alone)} |")
    same = ", ".join(f"{run}: " + ("all equal" if all(checks.values()) else f"DIFFER {checks}")
                     for run, checks in report["same_results"].items())
    return "\n".join([*rows, "", *stage_rows, "", f"results against the processes: {same}",
                      f"{audio:.0f} s of audio; {report['machine']}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the looped scene")
    parser.add_argument("--cpu", type=int, default=0, help="the core every process is pinned to")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--json", help="write the full report here")
    parser.add_argument("--keep", help="keep the inputs and outputs in this folder")
    args = parser.parse_args()
    if args.keep:
        folder = Path(args.keep)
        folder.mkdir(parents=True, exist_ok=False)
        report = run_all(args.minutes, args.cpu, args.backend, folder)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            report = run_all(args.minutes, args.cpu, args.backend, Path(scratch))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(tables(report))


if __name__ == "__main__":
    main()
