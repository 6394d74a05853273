"""How far the enhancement targets sit from what the test set allows: oracle masks and the
references' own scores, beside the shipped model and RNNoise's published row.

    python benchmarks/investigations/enhance_ceiling.py [--limit N] [--threads 1]

On the corpus's held-out test mixtures (``python -m edgeaudio.plugins.enhance.build_corpus``),
through the graph's own STFT (512/256, sqrt-Hann, the same Analysis and Synthesis modules):

- ``clean reference``: DNSMOS of the clean targets themselves (the test voices are telephone
  prompt recordings; DNSMOS cannot rate an output above its reference by much);
- ``oracle IRM``: the ideal ratio mask min(|clean| / |noisy|, 1) on every bin, the best a
  real-valued mask at this resolution does;
- ``oracle cIRM``: the ideal complex mask clean / noisy, magnitude bounded to 1;
- ``shipped model``: the shipped weights, and the same model fed the clean target (how much it
  changes speech that has no noise: its distortion floor, as SI-SDR against that target).

Oracles know the clean signal, so no causal model reaches them; they bound what the architecture's
output stage (a mask per bin) can express. Prints a Markdown table, overall and SI-SDRi per
input-SNR bucket.
"""

from __future__ import annotations

import argparse
import math

import numpy as np


def oracle_outputs(noisy: np.ndarray, clean: np.ndarray) -> dict[str, np.ndarray]:
    """Oracle-masked noisy audio through the graph's STFT, delay removed, as long as the input."""
    import torch

    from edgeaudio.plugins.enhance.model import DELAY, HOP, Analysis, Synthesis

    analysis, synthesis = Analysis(), Synthesis()
    pad = (0, DELAY + (-(len(noisy) + DELAY)) % HOP)
    n = torch.from_numpy(np.pad(noisy, pad).astype(np.float32))[None, None]
    c = torch.from_numpy(np.pad(clean, pad).astype(np.float32))[None, None]
    outputs = {}
    with torch.no_grad():
        n_re, n_im = analysis.spectrum(n)
        c_re, c_im = analysis.spectrum(c)
        power = n_re**2 + n_im**2 + 1e-12
        irm = torch.clamp(torch.sqrt((c_re**2 + c_im**2) / power), max=1.0)
        ratio_re, ratio_im = (c_re * n_re + c_im * n_im) / power, (c_im * n_re - c_re * n_im) / power
        bound = torch.clamp(torch.sqrt(ratio_re**2 + ratio_im**2), min=1.0)
        ola = n.new_zeros(1, 1, HOP)
        for name, (m_re, m_im) in {"oracle IRM": (irm, torch.zeros_like(irm)),
                                   "oracle cIRM": (ratio_re / bound, ratio_im / bound)}.items():  # fmt: skip
            audio, _ = synthesis(n_re, n_im, m_re, m_im, ola)
            outputs[name] = audio[0, 0, DELAY : DELAY + len(noisy)].numpy()
    return outputs


def main() -> None:
    import torch

    from edgeaudio.plugins.enhance.build_corpus import default_corpus
    from edgeaudio.plugins.enhance.data import read_pairs
    from edgeaudio.plugins.enhance.metrics import SNR_BUCKETS, bucket_name, dnsmos, score, summarize
    from edgeaudio.plugins.enhance.model import EnhanceNet
    from edgeaudio.plugins.enhance.task import WEIGHTS_DIR
    from edgeaudio.plugins.enhance.train import enhance_clip
    from edgeaudio.training import load_weights

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="score only the first N test mixtures")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pairs = read_pairs(default_corpus() / "test", args.limit)
    net = EnhanceNet()
    load_weights(net, WEIGHTS_DIR / "enhance.safetensors")
    net.eval()
    systems = ["clean reference", "noisy input", "oracle IRM", "oracle cIRM", "shipped model", "shipped model, clean in"]
    rows: dict[str, list[dict[str, float]]] = {s: [] for s in systems}
    for pair in pairs:
        outputs = {"clean reference": pair.clean, "noisy input": pair.noisy, **oracle_outputs(pair.noisy, pair.clean),
                   "shipped model": enhance_clip(net, pair.noisy), "shipped model, clean in": enhance_clip(net, pair.clean)}
        for name in systems:
            row = {**score(outputs[name], pair.clean, pair.noisy, full=False), **dnsmos(outputs[name])}
            if name == "clean reference":
                row.update(si_sdr=math.nan, si_sdr_i=math.nan)
            elif name == "shipped model, clean in":
                row.update(si_sdr_i=math.nan)  # no noise to remove
            rows[name].append(row)
    print(f"{len(pairs)} held-out test mixtures\n")
    buckets = [bucket_name(low) for low, _ in SNR_BUCKETS]
    print(f"| system | SI-SDR (dB) | SI-SDRi (dB) | DNSMOS SIG | BAK | OVRL | SI-SDRi {' / '.join(buckets)} |")
    print("|---|---|---|---|---|---|---|")
    for name in systems:
        summary = summarize(rows[name])
        mean = {k: _cell(v) for k, v in summary["overall"].items()}
        per = " / ".join(_cell(summary.get(b, {}).get("si_sdr_i", math.nan)) for b in buckets)
        print(f"| {name} | {mean['si_sdr']} | {mean['si_sdr_i']} | {mean['sig']} | {mean['bak']} | {mean['ovrl']} | {per} |")


def _cell(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.2f}"


if __name__ == "__main__":
    main()
