"""Enhancement metrics: SI-SDR, PESQ (wide-band), STOI and DNSMOS, overall and per input-SNR bucket.

SI-SDR is pure numpy and fast: it is the gate metric and the training monitor. PESQ (``pesq``),
STOI (``pystoi``) and DNSMOS are for reports. DNSMOS runs the P.835 model that the ``speechmos``
package ships (``sig_bak_ovr.onnx``) through ONNX Runtime, exactly as the DNS challenge's
``dnsmos_local.py`` does (9.01 s windows, 1 s hop, clips shorter than a window repeated, the
published polynomial calibration), without speechmos' own runner, which needs librosa only for
the P.808 score we do not report.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from edgeaudio.errors import require

SAMPLE_RATE = 16000
SNR_BUCKETS = ((-5.0, 0.0), (0.0, 5.0), (5.0, 10.0), (10.0, 15.0), (15.0, 20.0))
DNSMOS_WINDOW = 9.01
EPS = 1e-12


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), both signals made zero-mean first.

    Any positive or negative scaling of the reference scores the same as the reference itself;
    an identical copy scores about 10 log10(energy / 1e-12), i.e. far above any real result.
    """
    estimate = np.asarray(estimate, dtype=np.float64).reshape(-1)
    reference = np.asarray(reference, dtype=np.float64).reshape(-1)
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate has {estimate.size} samples, reference {reference.size}")
    estimate = estimate - estimate.mean()
    reference = reference - reference.mean()
    scale = np.dot(estimate, reference) / (np.dot(reference, reference) + EPS)
    target = scale * reference
    return float(10 * np.log10((np.dot(target, target) + EPS) / (np.dot(estimate - target, estimate - target) + EPS)))


def snr_db(noisy: np.ndarray, clean: np.ndarray) -> float:
    """Input SNR of a pair: clean energy over the energy of what the noisy signal adds."""
    clean = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noisy, dtype=np.float64) - clean
    return float(10 * np.log10((np.sum(clean**2) + EPS) / (np.sum(noise**2) + EPS)))


def pesq_wb(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Wide-band PESQ (ITU-T P.862.2) at 16 kHz; NaN when PESQ finds no speech in the reference."""
    pesq = require("pesq")
    if not np.any(reference) or not np.any(estimate):
        return math.nan  # PESQ divides by the peak; silence has none
    try:
        return float(pesq.pesq(SAMPLE_RATE, _as_float(reference), _as_float(estimate), "wb"))
    except pesq.PesqError:
        return math.nan


def stoi(estimate: np.ndarray, reference: np.ndarray) -> float:
    pystoi = require("pystoi")
    return float(pystoi.stoi(_as_float(reference), _as_float(estimate), SAMPLE_RATE, extended=False))


def _as_float(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


@lru_cache(maxsize=1)
def _dnsmos_session():
    ort = require("onnxruntime")
    speechmos = require("speechmos")
    model = Path(speechmos.__file__).parent / "dnsmos_models" / "sig_bak_ovr.onnx"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


_DNSMOS_POLY = {
    "sig": np.poly1d([-0.08397278, 1.22083953, 0.0052439]),
    "bak": np.poly1d([-0.13166888, 1.60915514, -0.39604546]),
    "ovrl": np.poly1d([-0.06766283, 1.11546468, 0.04602535]),
}


def dnsmos(audio: np.ndarray) -> dict[str, float]:
    """DNSMOS P.835 ``sig``, ``bak`` and ``ovrl`` (1-5, higher is better) of 16 kHz audio.

    No reference needed: it judges the enhanced speech alone. Samples outside [-1, 1] are clipped,
    as they would be in any file.
    """
    audio = np.clip(_as_float(audio), -1.0, 1.0).astype(np.float32)
    period, window = len(audio), int(DNSMOS_WINDOW * SAMPLE_RATE)
    while len(audio) < window:
        audio = np.concatenate([audio, audio])
    hops = int(np.floor(len(audio) / SAMPLE_RATE) - DNSMOS_WINDOW) + 1
    session = _dnsmos_session()
    scores, seen = [], {}
    for i in range(hops):
        start = i * SAMPLE_RATE
        if start + window > len(audio):
            continue
        # a short clip repeats, so windows a whole period apart are the same samples: score once
        key = start % period if len(audio) > period else start
        if key not in seen:
            seen[key] = session.run(None, {"input_1": audio[None, start : start + window]})[0][0]
        scores.append(seen[key])
    sig, bak, ovrl = np.mean(scores, axis=0)
    return {name: float(_DNSMOS_POLY[name](raw)) for name, raw in (("sig", sig), ("bak", bak), ("ovrl", ovrl))}


def score(estimate: np.ndarray, clean: np.ndarray, noisy: np.ndarray, full: bool = True) -> dict[str, float]:
    """All metrics of one enhanced clip; ``full=False`` keeps only the fast SI-SDR ones."""
    scores = {"input_snr": snr_db(noisy, clean), "si_sdr": si_sdr(estimate, clean)}
    scores["si_sdr_i"] = scores["si_sdr"] - si_sdr(noisy, clean)
    if full:
        mos = dnsmos(estimate)
        scores.update(pesq=pesq_wb(estimate, clean), stoi=stoi(estimate, clean),
                      dnsmos_sig=mos["sig"], dnsmos_bak=mos["bak"], dnsmos_ovrl=mos["ovrl"])
    return scores


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def bucket_name(snr: float) -> str:
    """The SNR_BUCKETS range an input SNR falls in; the outer ones are open-ended."""
    for low, high in SNR_BUCKETS:
        if snr < high:
            return f"{low:g}..{high:g} dB"
    low, high = SNR_BUCKETS[-1]
    return f"{low:g}..{high:g} dB"


def summarize(rows: Iterable[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Means over all clips (``overall``) and per input-SNR bucket; NaNs (no speech) left out.

    Each group also records ``clips``, how many clips it averages.
    """
    rows = list(rows)
    groups: dict[str, list[Mapping[str, float]]] = {"overall": rows}
    for row in rows:
        groups.setdefault(bucket_name(row["input_snr"]), []).append(row)
    summary = {}
    for name, members in groups.items():
        keys = [k for k in members[0] if k != "input_snr"]
        means = {k: _nanmean([m[k] for m in members]) for k in keys}
        summary[name] = {"clips": len(members), **means}
    order = ["overall"] + [bucket_name(low) for low, _ in SNR_BUCKETS]
    return {name: summary[name] for name in order if name in summary}
