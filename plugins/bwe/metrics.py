"""Bandwidth-extension metrics: log-spectral distance (full and extended band), SI-SDR, PESQ-WB.

LSD compares log power spectra, so it punishes a level difference everywhere and its floor makes
it depend on absolute level; published numbers that skip level matching are not comparable. Here
both signals are first brought to the same level: the reference to -26 dBFS RMS, the estimate by
the gain that matches its 300-3400 Hz band (which both signals share) to the reference's. Then

    LSD = mean over frames of sqrt(mean over bins of (log10 P_ref - log10 P_est)^2)

with a 2048-point Hann STFT, hop 512, and powers floored at 1e-8 as in NVSR and AP-BWE.
``lsd_extended`` uses only the 4-8 kHz bins: the band the model has to invent.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
N_FFT, HOP = 2048, 512
REFERENCE_RMS = 10 ** (-26 / 20)
SHARED_BAND = (300.0, 3400.0)
EXTENDED_BAND = (4000.0, 8000.0)


def _power(audio: np.ndarray) -> np.ndarray:
    """Power spectrogram [frames, bins] of a 1-D signal (centre-padded frames, Hann window)."""
    padded = np.pad(np.asarray(audio, np.float64), N_FFT // 2, mode="reflect")
    frames = 1 + (len(padded) - N_FFT) // HOP
    index = np.arange(N_FFT)[None, :] + HOP * np.arange(frames)[:, None]
    return np.abs(np.fft.rfft(padded[index] * np.hanning(N_FFT + 1)[:-1], axis=1)) ** 2


def _band(sample_rate: int, band: tuple[float, float]) -> slice:
    hz = sample_rate / N_FFT
    return slice(int(np.ceil(band[0] / hz)), int(np.floor(band[1] / hz)) + 1)


def level_match(reference: np.ndarray, estimate: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """(reference at -26 dBFS, estimate scaled so its 300-3400 Hz energy equals the reference's)."""
    reference = np.asarray(reference, np.float64)
    estimate = np.asarray(estimate, np.float64)
    reference = reference * REFERENCE_RMS / (np.sqrt(np.mean(reference**2)) + 1e-12)
    shared = _band(sample_rate, SHARED_BAND)
    ref_energy = _power(reference)[:, shared].sum()
    est_energy = _power(estimate)[:, shared].sum()
    return reference, estimate * np.sqrt(ref_energy / max(est_energy, 1e-20))


def _lsd(reference, estimate, sample_rate: int, band: tuple[float, float] | None) -> float:
    length = min(len(reference), len(estimate))
    reference, estimate = level_match(reference[:length], estimate[:length], sample_rate)
    bins = _band(sample_rate, band) if band else slice(None)
    ref = np.log10(np.maximum(_power(reference)[:, bins], 1e-8))
    est = np.log10(np.maximum(_power(estimate)[:, bins], 1e-8))
    return float(np.mean(np.sqrt(np.mean((ref - est) ** 2, axis=1))))


def lsd(reference: np.ndarray, estimate: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Log-spectral distance over the whole band, on level-matched signals (lower is better)."""
    return _lsd(reference, estimate, sample_rate, None)


def lsd_extended(reference: np.ndarray, estimate: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Log-spectral distance over 4-8 kHz only, on level-matched signals."""
    return _lsd(reference, estimate, sample_rate, EXTENDED_BAND)


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (higher is better), capped at 100 dB."""
    length = min(len(reference), len(estimate))
    reference = np.asarray(reference[:length], np.float64)
    estimate = np.asarray(estimate[:length], np.float64)
    target = reference * np.dot(estimate, reference) / (np.dot(reference, reference) + 1e-20)
    noise = estimate - target
    return float(min(100.0, 10 * np.log10((np.sum(target**2) + 1e-20) / (np.sum(noise**2) + 1e-20))))


def pesq_wb(reference: np.ndarray, estimate: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """ITU-T P.862.2 wide-band PESQ (MOS-LQO, 1.04-4.64) via the ``pesq`` package."""
    from edgeaudio.errors import require

    pesq = require("pesq")
    length = min(len(reference), len(estimate))
    reference, estimate = level_match(reference[:length], estimate[:length], sample_rate)
    return float(pesq.pesq(sample_rate, reference, estimate, "wb"))


def all_metrics(reference: np.ndarray, estimate: np.ndarray, sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
    return {
        "lsd": lsd(reference, estimate, sample_rate),
        "lsd_extended": lsd_extended(reference, estimate, sample_rate),
        "si_sdr": si_sdr(reference, estimate),
        "pesq_wb": pesq_wb(reference, estimate, sample_rate),
    }
