"""Speech enhancement data: the built corpus, noisy/clean mixtures, and paired-folder datasets.

The corpus (written by ``build_corpus.py``) is a folder of 16 kHz mono WAV clips::

    speech/{train,test}/<voice>/<utterance>.wav     real voices (+ espeak-ng in train only)
    noise/{train,test}/<class>/<recording>__<n>.wav  real recordings from the event library
    rirs/{train,test}/<n>.wav                        simulated room impulse responses
    test/{noisy,clean}/<n>.wav                       fixed held-out mixtures (paired-folder layout)
    CORPUS.json                                      sources, licences, which voice is in which split

Training mixes on the fly (``MixtureDataset``); everything random comes from numpy's global
generator, which the shared training loop reseeds per epoch, so runs are reproducible. The test
split holds voices and noise recordings that training never sees.

``read_pairs`` reads the layout most enhancement sets use (VoiceBank-DEMAND, DNS, ours): two
sibling folders whose names start with ``noisy`` and ``clean``, files matched by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeaudio.errors import UsageError, require

SAMPLE_RATE = 16000
SNR_RANGE = (-5.0, 20.0)
LEVEL_DBFS_RANGE = (-35.0, -15.0)
REVERB_PROBABILITY = 0.3
EARLY_REFLECTIONS = 0.05  # seconds of the room response that count as the clean target
COLORED_NOISE_PROBABILITY = 0.4
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


# --- reading audio --------------------------------------------------------------------------------


def read_mono(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A file as float32 mono samples at ``sample_rate`` (channels averaged, soxr resampling)."""
    from edgeaudio.audio.files import resample

    sf = require("soundfile")
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(data.mean(axis=1)[None, :], rate, sample_rate)[0]


def _wavs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)


@dataclass
class Pools:
    """One split of the corpus in memory: utterances per voice, noise clips, room responses."""

    speech: dict[str, list[np.ndarray]]
    noise: list[np.ndarray]
    rirs: list[np.ndarray]

    @classmethod
    def load(cls, corpus: str | Path, split: str) -> Pools:
        root = Path(corpus)
        speech_root = root / "speech" / split
        if not speech_root.is_dir():
            raise UsageError(
                f"{root} holds no '{split}' speech; the corpus is not built",
                hint="python -m edgeaudio.plugins.enhance.build_corpus --install",
            )
        speech = {v.name: [read_mono(p) for p in _wavs(v)] for v in sorted(speech_root.iterdir()) if v.is_dir()}
        noise = [read_mono(p) for p in _wavs(root / "noise" / split)]
        rirs = [read_mono(p) for p in _wavs(root / "rirs" / split)]
        if not any(speech.values()) or not noise:
            raise UsageError(f"the '{split}' split of {root} has no speech or no noise clips", hint="rebuild the corpus")
        return cls(speech, noise, rirs)


# --- mixing ---------------------------------------------------------------------------------------


@dataclass
class Mixture:
    noisy: np.ndarray
    clean: np.ndarray
    snr_db: float
    voice: str
    reverberant: bool


def mix(pools: Pools, seconds: float, rng: np.random.Generator, snr_db: float | None = None) -> Mixture:
    """One noisy/clean pair: utterances of one voice, real noise at ``snr_db`` (drawn from
    SNR_RANGE when None), reverberation with REVERB_PROBABILITY, level from LEVEL_DBFS_RANGE.

    Under reverberation the clean target keeps the direct sound and the first EARLY_REFLECTIONS
    seconds: what a listener hears as the voice, without the room's tail.
    """
    length = int(seconds * SAMPLE_RATE)
    voice = sorted(pools.speech)[rng.integers(len(pools.speech))]
    dry = _speech_track(pools.speech[voice], length, rng)
    clean, speech = dry, dry
    reverberant = bool(pools.rirs) and rng.random() < REVERB_PROBABILITY
    if reverberant:
        rir = pools.rirs[rng.integers(len(pools.rirs))]
        speech = _convolve(dry, rir, length)
        clean = _convolve(dry, rir[: int(EARLY_REFLECTIONS * SAMPLE_RATE)], length)
    noise = _noise_track(pools.noise, length, rng)
    snr = float(rng.uniform(*SNR_RANGE)) if snr_db is None else float(snr_db)
    noise *= np.sqrt(_power(speech) / (_power(noise) * 10 ** (snr / 10)))
    noisy = speech + noise
    gain = 10 ** (rng.uniform(*LEVEL_DBFS_RANGE) / 20) / np.sqrt(_power(noisy))
    gain = min(gain, 0.99 / max(float(np.max(np.abs(noisy))), 1e-9))
    return Mixture((gain * noisy).astype(np.float32), (gain * clean).astype(np.float32), snr, voice, reverberant)


def _power(x: np.ndarray) -> float:
    return float(np.mean(x.astype(np.float64) ** 2)) + 1e-12


def _speech_track(utterances: list[np.ndarray], length: int, rng: np.random.Generator) -> np.ndarray:
    """Utterances of one voice with short pauses, from a random point, filling ``length``."""
    parts, total = [], 0
    while total < length + SAMPLE_RATE:
        parts.append(utterances[rng.integers(len(utterances))])
        parts.append(np.zeros(int(rng.uniform(0.05, 0.5) * SAMPLE_RATE), np.float32))
        total += len(parts[-2]) + len(parts[-1])
    track = np.concatenate(parts)
    start = int(rng.integers(0, total - length))
    return track[start : start + length]


def _noise_track(clips: list[np.ndarray], length: int, rng: np.random.Generator) -> np.ndarray:
    """Real recordings laid end to end with random gaps, plus a coloured-noise bed at times.

    Event clips are short; chaining them gives a background that changes as real ones do. The
    bed (white to brown, slowly modulated) stands for fans, hiss and hum between the events.
    """
    track = np.zeros(length, np.float32)
    if rng.random() < 0.9:
        position = -int(rng.integers(0, SAMPLE_RATE))
        while position < length:
            clip = clips[rng.integers(len(clips))] * np.float32(10 ** (rng.uniform(-10, 0) / 20))
            start = max(position, 0)
            part = clip[start - position : start - position + length - start]
            track[start : start + len(part)] += part
            position += len(clip) + int(rng.uniform(0.0, 0.4) * SAMPLE_RATE)
    if rng.random() < COLORED_NOISE_PROBABILITY or not np.any(track):
        bed = colored_noise(length, rng.uniform(0.0, 2.0), rng)
        bed *= 1.0 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * np.arange(length) / SAMPLE_RATE + rng.uniform(0, 6.3))
        level = np.sqrt(_power(track)) if np.any(track) else 1.0
        track += (bed * level * 10 ** (rng.uniform(-15, 0) / 20)).astype(np.float32)
    return track


def colored_noise(length: int, slope: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise with power spectrum 1/f^slope (0 white, 1 pink, 2 brown)."""
    freqs = np.fft.rfftfreq(length, 1.0 / SAMPLE_RATE)
    spectrum = rng.standard_normal(len(freqs)) + 1j * rng.standard_normal(len(freqs))
    spectrum *= np.maximum(freqs, 20.0) ** (-slope / 2)
    noise = np.fft.irfft(spectrum, length)
    return (noise / np.sqrt(np.mean(noise**2) + 1e-20)).astype(np.float32)


def _convolve(x: np.ndarray, rir: np.ndarray, length: int) -> np.ndarray:
    from scipy.signal import fftconvolve

    return fftconvolve(x, rir)[:length].astype(np.float32)


# --- torch datasets ---------------------------------------------------------------------------------


class MixtureDataset:
    """``items`` fresh mixtures of ``seconds`` per epoch, drawn from numpy's global generator."""

    def __init__(self, pools: Pools, items: int, seconds: float):
        self.pools, self.items, self.seconds = pools, items, seconds

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, index: int):
        import torch

        rng = np.random.default_rng(np.random.randint(2**31))
        m = mix(self.pools, self.seconds, rng)
        return torch.from_numpy(m.noisy[None]), torch.from_numpy(m.clean[None])


class PairCrops:
    """Random ``seconds`` crops of paired-folder recordings (zero-padded when shorter)."""

    def __init__(self, pairs: list[Pair], items: int, seconds: float):
        if not pairs:
            raise UsageError("the paired folder holds no pairs to train on")
        self.pairs, self.items, self.length = pairs, items, int(seconds * SAMPLE_RATE)

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, index: int):
        import torch

        pair = self.pairs[np.random.randint(len(self.pairs))]
        start = np.random.randint(max(1, len(pair.noisy) - self.length + 1))
        noisy, clean = (np.zeros(self.length, np.float32) for _ in range(2))
        part = slice(start, start + self.length)
        noisy[: len(pair.noisy[part])] = pair.noisy[part]
        clean[: len(pair.clean[part])] = pair.clean[part]
        return torch.from_numpy(noisy[None]), torch.from_numpy(clean[None])


# --- paired folders -------------------------------------------------------------------------------


@dataclass
class Pair:
    name: str
    noisy: np.ndarray
    clean: np.ndarray

    @property
    def snr_db(self) -> float:
        """Input SNR measured from the pair itself, so any paired set can be bucketed."""
        return 10 * np.log10(_power(self.clean) / _power(self.noisy - self.clean))


def pair_folders(root: str | Path) -> tuple[Path, Path]:
    """The (noisy, clean) sub-folders of ``root``: names starting with ``noisy`` and ``clean``.

    Several candidates (``noisy_trainset_wav`` and ``noisy_testset_wav``) are paired by the rest
    of their name; ``root`` must then hold exactly one such pair, or be one of its halves' parent
    chosen more precisely by the caller.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder", hint="pass the folder that holds noisy/ and clean/")
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir()]
    noisy = {d.name[len("noisy"):]: d for d in subdirs if d.name.lower().startswith("noisy")}
    clean = {d.name[len("clean"):]: d for d in subdirs if d.name.lower().startswith("clean")}
    common = sorted(set(noisy) & set(clean))
    if len(common) != 1:
        found = ", ".join(d.name for d in subdirs) or "nothing"
        raise UsageError(
            f"{root} must hold one pair of folders named noisy*/clean* (found: {found})",
            hint="e.g. noisy/ and clean/, or noisy_testset_wav/ and clean_testset_wav/, files matched by name",
        )
    return noisy[common[0]], clean[common[0]]


def read_pairs(root: str | Path, limit: int | None = None) -> list[Pair]:
    """Pairs of a paired folder at 16 kHz mono; names present on one side only are refused."""
    noisy_dir, clean_dir = pair_folders(root)
    noisy = {p.stem: p for p in _wavs(noisy_dir)}
    clean = {p.stem: p for p in _wavs(clean_dir)}
    unmatched = sorted(set(noisy) ^ set(clean))
    if unmatched:
        raise UsageError(
            f"{len(unmatched)} file(s) in {root} have no partner, e.g. {unmatched[0]}",
            hint="noisy and clean files must have the same names",
        )
    if not noisy:
        raise UsageError(f"{noisy_dir} holds no audio files")
    names = sorted(noisy)[:limit]
    for name in names:  # every header first: a bad pair fails before any audio is read
        _check_pair(noisy[name], clean[name])
    return [Pair(name, read_mono(noisy[name]), read_mono(clean[name])) for name in names]


def _check_pair(noisy: Path, clean: Path) -> None:
    """A pair must be sample-aligned (same rate and length) and at least 16 kHz (the model's rate)."""
    sf = require("soundfile")
    try:
        n, c = sf.info(str(noisy)), sf.info(str(clean))
    except RuntimeError as exc:
        raise UsageError(f"{noisy.stem}: not a readable audio pair ({exc})") from exc
    if (n.samplerate, n.frames) != (c.samplerate, c.frames):
        raise UsageError(f"{noisy} ({n.frames} samples at {n.samplerate} Hz) and {clean} ({c.frames} at {c.samplerate} Hz) "
                         "do not line up", hint="pairs must be sample-aligned: the same rate and length")
    if n.samplerate < SAMPLE_RATE:
        raise UsageError(f"{noisy} is {n.samplerate} Hz, below the model's {SAMPLE_RATE} Hz",
                         hint="give wideband recordings (16 kHz or more)")


def write_pairs(root: str | Path, mixtures: list[Mixture], names: list[str] | None = None) -> Path:
    """Write mixtures in the paired layout (16-bit WAV) with ``mixtures.json`` describing each."""
    sf = require("soundfile")
    root = Path(root)
    names = names or [f"{i:04d}" for i in range(len(mixtures))]
    for side in ("noisy", "clean"):
        (root / side).mkdir(parents=True, exist_ok=True)
    for name, m in zip(names, mixtures):
        sf.write(str(root / "noisy" / f"{name}.wav"), m.noisy, SAMPLE_RATE, subtype="PCM_16")
        sf.write(str(root / "clean" / f"{name}.wav"), m.clean, SAMPLE_RATE, subtype="PCM_16")
    described = [{"name": n, "snr_db": round(m.snr_db, 2), "voice": m.voice, "reverberant": m.reverberant}
                 for n, m in zip(names, mixtures)]
    (root / "mixtures.json").write_text(json.dumps(described, indent=1) + "\n")
    return root
