"""Wideband speech for bandwidth extension, and the narrowband versions the model learns to undo.

    python -m edgeaudio.plugins.bwe.data --out DIR [--install]

Targets must really reach 8 kHz, so the corpus keeps only recordings whose 5-7.5 kHz band holds
energy (many game voices were recorded or stored narrowband: all the Dutch Fish Fillets dialogue
is, and is left out). Sources, all real recordings from Debian packages, plus espeak-ng for variety:

- ``fillets-ng-data-cs``: voice-acted Czech dialogue (two lead actors and several others), 22-44 kHz
- ``fillets-ng-data``: the English-only lines, 22-44 kHz
- ``hedgewars-data``: 16 voice packs (English and other languages, acted), 44.1 kHz
- ``espeak-ng``: a dozen languages and voice variants, for the training split only

Voices in ``HELDOUT`` never reach training: they are the test set of the README table. From every
other real voice one clip in ``VAL_EVERY`` is kept back for validation and the INT8 gate.

Narrowband input is made many ways (:func:`degrade`): telephone band-pass, low-pass filters of
several families and cutoffs, resamplers of several kinds and qualities, G.711 companding and
coarse quantisation, then upsampled back to 16 kHz mostly as the runtime does (soxr), so the model
learns the missing band and not one filter's fingerprint.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgeaudio.errors import EdgeAudioError, UsageError, report, require

SAMPLE_RATE = 16000
NARROW_RATE = 8000
HELDOUT = ("hedgewars-British", "hedgewars-Default_pl", "hedgewars-Mobster", "hedgewars-Russian",
           "hedgewars-Singer", "fillets-en")
VAL_EVERY = 20
MIN_SECONDS = 0.4
MIN_HIGH_BAND_DB = -45.0  # 5-7.5 kHz vs 0.3-3.4 kHz power density; narrowband recordings sit near -60
TARGET_RMS = 10 ** (-23 / 20)
FILLETS = "/usr/share/games/fillets-ng/sound"
HEDGEWARS = "/usr/share/games/hedgewars/Data/Sounds/voices"
LICENCES = {"fillets-ng-data-cs": "GPL-2", "fillets-ng-data": "GPL-2", "hedgewars-data": "GFDL-1.3",
            "espeak-ng": "synthesized by espeak-ng (GPL-3+); text written for edgeaudio"}
PACKAGES = ("fillets-ng-data", "fillets-ng-data-cs", "hedgewars-data", "espeak-ng")
ESPEAK_VOICES = ("en", "en-us", "en-gb-x-rp", "de", "fr", "es", "it", "nl", "cs", "pl", "pt", "sv")
ESPEAK_VARIANTS = ("", "+m1", "+m3", "+m7", "+f1", "+f2", "+f4", "+klatt", "+Andy", "+Annie")
ESPEAK_UTTERANCES = 240
SENTENCES = (
    "the quick brown fox jumps over the lazy dog while the children watch from the fence",
    "please call me back on my mobile number after six in the evening",
    "she sells sea shells by the sea shore and the shells she sells are surely seashells",
    "our meeting has moved to thursday afternoon in the small conference room",
    "a large fresh pizza with extra cheese costs twelve dollars and fifty cents",
    "the weather service expects heavy rain and strong winds across the northern coast",
    "turn left at the second traffic light and keep going for about three kilometres",
    "this recording may be monitored for quality and training purposes",
    "six thick thistle sticks and six thick thistles stuck in the ground",
    "the invoice was sent on the fourteenth and payment is due within thirty days",
    "could you spell your family name for me slowly please",
    "fresh coffee, warm bread and a quiet morning are all she ever wanted",
)


@dataclass
class Clip:
    """One recording of the corpus at 16 kHz: ``voice`` decides its split."""

    path: Path
    voice: str
    split: str
    audio: np.ndarray | None = None

    def load(self) -> np.ndarray:
        if self.audio is None:
            sf = require("soundfile")
            self.audio = sf.read(str(self.path), dtype="float32")[0]
        return self.audio


# -- building the corpus --------------------------------------------------------------------------
def build(out: Path, install: bool = False, progress: bool = True) -> dict:
    """Decode, resample, filter and write every source clip as ``out/<voice>/<name>.flac``;
    return the SOURCES.json content. An existing complete corpus is left as it is."""
    out = Path(out)
    if (out / "SOURCES.json").is_file():
        return json.loads((out / "SOURCES.json").read_text())
    if install:
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES], check=True)
    versions = {p: _installed_version(p) for p in PACKAGES}
    missing = [p for p, v in versions.items() if not v]
    if missing:
        raise UsageError(f"missing Debian packages for the speech corpus: {' '.join(missing)}",
                         hint=f"python -m edgeaudio.plugins.bwe.data --out {out} --install (as root) installs them and "
                              "builds the corpus (or apt-get install --no-install-recommends them); then train again")
    out.mkdir(parents=True, exist_ok=True)
    entries, dropped = [], {"short": 0, "narrowband": 0}
    recordings = _recordings()
    for source, voice, package in tqdm(recordings, desc="speech corpus", unit="file", disable=None if progress else True):
        audio, reason = _prepare(source)
        if reason:
            dropped[reason] += 1
            continue
        entries.append(_write(out, voice, Path(source).parent.parent.name + "-" + Path(source).stem, audio,
                              package, str(source)))
    entries += _espeak_clips(out, progress)
    for entry in entries:
        entry["version"] = versions[entry["package"]]
    manifest = {"generator": "python -m edgeaudio.plugins.bwe.data", "sample_rate": SAMPLE_RATE,
                "heldout_voices": list(HELDOUT), "dropped": dropped, "clips": entries}
    (out / "SOURCES.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _recordings() -> list[tuple[str, str, str]]:
    """(file, voice, package) for every real recording; Fish Fillets voices by speaker code."""
    found = []
    for lang, package in (("cs", "fillets-ng-data-cs"), ("en", "fillets-ng-data")):
        for path in sorted(Path(FILLETS).glob(f"**/{lang}/*.ogg")):
            parts = path.stem.split("-")
            speaker = parts[1] if lang == "cs" and len(parts) > 2 and parts[1] in ("m", "v") else "other"
            found.append((str(path), f"fillets-{lang}" + (f"-{speaker}" if lang == "cs" else ""), package))
    for pack in sorted(Path(HEDGEWARS).iterdir()):
        found += [(str(p), f"hedgewars-{pack.name}", "hedgewars-data") for p in sorted(pack.glob("*.ogg"))]
    return found


def _prepare(path: str) -> tuple[np.ndarray | None, str | None]:
    """Mono 16 kHz, silence trimmed, loudness normalised; or the reason the file is left out."""
    sf = require("soundfile")
    data, rate = sf.read(path, dtype="float64", always_2d=True)
    audio = data.mean(axis=1)
    if high_band_db(audio, rate) < MIN_HIGH_BAND_DB:
        return None, "narrowband"
    audio = _trim(_resample(audio, rate, SAMPLE_RATE, "VHQ"))
    if len(audio) < MIN_SECONDS * SAMPLE_RATE:
        return None, "short"
    return (audio * TARGET_RMS / (np.sqrt(np.mean(audio**2)) + 1e-12)).clip(-1, 1).astype(np.float32), None


def high_band_db(audio: np.ndarray, rate: int) -> float:
    """Power density in 5-7.5 kHz relative to 0.3-3.4 kHz, in dB (-inf when nothing is there)."""
    from scipy.signal import welch

    if rate < 16000:
        return -np.inf
    freqs, power = welch(audio, rate, nperseg=512)
    low = np.mean(power[(freqs > 300) & (freqs < 3400)])
    high = np.mean(power[(freqs > 5000) & (freqs < 7500)])
    return float(10 * np.log10(high / max(low, 1e-30) + 1e-30))


def _trim(audio: np.ndarray, floor_db: float = -40.0) -> np.ndarray:
    """Cut leading and trailing 10 ms frames quieter than the loudest frame minus 40 dB."""
    frames = len(audio) // 160
    if frames == 0:
        return audio
    energy = 10 * np.log10(np.mean(audio[: frames * 160].reshape(frames, 160) ** 2, axis=1) + 1e-20)
    loud = np.flatnonzero(energy > energy.max() + floor_db)
    return audio[loud[0] * 160 : (loud[-1] + 1) * 160]


def _write(out: Path, voice: str, name: str, audio: np.ndarray, package: str, source: str) -> dict:
    sf = require("soundfile")
    path = out / voice / f"{name}.flac"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")
    return {"file": str(path.relative_to(out)), "voice": voice, "package": package,
            "licence": LICENCES[package], "source": source, "seconds": round(len(audio) / SAMPLE_RATE, 3)}


def _espeak_clips(out: Path, progress: bool) -> list[dict]:
    """Synthetic sentences in many voices: extra variety of pitch and language for training."""
    sf = require("soundfile")
    rng = np.random.default_rng(0)
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "say.wav"
        for i in tqdm(range(ESPEAK_UTTERANCES), desc="espeak-ng", unit="utt", disable=None if progress else True):
            voice = ESPEAK_VOICES[i % len(ESPEAK_VOICES)] + ESPEAK_VARIANTS[rng.integers(len(ESPEAK_VARIANTS))]
            words = " ".join(rng.choice(SENTENCES).split()[: int(rng.integers(5, 14))])
            cmd = ["espeak-ng", "-v", voice, "-p", str(rng.integers(25, 75)), "-s", str(rng.integers(130, 190)),
                   "-w", str(wav), words]
            if subprocess.run(cmd, capture_output=True, check=False).returncode != 0:
                raise EdgeAudioError(f"espeak-ng failed for voice {voice}", hint="check `espeak-ng --voices`")
            audio, rate = sf.read(str(wav), dtype="float64")
            audio = _trim(_resample(audio, rate, SAMPLE_RATE, "VHQ"))
            audio = (audio * TARGET_RMS / (np.sqrt(np.mean(audio**2)) + 1e-12)).clip(-1, 1).astype(np.float32)
            entries.append(_write(out, "espeak", f"{i:04d}", audio, "espeak-ng", f"espeak-ng -v {voice}: {words}"))
    return entries


def _installed_version(package: str) -> str | None:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status} ${Version}", package], capture_output=True, text=True,
                            check=False)
    words = result.stdout.split()
    return words[-1] if result.returncode == 0 and "installed" in words[:3] else None


# -- reading it ---------------------------------------------------------------------------------
def corpus_folder() -> Path:
    """Where the corpus lives in the edgeaudio cache (built there or not)."""
    from edgeaudio.cache import cache_root

    return cache_root() / "bwe" / "corpus"


def default_corpus(progress: bool = True) -> Path:
    """The corpus in the edgeaudio cache, built from the installed packages on first use."""
    folder = corpus_folder()
    build(folder, progress=progress)
    return folder


def read_corpus(root: Path) -> list[Clip]:
    """Every clip of a corpus folder with its split: ``test`` (held-out voices), ``val`` (every
    ``VAL_EVERY``-th clip of the other real voices) or ``train``."""
    manifest = json.loads((Path(root) / "SOURCES.json").read_text())
    heldout = set(manifest.get("heldout_voices", HELDOUT))
    clips, seen = [], {}
    for entry in manifest["clips"]:
        voice = entry["voice"]
        index = seen[voice] = seen.get(voice, -1) + 1
        if voice in heldout:
            split = "test"
        elif voice != "espeak" and index % VAL_EVERY == VAL_EVERY - 1:
            split = "val"
        else:
            split = "train"
        clips.append(Clip(Path(root) / entry["file"], voice, split))
    missing = [clip.path for clip in clips if not clip.path.is_file()]
    if missing:
        raise UsageError(f"{Path(root) / 'SOURCES.json'} lists {len(missing)} file(s) that are not there, e.g. {missing[0]}",
                         hint="rebuild the corpus (python -m edgeaudio.plugins.bwe.data --out DIR)")
    return clips


def utterances(clips: list[Clip], seconds: float, per_voice: int) -> list[tuple[str, np.ndarray]]:
    """Evaluation items: each voice's clips joined (in order, 0.15 s apart) into ``seconds``-long
    utterances, at most ``per_voice`` per voice; PESQ needs more than one short exclamation."""
    gap = np.zeros(int(0.15 * SAMPLE_RATE), np.float32)
    items = []
    for voice in sorted({c.voice for c in clips}):
        parts, length, made = [], 0, 0
        for clip in (c for c in clips if c.voice == voice):
            parts += [clip.load(), gap]
            length += len(parts[-2]) + len(gap)
            if length >= seconds * SAMPLE_RATE:
                items.append((voice, np.concatenate(parts)[: int(seconds * SAMPLE_RATE)]))
                parts, length, made = [], 0, made + 1
                if made == per_voice:
                    break
    return items


def speechlike(seed: int, seconds: float) -> np.ndarray:
    """A synthetic wideband stand-in for speech (16 kHz): voiced syllables (a jittered glottal
    pulse train through three formant resonators) and fricative noise bursts with energy up to
    8 kHz. For calibration when no corpus can be built, and for tests that must not need one."""
    from scipy import signal

    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * SAMPLE_RATE))
    position = 0
    while position < len(out):
        length = int(rng.uniform(0.08, 0.3) * SAMPLE_RATE)
        if rng.random() < 0.7:
            f0 = rng.uniform(90, 260) * (1 + 0.05 * np.sin(np.linspace(0, rng.uniform(1, 6), length)))
            phase = np.cumsum(f0 / SAMPLE_RATE)
            source = np.diff(np.floor(phase), prepend=0.0)
            for formant in (rng.uniform(300, 900), rng.uniform(900, 2500), rng.uniform(2500, 4500)):
                b, a = signal.iirpeak(formant, formant / rng.uniform(5, 15), fs=SAMPLE_RATE)
                source = source + signal.lfilter(b, a, source)
        else:
            b, a = signal.butter(4, rng.uniform(2500, 6000), "highpass", fs=SAMPLE_RATE)
            source = 0.3 * signal.lfilter(b, a, rng.standard_normal(length))
        piece = source[: len(out) - position] * np.hanning(length)[: len(out) - position]
        out[position : position + len(piece)] = piece
        position += length + int(rng.uniform(0.0, 0.1) * SAMPLE_RATE)
    return (out * TARGET_RMS / (np.sqrt(np.mean(out**2)) + 1e-12)).clip(-1, 1).astype(np.float32)


# -- narrowband degradation ---------------------------------------------------------------------
def telephone_input(wide: np.ndarray) -> np.ndarray:
    """The reference narrowband path of the benchmark: an 8 kHz recording (soxr HQ down), brought
    to 16 kHz as the runtime does (soxr HQ up). The upsampling baseline is exactly this signal."""
    return _resample(_resample(wide, SAMPLE_RATE, NARROW_RATE, "HQ"), NARROW_RATE, SAMPLE_RATE, "HQ")


def degrade(wide: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A randomly made narrowband version of ``wide`` (16 kHz), returned at 16 kHz, time-aligned.

    Every filter is zero-phase or linear-phase with its delay removed, so input and target stay
    sample-aligned and the model is never asked to undo a phase shift it cannot know.
    """
    x = wide.astype(np.float64)
    path = rng.choice(["resample", "lowpass", "telephone"], p=[0.35, 0.35, 0.3])
    if path == "telephone":
        x = _iir(x, "bandpass", (rng.uniform(200, 400), rng.uniform(3200, 3600)), rng)
    elif path == "lowpass":
        x = _lowpass(x, rng.uniform(3300, 3950), rng)
    narrow = _downsample(x, rng)
    roll = rng.random()
    if roll < 0.35:
        narrow = _companded(narrow, "mu" if rng.random() < 0.5 else "a", rng)
    elif roll < 0.5:
        step = 2.0 ** (1 - int(rng.integers(9, 13)))  # a 9- to 12-bit converter
        narrow = np.round(narrow / step) * step
    return _upsample(narrow, rng).astype(np.float32)[: len(wide)]


def _resample(x: np.ndarray, rate_in: int, rate_out: int, quality: str) -> np.ndarray:
    soxr = require("soxr")
    return soxr.resample(x, rate_in, rate_out, quality=quality) if rate_in != rate_out else x


def _iir(x: np.ndarray, kind: str, cutoff, rng: np.random.Generator) -> np.ndarray:
    from scipy import signal

    family = rng.choice(["butter", "cheby1", "ellip"])
    order = int(rng.integers(3, 8))
    if family == "butter":
        sos = signal.butter(order, cutoff, kind, fs=SAMPLE_RATE, output="sos")
    elif family == "cheby1":
        sos = signal.cheby1(order, rng.uniform(0.1, 1.0), cutoff, kind, fs=SAMPLE_RATE, output="sos")
    else:
        sos = signal.ellip(order, rng.uniform(0.1, 1.0), rng.uniform(40, 70), cutoff, kind, fs=SAMPLE_RATE, output="sos")
    return signal.sosfiltfilt(sos, x)


def _lowpass(x: np.ndarray, cutoff: float, rng: np.random.Generator) -> np.ndarray:
    from scipy import signal

    if rng.random() < 0.5:
        return _iir(x, "lowpass", cutoff, rng)
    taps = signal.firwin(int(rng.integers(16, 64)) * 2 + 1, cutoff, fs=SAMPLE_RATE, window=("kaiser", rng.uniform(4, 10)))
    return signal.fftconvolve(x, taps, mode="same")


def _downsample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy import signal

    roll = rng.random()
    if roll < 0.5:
        return _resample(x, SAMPLE_RATE, NARROW_RATE, str(rng.choice(["QQ", "LQ", "MQ", "HQ", "VHQ"])))
    if roll < 0.8:
        return signal.resample_poly(x, 1, 2, window=("kaiser", rng.uniform(2, 10)))
    return signal.resample(x, len(x) // 2)


def _upsample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy import signal

    roll = rng.random()
    if roll < 0.7:
        return _resample(x, NARROW_RATE, SAMPLE_RATE, "HQ")
    if roll < 0.9:
        return signal.resample_poly(x, 2, 1, window=("kaiser", rng.uniform(4, 10)))
    return _resample(x, NARROW_RATE, SAMPLE_RATE, str(rng.choice(["LQ", "MQ", "VHQ"])))


def _companded(x: np.ndarray, law: str, rng: np.random.Generator) -> np.ndarray:
    """G.711-style 8-bit companding at a random line level (so quiet talkers get coarser steps)."""
    gain = 10 ** (rng.uniform(-6, 12) / 20)
    y = np.clip(x * gain, -1, 1)
    mag = np.abs(y)
    if law == "mu":
        coded = np.log1p(255 * mag) / np.log1p(255)
        coded = np.round(coded * 127) / 127
        decoded = np.expm1(coded * np.log1p(255)) / 255
    else:
        a = 87.6
        small = mag < 1 / a
        coded = np.where(small, a * mag, 1 + np.log(np.maximum(a * mag, 1e-12))) / (1 + np.log(a))
        coded = np.round(coded * 127) / 127
        decoded = np.where(coded < 1 / (1 + np.log(a)), coded * (1 + np.log(a)) / a,
                           np.exp(coded * (1 + np.log(a)) - 1) / a)
    return np.sign(y) * decoded / gain


# -- training pairs -----------------------------------------------------------------------------
class TrainPairs:
    """Random ``seconds``-long crops of the training clips as (narrowband, wideband) float32 pairs
    [1, samples], each at a random level. ``items`` crops make one epoch.

    Randomness comes from numpy's global generator, which the training loop reseeds every epoch,
    so a resumed run sees the same crops as an uninterrupted one.
    """

    MARGIN = 800  # filters and resamplers see 50 ms beyond the crop, so crop edges look like the middle

    def __init__(self, clips: list[Clip], seconds: float, items: int):
        self.clips = clips
        self.samples = int(seconds * SAMPLE_RATE)
        self.items = items
        lengths = np.array([len(c.load()) for c in clips], dtype=np.float64)
        self.weights = lengths / lengths.sum()

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, index: int):
        import torch

        rng = np.random.default_rng(np.random.randint(2**31))
        audio = self.clips[rng.choice(len(self.clips), p=self.weights)].load()
        span = self.samples + 2 * self.MARGIN
        if len(audio) < span:
            start = int(rng.integers(0, span - len(audio) + 1))
            audio = np.pad(audio, (start, span - len(audio) - start))
        start = int(rng.integers(0, len(audio) - span + 1))
        wide = audio[start : start + span] * 10 ** (rng.uniform(-20, 6) / 20)
        narrow = degrade(wide, rng)
        cut = slice(self.MARGIN, self.MARGIN + self.samples)
        return torch.from_numpy(narrow[cut][None].copy()), torch.from_numpy(wide[cut][None].astype(np.float32))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeaudio.plugins.bwe.data", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to write the corpus into")
    parser.add_argument("--install", action="store_true", help="apt-get install the source packages first")
    args = parser.parse_args(argv)
    try:
        manifest = build(args.out, install=args.install)
    except EdgeAudioError as exc:
        return report(exc)
    print(f"{len(manifest['clips'])} clips in {args.out} (left out: {manifest['dropped']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
