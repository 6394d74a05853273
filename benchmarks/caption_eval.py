"""Audio captioning on held-out synthesized scenes: the model beside a trivial baseline, and the
latency of captioning a 10 s clip on each backend.

    python benchmarks/caption_eval.py [--clips 100] [--beam 3] [--threads 1] [--json caption.json] [--bundle DIR] [--edition N]

The test clips are composed (seed 9001, a seed neither training nor validation uses) from the
held-out recordings of the event library edition the model trained on, so the model never heard
any sound in them. The
baseline always answers the most frequent reference caption of 1000 training-half clips. The
shipped weights are exported for this host (torch reference, ONNX Runtime and OpenVINO, fp32 and
whatever INT8 passed the CIDEr-D gate); each backend captions every clip through a Session with
the task's search (beam 3 with tag guidance; ``--beam 1`` is greedy), and ONNX Runtime fp32 once
more without tag guidance, to show what it adds. Latency is the median wall time of
``Session.process`` on one 10 s test clip (encoder + every decoder step + search), with its CPU
time beside it: on a shared machine wall time includes waiting for a core. Prints the README table,
then where event F1 is lost (per class, and by the number of classes in a clip). The clips'
content sha256 (audio, captions, labels) is printed with the table and kept in the JSON, so a
change of the test data shows instead of moving the figures silently.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

import edgeaudio
from edgeaudio.fingerprint import content_hash
from edgeaudio.plugins.caption.data import EVENT_KEYWORDS, synthesize_set
from edgeaudio.plugins.caption.metrics import caption_scores, event_scores, mentioned_classes
from edgeaudio.plugins.caption.train import open_library

from _common import export_shipped

TEST_SEED = 9001
COLUMNS = ("bleu_1", "bleu_4", "rouge_l", "cider_d", "event_precision", "event_recall", "event_f1")


def scores(captions: list[str], clips) -> dict[str, float]:
    return {**caption_scores(captions, [c.captions for c in clips]),
            **event_scores(captions, [c.labels for c in clips], EVENT_KEYWORDS)}  # fmt: skip


def event_errors(captions: list[str], clips) -> str:
    """Where event F1 is lost: per class, the events named / missed and the classes named that were
    not there; and the share of events named by how many classes the clip holds."""
    found, missed, false = Counter(), Counter(), Counter()
    by_count: dict[int, list[int]] = {}
    for caption, clip in zip(captions, clips):
        named, truth = mentioned_classes(caption, EVENT_KEYWORDS), set(clip.labels)
        found.update(named & truth)
        missed.update(truth - named)
        false.update(named - truth)
        tally = by_count.setdefault(len(truth), [0, 0])
        tally[0], tally[1] = tally[0] + len(named & truth), tally[1] + len(truth)
    lines = ["| class | named | missed | named but absent |", "|---|---|---|---|"]
    lines += [f"| {c} | {found[c]} | {missed[c]} | {false[c]} |" for c in sorted(EVENT_KEYWORDS)]
    shares = ", ".join(f"{n} class{'es' if n > 1 else ''}: {hit / total:.2f}" for n, (hit, total) in sorted(by_count.items()))
    return "\n".join(lines) + f"\n\nshare of events named, by classes in the clip: {shares}"


def most_frequent_caption(edition: int) -> str:
    train = synthesize_set(open_library(held_out=False, edition=edition), 1000, seed=TEST_SEED + 1)
    return Counter(c for clip in train for c in clip.captions).most_common(1)[0][0]


def timed(session, audio: np.ndarray, repeats: int = 7) -> tuple[float, float]:
    session.process(audio, 16000)  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        session.process(audio, 16000)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return 1000 * float(np.median(wall)), 1000 * float(np.median(cpu))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=100, help="held-out test clips (default 100)")
    parser.add_argument("--beam", type=int, help="hypotheses of the beam search (default: the task's, 3); 1 is greedy")
    parser.add_argument("--threads", type=int, default=1, help="threads per backend (default 1)")
    parser.add_argument("--bundle", type=Path, help="an exported caption bundle (default: export the shipped weights)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--edition", type=int, help="compose the clips from this event library edition's held-out "
                        "recordings instead of the model's own (they may include recordings it trained on)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    bundle = args.bundle
    if bundle is None:
        bundle = export_shipped("caption", Path(tempfile.mkdtemp(prefix="caption-bench-")) / "bundle", ["fp32", "int8"],
                                ["onnxruntime", "openvino"], log=lambda m: print(m, flush=True))  # fmt: skip
    edition = args.edition or edgeaudio.load(bundle, backend="torch").task.config.get("library_edition", 1)
    clips = synthesize_set(open_library(held_out=True, edition=edition), args.clips, seed=TEST_SEED)
    baseline = most_frequent_caption(edition)
    rows = [{"system": f'baseline: always "{baseline}"', **scores([baseline] * len(clips), clips)}]
    reference_captions = None
    for backend, precision in edgeaudio.load(bundle, backend="torch").bundle.artifacts():
        session = edgeaudio.load(bundle, backend=backend, precision=precision, threads=args.threads)
        if args.beam:
            session.task.config["beam"] = args.beam
        captions = [session.process(c.audio, 16000)["caption"] for c in clips]
        wall, cpu = timed(session, clips[0].audio)
        rows.append({"system": f"{backend}/{precision}", **scores(captions, clips), "latency_ms": wall, "cpu_ms": cpu,
                     "example": captions[0], "reference": clips[0].captions[0]})  # fmt: skip
        reference_captions = reference_captions or captions
        print(f"{backend}/{precision}: {captions[0]!r} (ref {clips[0].captions[0]!r})", flush=True)
    if session.task.config.get("tag_guidance"):
        session = edgeaudio.load(bundle, backend="onnxruntime", precision="fp32", threads=args.threads)
        session.task.config.update(tag_guidance=0.0, **({"beam": args.beam} if args.beam else {}))
        captions = [session.process(c.audio, 16000)["caption"] for c in clips]
        wall, cpu = timed(session, clips[0].audio)
        rows.append({"system": "onnxruntime/fp32 without tag guidance", **scores(captions, clips), "latency_ms": wall, "cpu_ms": cpu})
    beam = session.task.config["beam"]
    data_sha256 = content_hash(clips)
    print(f"\n{args.clips} held-out clips of 10 s (event library edition {edition}, content sha256 {data_sha256[:16]}), "
          f"beam {beam}, {args.threads} thread(s), {os.cpu_count()} CPUs\n")
    print("| system | " + " | ".join(COLUMNS) + " | 10 s clip, ms (CPU ms) |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for row in rows:
        latency = f"{row['latency_ms']:.1f} ({row['cpu_ms']:.1f})" if "latency_ms" in row else "-"
        print(f"| {row['system']} | " + " | ".join(f"{row[k]:.3f}" for k in COLUMNS) + f" | {latency} |")
    print(f"\nevent errors of {rows[1]['system']}:\n\n{event_errors(reference_captions, clips)}")
    if args.json:
        args.json.write_text(json.dumps({"clips": args.clips, "clips_sha256": data_sha256, "library_edition": edition, "beam": beam,
                                         "threads": args.threads, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
