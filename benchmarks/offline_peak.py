"""Peak memory of a whole-file run: ``edgeaudio run BUNDLE -i FILE --offline`` on hours of audio.

    python benchmarks/offline_peak.py [--hours 1] [--bundle DIR] [--backend onnxruntime] [--work DIR]

Writes an N-hour 4-channel 16 kHz WAV by looping the bundled SELD scene (16-bit, written block by
block), runs ``edgeaudio run`` on it with ``--offline`` in a child process, and reports that
process's peak RSS (``getrusage`` of the children) and the result lines it printed. A task with a
streaming graph reads such a file in segments through one Stream, so the peak must not grow with
the file. Bundle: the shipped SELD model exported fp32 for this host, unless ``--bundle``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import EDGEAUDIO, SCENE, export_shipped


def write_looped(path: Path, hours: float) -> float:
    """The scene looped to ``hours`` into ``path``; its length in seconds."""
    import soundfile as sf

    scene, rate = sf.read(str(SCENE), dtype="float32", always_2d=True)
    total = int(hours * 3600 * rate)
    with sf.SoundFile(str(path), "w", rate, scene.shape[1], subtype="PCM_16") as out:
        written = 0
        while written < total:
            part = scene[: total - written]
            out.write(part)
            written += len(part)
    return total / rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=1.0, help="length of the file (default 1)")
    parser.add_argument("--bundle", type=Path, help="a SELD bundle (folder or .eab) for the respeaker-4mic array (default: exported here)")
    parser.add_argument("--backend", default="onnxruntime", help="backend to run on (default onnxruntime)")
    parser.add_argument("--work", type=Path, help="folder for the file and bundle (kept; default: a temporary one)")
    args = parser.parse_args()
    if not 0 < args.hours <= 24:
        raise SystemExit("error: --hours must be above 0 and at most 24")
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        bundle = args.bundle or work / "seld-fp32"
        if args.bundle is None and not (bundle / "manifest.json").is_file():
            print("exporting seld (fp32, x86-cpu) ...", file=sys.stderr)
            export_shipped("seld", bundle, precisions=["fp32"])
        audio = work / f"scene-looped-{args.hours:g}h.wav"
        seconds = write_looped(audio, args.hours)
        command = [*EDGEAUDIO, "run", str(bundle), "-i", str(audio), "--offline", "--backend", args.backend]
        started = time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"error: {' '.join(command)} failed (exit {done.returncode}):\n{done.stderr.strip()}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        lines = done.stdout.count("\n")
        print(f"{seconds / 3600:g} h of 4-channel audio, {args.backend}: peak RSS {peak:.0f} MB, "
              f"{lines} result lines, {wall:.0f} s")


if __name__ == "__main__":
    main()
