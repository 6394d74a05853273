"""Why generated mels were noisy: the noise a flow network without a detail head can never move.

    python benchmarks/investigations/tta_residual_noise.py [--weights FILE] [--per-class 2] [--seeds 2]

The flow network's output layer maps its width (192) to a 4-frame patch of 64 mel bands (256
values), so without the detail head each patch's velocity lies in a subspace of at most width + 1
dimensions: the part of the starting noise outside it stays in the sample untouched, whatever the
steps or guidance. The detail head (model.FlowNet) gives the velocity full rank. This script
measures either kind of checkpoint (default: the shipped weights; stage 3, which had no detail
head: ``git show f2f127e:plugins/tta/weights/tta.safetensors > stage3.safetensors``) on
validation prompts (seeds 9001+, OpenVINO):

- the rank of the output layer against the patch size;
- the flow loss on 100 held-out composed clips (fixed noise and flow times) and the share of its
  error that lies outside the output layer's span;
- mean frame-to-frame change of the normalised log-mel ("jitter") of composed training clips and
  of generated mels, as sampled and (without a detail head) with the untouched part of the
  starting noise removed;
- the judge's accuracy on those generated clips.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def patch_projector(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, int]:
    """Orthogonal projector [patch, patch] onto the span of the output layer's columns and bias."""
    basis, values, _ = np.linalg.svd(np.concatenate([weight, bias[:, None]], axis=1), full_matrices=False)
    rank = int((values > values[0] * 1e-6).sum())
    return (basis[:, :rank] @ basis[:, :rank].T).astype(np.float32), rank


def untouched_part(noise: np.ndarray, projector: np.ndarray, patch: int) -> np.ndarray:
    """The part of noise [1, mels, frames] outside the projector's span, patch by patch."""
    _, mels, frames = noise.shape
    patches = noise[0].reshape(mels, frames // patch, patch).transpose(1, 0, 2).reshape(frames // patch, mels * patch)
    outside = patches - patches @ projector
    return outside.reshape(frames // patch, mels, patch).transpose(1, 0, 2).reshape(1, mels, frames)


def jitter(mel: np.ndarray) -> float:
    return float(np.abs(np.diff(mel, axis=-1)).mean())


def main() -> None:
    import torch
    from safetensors.torch import load_file

    import edgeaudio
    import edgeaudio.plugins.tta.sampler as sampler
    from edgeaudio.events.build_library import edition_of
    from edgeaudio.exporters.pipeline import export_task, plan_export
    from edgeaudio.plugins.shared.event_library import open_library
    from edgeaudio.plugins.tta.data import compose_set, single_event_prompts
    from edgeaudio.plugins.tta.judge import WEIGHTS as JUDGE
    from edgeaudio.plugins.tta.judge import judge_audio, load_judge
    from edgeaudio.plugins.tta.model import PATCH
    from edgeaudio.plugins.tta.task import WEIGHTS
    from edgeaudio.plugins.tta.train import _mel_corpus, flow_error, normalizer, pad_tokens
    from edgeaudio.tasks import get_task
    from edgeaudio.training import load_weights

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="a tta checkpoint (default: the shipped one)")
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--guidance", type=float, help="classifier-free guidance (default: the task's)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    weights = load_file(args.weights)
    detail = weights["flow.detail.0.weight"].shape[0] if "flow.detail.0.weight" in weights else 0
    projector, rank = patch_projector(weights["flow.patch_out.weight"].float().numpy(), weights["flow.patch_out.bias"].float().numpy())
    print(f"output layer: rank {rank} of a {projector.shape[0]}-value patch; " +
          (f"the detail head ({detail} wide) gives the velocity full rank" if detail else
           f"{projector.shape[0] - rank} dimensions per patch never move"))  # fmt: skip

    task = get_task("tta", {"flow_detail": detail})
    net = task.build_model()
    load_weights(net, args.weights)
    to_mel = normalizer(task)
    edition = edition_of(json.loads(JUDGE.with_suffix(".json").read_text()))  # the judge's and generator's split
    mels, prompts, _ = _mel_corpus(task, open_library(held_out=True, edition=edition).root, 100, 77, True, lambda m: None)
    mels = (mels - task.config["mel_mean"]) / task.config["mel_std"]
    vocab, length = task.vocabulary, task.config["max_tokens"]
    tokens = torch.tensor([pad_tokens(vocab.encode(p[0], length), length, vocab.pad) for p in prompts])
    with torch.no_grad():  # the same noise and flow times for every checkpoint
        error = flow_error(net.text, net.flow, mels, tokens, vocab.pad, torch.Generator().manual_seed(0))[0].numpy()
    outside = np.concatenate([untouched_part(e[None], projector, PATCH) for e in error])
    print(f"flow loss on 100 held-out clips: {float(np.mean(error**2)):.3f}; share of its error outside the output "
          f"layer's span: {float((outside**2).sum() / (error**2).sum()):.2f}")  # fmt: skip
    clips = compose_set(open_library(held_out=False, edition=edition), 100, seed=77)
    with torch.inference_mode():
        data = to_mel(torch.from_numpy(np.stack([c.audio for c in clips]))).numpy()
    print(f"composed training clips: jitter {jitter(data):.3f}")

    plan, _ = plan_export("x86-cpu", ["fp32"], ["openvino"])
    bundle = Path(tempfile.mkdtemp(prefix="tta-noise-")) / "bundle"
    export_task(task, plan, bundle, checkpoint=str(args.weights), log=lambda m: None)
    session = edgeaudio.load(bundle, backend="openvino", threads=args.threads)
    plain = sampler.generate_mel

    def cleaned(runner, tokens, pad, n_mels, frames, steps, guidance, seed, shift=1.0):
        noise = np.random.default_rng(seed).standard_normal((1, n_mels, frames)).astype(np.float32)
        return plain(runner, tokens, pad, n_mels, frames, steps, guidance, seed, shift) - untouched_part(noise, projector, PATCH)

    judge, classes = load_judge()
    prompts = single_event_prompts(classes, args.per_class)
    seeds = range(9001, 9001 + args.seeds)
    print("\n| generated | jitter | judge accuracy |\n|---|---|---|")
    for name, generate in (("as sampled", plain), ("untouched noise removed", cleaned))[: 1 if detail else 2]:
        sampler.generate_mel = generate
        outputs = [session.task.generate(session.runner, p, seed=s, guidance=args.guidance) for p, _ in prompts for s in seeds]
        probs, _ = judge_audio(judge, np.stack([o["audio"][0] for o in outputs]))
        labels = [label for _, label in prompts for _ in seeds]
        accuracy = float(np.mean([classes[i] == label for i, label in zip(probs.argmax(1), labels)]))
        print(f"| {name} | {np.mean([jitter(o['mel']) for o in outputs]):.3f} | {accuracy:.3f} |", flush=True)
    sampler.generate_mel = plain


if __name__ == "__main__":
    main()
