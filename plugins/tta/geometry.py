"""The mel geometry the networks and the runtime share, kept free of torch so that generating
with an exported bundle never imports it."""

from __future__ import annotations

import math

N_FFT, HOP, PATCH = 1024, 256, 4  # 64 ms windows every 16 ms at 16 kHz; the generator sees 4-frame patches


def frames_for(seconds: float, sample_rate: int) -> int:
    """Mel frames the generator makes for ``seconds`` of audio: whole 4-frame patches."""
    return PATCH * math.ceil(round(seconds * sample_rate) / HOP / PATCH)
