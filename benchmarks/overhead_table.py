"""The runtime's overhead over its backends for every task: the README's Performance figures.

    python benchmarks/overhead_table.py [--runs 5] [--tasks seld,enhance] [--work DIR]

Exports each task's shipped weights fp32 for x86-cpu (once, into ``--work``), writes the inputs
the table names (seld: the bundled 20 s scene; enhance and bwe: 12 s of the enhancement set's
noisy validation speech; caption: 10 s of the scene's first microphone; tta: a 5 s generation),
runs ``edgeaudio bench BUNDLE --threads 1 --json`` ``--runs`` times per task, one after the
other, and prints the README's table: each cell the median over the runs, and the two "x bare"
cells (whole clip, and streamed at the task's smallest chunk, decoding included) with their range.
Every run's ratio is measured side by side in one process; the range shows how far a single run
wanders on this machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from _common import EDGEAUDIO, ROOT, SCENE, export_shipped

TASKS = ("seld", "enhance", "bwe", "caption", "tta")
NOISY = ROOT / "plugins" / "enhance" / "validation" / "noisy"
CELLS = ("clip_ms", "overhead_clip", "chunk_ms", "p50_ms", "p99_ms", "overhead_stream", "rtf", "speedup_vs_torch", "peak_rss_mb")


def write_inputs(folder: Path) -> dict[str, list[str]]:
    """The bench options that give each task its input, the WAVs written into ``folder``."""
    from edgeaudio.audio.files import read_audio, write_audio

    speech, rate = [], 16000
    for path in sorted(NOISY.glob("*.wav")):
        audio, rate, _ = read_audio(path)
        speech.append(audio[0])
        if sum(len(part) for part in speech) >= 12 * rate:
            break
    noisy = folder / "noisy-speech-12s.wav"
    write_audio(noisy, np.concatenate(speech)[None, : 12 * rate], rate)
    scene, scene_rate, _ = read_audio(SCENE)
    first_mic = folder / "scene-mic1-10s.wav"
    write_audio(first_mic, scene[:1, : 10 * scene_rate], scene_rate)
    return {"seld": ["--input", str(SCENE)], "enhance": ["--input", str(noisy)], "bwe": ["--input", str(noisy)],
            "caption": ["--input", str(first_mic)], "tta": ["--seconds", "5"]}


def bench_once(bundle: Path, options: list[str]) -> dict[tuple[str, str], dict]:
    command = [*EDGEAUDIO, "bench", str(bundle), "--threads", "1", "--json", *options]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed (exit {done.returncode}):\n{done.stderr.strip()}")
    return {(row["backend"], row["precision"]): row for row in json.loads(done.stdout)["rows"]
            if row["backend"] in ("onnxruntime", "openvino") and not row.get("error")}


def _cell(values: list[float | None], digits: int, spread: bool = True) -> str:
    """The median of ``values``, with their range when ``spread`` and there are several."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    low, mid, high = min(values), float(np.median(values)), max(values)
    if not spread or len(values) == 1:
        return f"{mid:.{digits}f}"
    return f"{mid:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="bench runs per task (default 5)")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--work", type=Path, help="folder for the bundles and inputs (kept; default: a temporary one)")
    args = parser.parse_args()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or args.runs < 1:
        raise SystemExit(f"error: unknown task(s) {', '.join(unknown)}" if unknown else "error: --runs must be at least 1")
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        options = write_inputs(work)
        print("| task | backend | clip: ms | clip: x bare | chunk | p50 / p99 per chunk | streamed: x bare "
              "| RTF streamed | vs torch (clip) | peak RSS |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for task in tasks:
            bundle = work / f"{task}-fp32"
            if not (bundle / "manifest.json").is_file():
                print(f"exporting {task} (fp32, x86-cpu) ...", file=sys.stderr)
                export_shipped(task, bundle, precisions=["fp32"])
            runs = []
            for run in range(args.runs):
                print(f"{task}: bench run {run + 1}/{args.runs}", file=sys.stderr)
                runs.append(bench_once(bundle, options[task]))
            for key in sorted({key for rows in runs for key in rows}):
                cells = _row([rows[key] for rows in runs if key in rows], text=task == "tta")
                print(f"| {task} | {key[0]} | {cells} |", flush=True)


def _row(rows: list[dict], text: bool) -> str:
    """One backend's cells over its runs: medians, and the range of the two "x bare" ratios."""
    cells = {name: [row.get(name) for row in rows] for name in CELLS}
    streamed = cells["overhead_stream"][0] is not None
    chunk = f"{_cell(cells['chunk_ms'], 0, spread=False)} ms" if streamed else "(text)" if text else "(whole clips)"
    latency = f"{_cell(cells['p50_ms'], 2, spread=False)} / {_cell(cells['p99_ms'], 2, spread=False)} ms" if streamed else ""
    return " | ".join([
        _cell(cells["clip_ms"], 1, spread=False), _cell(cells["overhead_clip"], 2), chunk, latency,
        _cell(cells["overhead_stream"], 2) if streamed else "", _cell(cells["rtf"], 4, spread=False) if streamed else "",
        f"{_cell(cells['speedup_vs_torch'], 2, spread=False)}x", f"{_cell(cells['peak_rss_mb'], 0, spread=False)} MB",
    ])


if __name__ == "__main__":
    main()
