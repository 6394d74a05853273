"""Fine-tuning SELD to a new array with little data: from a shipped checkpoint against from scratch.

    python benchmarks/investigations/seld_finetune.py [--array respeaker-usb] [--init respeaker-4mic]
                                                      [--hours 0.5] [--epochs 30] [--threads 1] [--out DIR]

Both runs train the same network on the same ``--hours`` of scenes synthesized for ``--array``
from the built-in library's training recordings, for the same epochs with the same seed and
schedule, and are scored on the same 54 held-out scenes (held-out recordings). The only
difference: one starts from the shipped weights of ``--init`` (another array: its phase features
see a different geometry, so the directions must be relearned), the other from random weights.
This is ``edgeaudio train seld --init ...`` run twice; the scenes are synthesized once and shared.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgeaudio.plugins.seld.task import WEIGHTS_DIR, SeldTask, SeldTrainOptions
from edgeaudio.plugins.seld.train import train_seld

COLUMNS = ("ER20", "F20", "LE", "LR", "SELD", "LE_micro")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--array", default="respeaker-usb")
    parser.add_argument("--init", default="respeaker-4mic", help="array whose shipped weights to start from")
    parser.add_argument("--hours", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/seld-finetune")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    init = WEIGHTS_DIR / f"seld-{args.init}.safetensors"
    if not init.is_file():
        raise SystemExit(f"no shipped weights for {args.init} at {init}")
    out = Path(args.out)
    runs = {f"fine-tuned from {args.init}": (out / "finetuned", str(init)), "from scratch": (out / "scratch", None)}
    shared = out / "data"
    results = {}
    for label, (run_dir, start) in runs.items():
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "data").exists():
            shared.mkdir(parents=True, exist_ok=True)
            (run_dir / "data").symlink_to(shared.resolve(), target_is_directory=True)
        began = time.perf_counter()
        options = SeldTrainOptions(array=args.array, hours=args.hours, epochs=args.epochs, seed=0, init=start, test_scenes=54,
                                   lr=args.lr, threads=args.threads, workers=1, val_every=args.epochs)
        result = train_seld(SeldTask(), run_dir, options, log=lambda line: print(f"[{label}] {line}", flush=True))
        results[label] = {**result["metrics"], "train_seconds": round(time.perf_counter() - began, 1)}

    print(f"\n{args.array}: {args.hours} h of scenes, {args.epochs} epochs, 54 held-out scenes")
    print("| start | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for label, metrics in results.items():
        cells = [f"{metrics[c]:.1f} deg" if c.startswith("LE") else f"{metrics[c]:.3f}" for c in COLUMNS]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
