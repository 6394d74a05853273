"""Text-to-audio judged by an independent classifier: accuracy on prompted classes, Frechet
distance to real clips, diversity across seeds and real-time factor, per backend.

    python benchmarks/tta_eval.py [--per-class 4] [--seeds 4] [--accuracy-seeds 3] [--steps 8] [--candidates 1,4] [--threads 2] [--json tta.json] [--bundle DIR]

The judge (plugins/tta/weights/judge.safetensors) was trained only on real recordings of the
event library's training half; its accuracy on every held-out real recording is the ceiling.
For each backend x precision of the bundle (default: the shipped weights exported for this host,
fp32 and whatever INT8 passed the gate) and each ``--candidates`` setting (default: one
candidate, the generator alone, and the task's default, which keeps the best-ranked of several)
the generator makes:
- ``--per-class`` single-event prompts per class (each class's own phrasings, "a horn honks",
  "the sound of a car horn"), each with seeds 0 .. ``--accuracy-seeds`` - 1; accuracy = the
  judge's top-1 class is the prompted one, over all of them and over seed 0 alone (the number
  reported before there were more seeds; one seed makes a class's phrasings sound nearly alike,
  so it counts little more than one outcome per class);
- 20 two-event prompts ("a horn honks, then someone types"): both classes in the judge's top 3;
- Frechet distance from the single-event clips to the held-out real recordings, in the judge's
  embedding projected on the top 16 principal axes of the real training recordings (a few dozen
  clips cannot estimate a 128-d covariance), beside the same distance between the training-half
  and held-out real recordings;
- diversity: mean pairwise cosine distance between ``--seeds`` seeds of one prompt, per class,
  beside the same measure over different real recordings of one class;
- the judge's accuracy on the held-out real recordings resynthesized by the vocoder from their
  log-mel (what the representation and vocoder keep of the ceiling);
- the median wall time of one 5 s clip (text encoder + steps x flow + vocoder), and its RTF.
Prints the README table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import edgeaudio
from edgeaudio.events.build_library import edition_of
from edgeaudio.plugins.shared.event_library import open_library
from edgeaudio.plugins.tta.data import single_event_prompts, two_event_prompts
from edgeaudio.plugins.tta.judge import WEIGHTS as JUDGE
from edgeaudio.plugins.tta.judge import held_out_windows, judge_audio, load_judge
from edgeaudio.plugins.tta.metrics import frechet_distance, mean_pairwise_cosine_distance, principal_projection

from _common import export_shipped

PCA_DIMS = 16


def within_class_diversity(embeddings: np.ndarray, labels: list[str]) -> float:
    values = [mean_pairwise_cosine_distance(embeddings[[l == c for l in labels]]) for c in sorted(set(labels))
              if sum(l == c for l in labels) >= 2]  # fmt: skip
    return float(np.mean(values))


def vocoded_accuracy(bundle, judge, classes: list[str], audio: np.ndarray, labels: list[str]) -> float:
    """The judge's accuracy on real recordings resynthesized by the bundle's vocoder from their
    log-mel: how much of the ceiling the mel representation and the vocoder keep."""
    import torch

    from edgeaudio.plugins.tta.train import normalizer

    session = edgeaudio.load(bundle, backend="torch")
    to_mel = normalizer(session.task)
    vocoder = session.runner.graph("vocoder")
    with torch.inference_mode():
        mels = to_mel(torch.from_numpy(audio)).numpy()
    frames = mels.shape[2] // 4 * 4
    vocoded = np.concatenate([vocoder.run({"mel": np.ascontiguousarray(m[None, :, :frames])})["audio"][:, 0] for m in mels])
    probs, _ = judge_audio(judge, vocoded)
    return float(np.mean([classes[i] == label for i, label in zip(probs.argmax(1), labels)]))


def timed(session, steps: int, candidates: int, repeats: int = 5) -> float:
    session.generate("a horn honks twice", seconds=5.0, steps=steps, candidates=candidates)  # warm-up
    wall = []
    for seed in range(repeats):
        started = time.perf_counter()
        session.generate("a horn honks twice", seconds=5.0, steps=steps, seed=seed, candidates=candidates)
        wall.append(time.perf_counter() - started)
    return float(np.median(wall))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=4, help="single-event prompts per class (default 4)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per prompt for diversity (default 4)")
    parser.add_argument("--accuracy-seeds", type=int, default=3,
                        help="seeds per single-event prompt for the accuracy (default 3; one seed gives all phrasings "
                             "of a class nearly the same clip)")  # fmt: skip
    parser.add_argument("--steps", type=int, help="sampling steps (default: the task's, 8)")
    parser.add_argument("--candidates", help="comma-separated candidate counts, a row each (default: 1 and the task's)")
    parser.add_argument("--threads", type=int, default=2, help="threads per backend (default 2)")
    parser.add_argument("--bundle", type=Path, help="an exported tta bundle (default: export the shipped weights)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    judge, classes = load_judge()
    edition = edition_of(json.loads(JUDGE.with_suffix(".json").read_text()))  # the judge's own split
    real_test, real_labels = held_out_windows(open_library(held_out=True, edition=edition))
    real_train, train_labels = held_out_windows(open_library(held_out=False, edition=edition))
    test_probs, test_emb = judge_audio(judge, real_test)
    _, train_emb = judge_audio(judge, real_train)
    project = principal_projection(train_emb, PCA_DIMS)
    ceiling = float(np.mean([classes[i] == t for i, t in zip(test_probs.argmax(1), real_labels)]))
    reference = {"ceiling_accuracy": ceiling, "fd_real_train_vs_held_out": frechet_distance(project(train_emb), project(test_emb)),
                 "diversity_real_within_class": within_class_diversity(test_emb, real_labels)}  # fmt: skip
    print(f"judge on {len(real_test)} held-out real recordings: accuracy {ceiling:.3f}", flush=True)

    bundle = args.bundle
    if bundle is None:
        bundle = export_shipped("tta", Path(tempfile.mkdtemp(prefix="tta-bench-")) / "bundle", ["fp32", "int8"],
                                ["onnxruntime", "openvino"], log=lambda m: print(m, flush=True))  # fmt: skip
    reference["vocoded_real_accuracy"] = vocoded_accuracy(bundle, judge, classes, real_test, real_labels)
    print(f"judge on the same recordings through log-mel -> vocoder: {reference['vocoded_real_accuracy']:.3f}", flush=True)
    singles = single_event_prompts(classes, args.per_class)
    doubles = two_event_prompts(classes, 20, seed=5)
    rows = []
    reference_session = edgeaudio.load(bundle, backend="torch")
    default_candidates = reference_session.task.config.get("candidates", 1)
    counts = [int(c) for c in args.candidates.split(",")] if args.candidates else sorted({1, default_candidates})
    settings = [(b, p, n) for b, p in reference_session.bundle.artifacts() for n in counts]
    for backend, precision, candidates in settings:
        session = edgeaudio.load(bundle, backend=backend, precision=precision, threads=args.threads)
        steps = args.steps or session.task.config["steps"]
        make = lambda prompt, seed=0: session.generate(prompt, steps=steps, seed=seed, candidates=candidates)["audio"][0]  # noqa: E731
        seeded = [(p, label, s) for s in range(args.accuracy_seeds) for p, label in singles]
        probs, emb = judge_audio(judge, np.stack([make(p, s) for p, _, s in seeded]))
        hits = [classes[i] == label for i, (_, label, _) in zip(probs.argmax(1), seeded)]
        single, single_seed0 = float(np.mean(hits)), float(np.mean(hits[: len(singles)]))
        emb = emb[: len(singles)]  # the Frechet distance stays on the seed-0 clips
        heard: dict[str, list[str]] = {}  # prompted class -> what the judge heard, per clip
        for i, (_, label, _) in zip(probs.argmax(1), seeded):
            heard.setdefault(label, []).append(classes[i])
        top3 = np.argsort(-judge_audio(judge, np.stack([make(p) for p, _ in doubles]))[0], axis=1)[:, :3]
        double = float(np.mean([all(classes.index(c) in row for c in pair) for row, (_, pair) in zip(top3, doubles)]))
        per_seed = [judge_audio(judge, np.stack([make(prompt, s) for s in range(args.seeds)]))[1]
                    for prompt, _ in single_event_prompts(classes, 1)]  # fmt: skip
        diversity = float(np.mean([mean_pairwise_cosine_distance(e) for e in per_seed]))
        wall = timed(session, steps, candidates)
        rows.append({"system": f"{backend}/{precision}", "candidates": candidates, "single_event_accuracy": single,
                     "single_event_accuracy_seed_0": single_seed0, "two_event_top3": double,
                     "fd_to_real": frechet_distance(project(emb), project(test_emb)), "diversity": diversity,
                     "seconds_per_5s_clip": wall, "rtf": wall / 5.0, "steps": steps, "heard": heard})  # fmt: skip
        print(f"{backend}/{precision}, {candidates} candidate(s): single {single:.3f} (seed 0: {single_seed0:.3f}), two-event {double:.3f}, 5 s clip {wall:.3f} s", flush=True)
    print(f"\n{len(singles)} single-event prompts x seeds 0-{args.accuracy_seeds - 1} and {len(doubles)} two-event prompts (seed 0), "
          f"{args.threads} thread(s), {os.cpu_count()} CPUs")  # fmt: skip
    print(f"judge ceiling (held-out real recordings): {ceiling:.3f}; chance: {1 / len(classes):.3f}; "
          f"through the vocoder: {reference['vocoded_real_accuracy']:.3f}; "
          f"FD real train vs held-out: {reference['fd_real_train_vs_held_out']:.1f}; "
          f"real within-class diversity: {reference['diversity_real_within_class']:.3f}\n")  # fmt: skip
    for row in rows:
        if row["system"] == rows[0]["system"]:
            print(f"what the judge heard for each prompted class ({row['system']}, {row['candidates']} candidate(s)):")
            for label, got in row["heard"].items():
                print(f"  {label}: {sum(g == label for g in got)}/{len(got)}" + (f" (else {', '.join(g for g in got if g != label)})" if any(g != label for g in got) else ""))
    print()
    print("| system | candidates | single-event accuracy | seed 0 only | two-event, both in top 3 | FD to real | diversity across seeds | 5 s clip, s | RTF |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['system']} | {r['candidates']} | {r['single_event_accuracy']:.3f} | {r['single_event_accuracy_seed_0']:.3f} | {r['two_event_top3']:.3f} | {r['fd_to_real']:.1f} | "
              f"{r['diversity']:.3f} | {r['seconds_per_5s_clip']:.3f} | {r['rtf']:.3f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"reference": reference, "rows": rows, "threads": args.threads}, indent=1) + "\n")


if __name__ == "__main__":
    main()
