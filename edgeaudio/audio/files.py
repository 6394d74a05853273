"""Reading and writing audio files with clear errors for what users actually feed us."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgeaudio.errors import AudioInputError, require


def read_audio(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int, list[str]]:
    """Read ``path`` as float32 [channels, samples]; resample to ``sample_rate`` when given.

    Returns (audio, rate, notes) where notes say what was changed (e.g. resampling), so callers
    can tell the user instead of changing their audio silently.
    """
    sf = require("soundfile")
    path = Path(path)
    if not path.is_file():
        raise AudioInputError(f"no audio file at {path}", hint="check the path given to --input")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        header = header_mismatch(path)
    except Exception as exc:  # libsndfile reports corrupt headers as RuntimeError/LibsndfileError
        raise AudioInputError(f"cannot read {path.name} as audio ({exc})", hint="is it a WAV/FLAC/OGG file?") from exc
    audio = np.ascontiguousarray(data.T)
    if audio.shape[1] == 0:
        raise AudioInputError(f"{path.name} holds no samples", hint="check the recording")
    if not np.all(np.isfinite(audio)):
        raise AudioInputError(f"{path.name} contains NaN or infinite samples", hint="check the recording")
    notes = [header] if header else []
    if sample_rate and rate != sample_rate:
        audio = resample(audio, rate, sample_rate)
        notes.append(f"resampled {path.name} from {rate} Hz to {sample_rate} Hz")
        rate = sample_rate
    return audio, rate, notes


def header_mismatch(path: str | Path) -> str | None:
    """A warning when the file's header promises more audio than the file holds (a truncated
    recording or download: libsndfile reads what is there and notes the difference), else None."""
    sf = require("soundfile")
    info = sf.info(str(path))
    found = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", info.extra_info, re.MULTILINE)
    if found is None:
        return None
    claimed, present = int(found[1]), int(found[2])
    return (f"warning: the header of {Path(path).name} claims {claimed} bytes of audio but the file holds {present} "
            f"(truncated?); using the {info.frames} frame(s) present ({info.duration:.3f} s)")


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of [channels, samples] with soxr (high quality)."""
    if rate_in == rate_out:
        return audio
    soxr = require("soxr")
    return np.ascontiguousarray(soxr.resample(audio.T, rate_in, rate_out, quality="HQ").T.astype(np.float32))


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write float32 [channels, samples] (or [samples]) as 32-bit float WAV."""
    sf = require("soundfile")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.T, sample_rate, subtype="FLOAT")
    return path
