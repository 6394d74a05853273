"""Reading and writing audio files with clear errors for what users actually feed us."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeaudio.errors import AudioInputError, require


def read_audio(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int, list[str]]:
    """Read ``path`` as float32 [channels, samples]; resample to ``sample_rate`` when given.

    Returns (audio, rate, notes) where notes say what was changed (e.g. resampling), so callers
    can tell the user instead of changing their audio silently.
    """
    sf = require("soundfile", "mic")
    path = Path(path)
    if not path.is_file():
        raise AudioInputError(f"no audio file at {path}")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile reports corrupt headers as RuntimeError/LibsndfileError
        raise AudioInputError(f"cannot read {path.name} as audio ({exc})", hint="is it a WAV/FLAC/OGG file?") from exc
    audio = np.ascontiguousarray(data.T)
    if audio.shape[1] == 0:
        raise AudioInputError(f"{path.name} holds no samples", hint="check the recording")
    if not np.all(np.isfinite(audio)):
        raise AudioInputError(f"{path.name} contains NaN or infinite samples", hint="check the recording")
    notes = []
    if sample_rate and rate != sample_rate:
        audio = resample(audio, rate, sample_rate)
        notes.append(f"resampled {path.name} from {rate} Hz to {sample_rate} Hz")
        rate = sample_rate
    return audio, rate, notes


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of [channels, samples] with soxr (high quality)."""
    if rate_in == rate_out:
        return audio
    soxr = require("soxr", "mic")
    return np.ascontiguousarray(soxr.resample(audio.T, rate_in, rate_out, quality="HQ").T.astype(np.float32))


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write float32 [channels, samples] (or [samples]) as 32-bit float WAV."""
    sf = require("soundfile", "mic")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.T, sample_rate, subtype="FLOAT")
    return path
