"""Make the shipped test clip: espeak-ng utterances separated by silences, with the true timeline.

    apt-get install -y espeak-ng
    python make_speech_clip.py            # writes src/edgeaudio_vad/data/speech.wav and speech.json

Each utterance is synthesised on its own, resampled to 16 kHz and trimmed to where its samples
rise above 1% of its peak level (10 ms resolution); the trimmed extents, placed after known
silences, are the speech timeline the tests compare the VAD's segments with. A faint seeded
noise floor (-60 dBFS) keeps the silences from being digital zeros, as no microphone gives those.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

RATE = 16000
UTTERANCES = [  # (silence before it in seconds, text); no commas: espeak pauses at them
    (0.6, "Voice activity detection finds the speech"),
    (1.2, "It runs on the edge device in real time"),
    (1.0, "Then it goes quiet"),
]
TAIL_S = 0.7
NOISE_DBFS = -60.0
OUT = Path(__file__).parent / "src" / "edgeaudio_vad" / "data"


def synthesise(text: str) -> np.ndarray:
    """espeak-ng's en-us voice at 175 words per minute, as float32 at 16 kHz."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "utterance.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "175", "-w", str(wav), text], check=True)
        audio, rate = sf.read(str(wav), dtype="float32")
    return soxr.resample(audio, rate, RATE).astype(np.float32)


def trim(audio: np.ndarray) -> np.ndarray:
    """The utterance from its first to its last 10 ms frame above 1% of its peak level."""
    frame = RATE // 100
    levels = np.abs(audio[: len(audio) // frame * frame]).reshape(-1, frame).max(axis=1)
    loud = np.flatnonzero(levels > 0.01 * levels.max())
    return audio[loud[0] * frame : (loud[-1] + 1) * frame]


def main() -> None:
    pieces, timeline, cursor = [], [], 0
    for silence, text in UTTERANCES:
        speech = trim(synthesise(text))
        speech = 0.5 * speech / np.abs(speech).max()
        gap = round(silence * RATE)
        pieces += [np.zeros(gap, np.float32), speech]
        timeline.append({"start_s": (cursor + gap) / RATE, "end_s": (cursor + gap + len(speech)) / RATE, "text": text})
        cursor += gap + len(speech)
    pieces.append(np.zeros(round(TAIL_S * RATE), np.float32))
    clip = np.concatenate(pieces)
    noise = np.random.default_rng(0).standard_normal(len(clip)).astype(np.float32) * 10 ** (NOISE_DBFS / 20)
    OUT.mkdir(parents=True, exist_ok=True)
    sf.write(str(OUT / "speech.wav"), clip + noise, RATE, subtype="PCM_16")
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.split("Data")[0].strip()
    (OUT / "speech.json").write_text(json.dumps(
        {"sample_rate": RATE, "seconds": len(clip) / RATE, "made_with": version, "speech": timeline}, indent=2) + "\n")
    print(f"{OUT / 'speech.wav'}: {len(clip) / RATE:.2f} s, {len(timeline)} utterances")


if __name__ == "__main__":
    main()
