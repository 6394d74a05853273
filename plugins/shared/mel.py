"""Mel filter banks."""

from __future__ import annotations

import numpy as np


def mel_matrix(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 50.0) -> np.ndarray:
    """Triangular HTK-mel filters [n_mels, n_fft // 2 + 1], each normalised to unit area."""
    def to_mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    def to_hz(mel):
        return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)

    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = to_hz(np.linspace(to_mel(fmin), to_mel(sample_rate / 2), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling))
    return (filters / np.maximum(filters.sum(axis=1, keepdims=True), 1e-9)).astype(np.float32)
