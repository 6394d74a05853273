"""Would suppressing harder after the fact lift DNSMOS? The shipped enhancer's complex mask with its
magnitude raised to a power (1 = as shipped), scored on the validation mixtures.

    python benchmarks/investigations/enhance_mask_power.py [--powers 1 1.5 2 3] [--weights FILE]

A power above 1 shrinks small mask values more than large ones (the usual over-suppression knob):
less residual noise (DNSMOS BAK up), more damage to the voice (SI-SDR, SIG down). Scored on the
corpus's validation mixtures plus the shipped validation pairs (the export gate's), never on the
test set; whole clips through the torch model from zero state.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    import torch

    from edgeaudio.plugins.enhance.build_corpus import default_corpus
    from edgeaudio.plugins.enhance.data import read_pairs
    from edgeaudio.plugins.enhance.metrics import score
    from edgeaudio.plugins.enhance.model import EnhanceNet
    from edgeaudio.plugins.enhance.task import WEIGHTS_DIR
    from edgeaudio.plugins.enhance.train import enhance_clip
    from edgeaudio.training import load_weights

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--powers", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--weights", default=str(WEIGHTS_DIR / "enhance.safetensors"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pairs = read_pairs(default_corpus() / "validation") + read_pairs(WEIGHTS_DIR.parent / "validation")
    net = EnhanceNet()
    load_weights(net, args.weights)
    net.eval()
    synthesis = net.synthesis.forward
    power = {"value": 1.0}

    def powered(re, im, mask_re, mask_im, ola):
        factor = torch.sqrt(mask_re * mask_re + mask_im * mask_im + 1e-12) ** (power["value"] - 1.0)
        return synthesis(re, im, mask_re * factor, mask_im * factor, ola)

    net.synthesis.forward = powered
    print(f"{len(pairs)} validation mixtures\n")
    print("| mask power | SI-SDRi (dB) | PESQ-WB | STOI | DNSMOS SIG | DNSMOS BAK | DNSMOS OVRL |")
    print("|---|---|---|---|---|---|---|")
    for value in args.powers:
        power["value"] = value
        rows = [score(enhance_clip(net, pair.noisy), pair.clean, pair.noisy) for pair in pairs]
        m = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
        print(f"| {value:g} | {m['si_sdr_i']:.2f} | {m['pesq']:.2f} | {m['stoi']:.3f} | {m['dnsmos_sig']:.2f} | "
              f"{m['dnsmos_bak']:.2f} | {m['dnsmos_ovrl']:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
