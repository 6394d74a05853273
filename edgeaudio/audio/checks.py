"""What makes a model's results meaningless, noticed in the input and said once each.

A model answers whatever it is given: a clipped recording, a float file at 1e6 amplitude or a
10-sample clip all produce results that look as confident as real ones. ``InputCheck`` watches
the audio as it passes (whole files and live chunks alike) and turns those conditions into
warnings for the user; NaN or infinite samples are an error, since no result can come of them.
"""

from __future__ import annotations

import numpy as np

from edgeaudio.errors import AudioInputError

FULL_SCALE = 1.0
CLIP_LEVEL = 0.999  # a sample this close to full scale was most likely cut off there
CLIPPED_SHARE = 0.001  # warn when more than this share of samples (and at least CLIPPED_MIN) sit there
CLIPPED_MIN = 10


class InputCheck:
    """Accumulates over ``update(chunk)`` calls ([channels, samples] at ``sample_rate``); each
    returns the warnings that became true with that chunk (each is said once); ``finish()``
    returns the ones that need the whole input (clipping share, too short)."""

    def __init__(self, sample_rate: int, min_seconds: float = 0.0, what: str = "the input"):
        self.sample_rate, self.min_seconds, self.what = sample_rate, min_seconds, what
        self.samples = self.clipped = 0
        self.values = 0
        self.peak = 0.0
        self._overload_said = False

    def update(self, chunk: np.ndarray) -> list[str]:
        chunk = np.asarray(chunk)
        if chunk.size == 0:
            return []
        if not np.all(np.isfinite(chunk)):
            at = self.samples / self.sample_rate
            raise AudioInputError(f"{self.what} holds NaN or infinite samples (at {at:.2f} s)",
                                  hint="check the recording; no result can come of such samples")
        magnitude = np.abs(chunk)
        peak = float(magnitude.max())
        self.peak = max(self.peak, peak)
        self.clipped += int(np.count_nonzero((magnitude >= CLIP_LEVEL) & (magnitude <= FULL_SCALE * 1.0001)))
        self.values += chunk.size
        warnings = []
        if peak > FULL_SCALE * 1.0001 and not self._overload_said:
            self._overload_said = True
            warnings.append(f"warning: {self.what} peaks at {peak:.4g}, above full scale (1.0), from "
                            f"{self.samples / self.sample_rate:.2f} s: overloaded audio; results may be meaningless")
        self.samples += chunk.shape[-1]
        return warnings

    def finish(self) -> list[str]:
        warnings = []
        if self.clipped >= CLIPPED_MIN and self.clipped > CLIPPED_SHARE * self.values:
            warnings.append(f"warning: {self.clipped} sample(s) of {self.what} ({100 * self.clipped / self.values:.2g} %) "
                            f"sit at full scale: clipped audio; results may be unreliable")
        seconds = self.samples / self.sample_rate
        if self.samples and seconds < self.min_seconds:
            warnings.append(f"warning: {self.what} lasts {seconds * 1000:.1f} ms, shorter than the "
                            f"{self.min_seconds * 1000:.0f} ms the model needs to mean anything; do not trust the results")
        return warnings
