"""SELD on held-out synthesized scenes: the shipped model(s) against SRP-PHAT.

    python benchmarks/seld_eval.py [--threads 1] [--json seld_eval.json] [--arrays A,B]
                                   [--data-dir ARRAY=DIR] [--weights LABEL=PATH] [--no-srp]

For every array with shipped weights (``plugins/seld/weights/seld-<array>.safetensors``) the
held-out set is the one its training run scored: the sidecar's ``data`` says how many scenes and
which seed, and the scenes are rendered from the built-in library's held-out recordings (the
seed-0 split by recording, so no test recording was heard in training). They are synthesized
once into the cache (deterministic: the same scenes bit for bit as the training run's test
folder) unless ``--data-dir ARRAY=DIR`` points at a folder that already holds them.

Rows, all scored by the plugin's DCASE 2022/23 metric code (1 s segments, 20 degree threshold):

- the shipped model for the array, run offline in torch on each whole 10 s scene;
- ``--weights LABEL=PATH`` adds another weights file for comparison (its sidecar names the array);
- SRP-PHAT (``pyroomacoustics.doa``, see ``edgeaudio.plugins.seld.srp``) with **oracle
  detection**: it is told which classes are active in every frame and only has to find where.
  Its ER20 and F20 measure localization alone; compare its LE and LR with the model's.

Columns: ER20, F20, LE (macro over classes; DCASE books a class that occurs but is never
detected at 180 degrees), LR, SELD, and LE_micro (the mean over every matched track: how far
off the detected events are). The JSON adds the frame-based scores and class-wise values, and
each held-out set's content sha256 (audio and labels), printed under the table too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

from edgeaudio.fingerprint import content_hash
from edgeaudio.plugins.seld.task import WEIGHTS_DIR, SeldTask, label_scores, seld_scores

COLUMNS = ("ER20", "F20", "LE", "LR", "SELD", "LE_micro")


def heldout_folder(array: str, sidecar: dict, data_dir: str | None) -> Path:
    """The held-out scenes of a training run's sidecar, synthesized into the cache if missing."""
    from edgeaudio.cache import cache_root
    from edgeaudio.events.build_library import edition_of
    from edgeaudio.plugins.seld.train import open_library, scene_config, split_library, synthesize
    from edgeaudio.profiles import get_array

    data = sidecar["data"]
    if data.get("source") != "synthesized":
        raise SystemExit(f"{array}: the weights were trained on {data.get('source')}; pass --data-dir {array}=DIR")
    seed, scenes, scene_seed = sidecar["seed"], data["test_scenes"], data["test_scene_seed"]
    key = hashlib.sha256(json.dumps([array, sidecar["classes"], seed, scenes, scene_seed]).encode()).hexdigest()[:10]
    folder = Path(data_dir) if data_dir else cache_root() / "seld" / f"heldout-{array}-{key}"
    library = split_library(open_library(None, sidecar["classes"], edition=edition_of(sidecar)), seed)[1]
    positions = get_array(array, live_devices=[])[0].positions
    synthesize(folder, scene_config(scene_seed), library, positions, scenes, progress=False)
    return folder


def model_scores(task: SeldTask, weights: Path, recordings) -> dict:
    import torch

    from edgeaudio.training import load_weights

    model = task.build_model()
    load_weights(model, weights)
    model.eval()
    items = []
    with torch.no_grad():
        for recording in recordings:
            accdoa = model.offline(torch.from_numpy(recording.audio[None]))[0].numpy()
            items.append((accdoa, recording.label_set()))
    return seld_scores(items, len(task.classes))


def srp_scores(task: SeldTask, recordings) -> dict:
    from edgeaudio.plugins.seld.srp import SrpPhat

    srp = SrpPhat(task.array_profile().positions, sample_rate=task.sample_rate)
    pairs = []
    for recording in recordings:
        references = recording.label_set()
        pairs.append((srp.labels(recording.audio, references), references))
    return label_scores(pairs, len(task.classes))


def shipped_arrays() -> list[str]:
    return sorted(p.stem.removeprefix("seld-") for p in WEIGHTS_DIR.glob("seld-*.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arrays", help="comma-separated arrays (default: every array with shipped weights)")
    parser.add_argument("--data-dir", action="append", default=[], metavar="ARRAY=DIR",
                        help="a folder holding (or to receive) that array's held-out scenes")
    parser.add_argument("--weights", action="append", default=[], metavar="LABEL=PATH",
                        help="another .safetensors (with its .json sidecar) to score on its array's held-out set")
    parser.add_argument("--no-srp", action="store_true", help="skip the SRP-PHAT rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", help="write every score here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from edgeaudio.plugins.seld.data import read_folder

    data_dirs = dict(item.split("=", 1) for item in args.data_dir)
    runs = [(array, "shipped", WEIGHTS_DIR / f"seld-{array}.safetensors")
            for array in (args.arrays.split(",") if args.arrays else shipped_arrays())]
    for item in args.weights:
        label, path = item.split("=", 1)
        runs.append((json.loads(Path(path).with_suffix(".json").read_text())["array"], label, Path(path)))

    results, recordings_of = [], {}
    for array, label, weights in runs:
        sidecar = json.loads(weights.with_suffix(".json").read_text())
        task = SeldTask({**sidecar["config"], "array": array, "classes": sidecar["classes"]})
        if array not in recordings_of:
            folder = heldout_folder(array, sidecar, data_dirs.get(array))
            recordings_of[array] = (folder, read_folder(folder, task.sample_rate)[0])
            if not args.no_srp:
                started = time.perf_counter()
                scores = srp_scores(task, recordings_of[array][1])
                results.append({"array": array, "method": "SRP-PHAT, oracle detection", "weights": None,
                                "seconds": round(time.perf_counter() - started, 1), "scores": scores})
        folder, recordings = recordings_of[array]
        started = time.perf_counter()
        scores = model_scores(task, weights, recordings)
        results.append({"array": array, "method": f"SELD model ({label} weights)", "weights": str(weights),
                        "epochs": len(sidecar.get("training", {}).get("history", [])) or None,
                        "seconds": round(time.perf_counter() - started, 1), "scores": scores,
                        "sidecar_heldout": sidecar.get("metrics", {}).get("heldout")})
        for result in results:
            if result["array"] == array:
                result.setdefault("data", {"folder": str(folder), "scenes": len(recordings),
                                           "sha256": content_hash([(r.audio, r.label_set()) for r in recordings])})

    print("| array | method | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for result in sorted(results, key=lambda r: (r["array"], r["weights"] is None)):
        s = result["scores"]
        cells = [f"{s['ER20']:.3f}", f"{s['F20']:.3f}", f"{s['LE']:.1f} deg", f"{s['LR']:.3f}", f"{s['SELD']:.3f}",
                 f"{s['LE_micro']:.1f} deg"]
        print(f"| {result['array']} | {result['method']} | " + " | ".join(cells) + " |")
    for array, data in {r["array"]: r["data"] for r in results}.items():
        print(f"{array}: {data['scenes']} held-out scenes, content sha256 {data['sha256'][:16]}")
    print("\nSRP-PHAT is told the active classes of every frame (oracle detection): its ER20/F20 are "
          "localization-only; LE counts a class never detected as 180 deg (DCASE macro), LE_micro "
          "averages over the matched tracks.")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "columns": COLUMNS}, indent=1) + "\n")
        print(f"scores: {args.json}")


if __name__ == "__main__":
    main()
