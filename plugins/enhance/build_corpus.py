"""Build the speech enhancement corpus from real recordings that Debian packages ship.

    python -m edgeaudio.plugins.enhance.build_corpus [--out DIR] [--install] [--ship]

Clean speech: the Asterisk voice prompts (professional voice talent, CC-BY-SA-3.0; G.722, so
wide-band 16 kHz audio), the Czech voice acting of Fish Fillets (GPL-2), and espeak-ng sentences
for variety (training only). Noise: the built-in event library (``edgeaudio.events``), split by
recording, without its speech class. Reverberation: simulated rooms (pyroomacoustics).

The test split's voices (Italian male ``it_IT_m_Carlo``, Canadian French female
``fr_CA_f_June``), noise recordings and rooms are never in training. The same command on the same
package versions writes the same corpus. ``--ship`` also writes the small validation set the
task ships for its INT8 gate into the package (``plugins/enhance/validation``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgeaudio.errors import EdgeAudioError, UsageError, report, require
from edgeaudio.plugins.enhance.data import SAMPLE_RATE, Pools, mix, read_mono, write_pairs

SEED = 0
# the event library edition the noise comes from: the one the shipped weights trained and were scored on
NOISE_EDITION = 1
ASTERISK = "/usr/share/asterisk/sounds"
FILLETS = "/usr/share/games/fillets-ng/sound"
TEST_MIXTURES_PER_BUCKET = 24
TEST_SECONDS = 4.0
SNR_BUCKETS = ((-5.0, 0.0), (0.0, 5.0), (5.0, 10.0), (10.0, 15.0), (15.0, 20.0))
VALIDATION_MIXTURES, VALIDATION_SECONDS = 16, 3.0
ROOMS = {"train": 60, "test": 20}
ESPEAK_SENTENCES = 400
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "croak")
ESPEAK_LANGUAGES = ("en-us", "en-gb", "en-gb-scotland", "en-029")
MIN_UTTERANCE, MAX_UTTERANCE = 0.6, 8.0
UTTERANCE_RMS_DBFS = -25.0


@dataclass(frozen=True)
class Voice:
    """One speaker: ``files`` is a glob of their recordings in ``package``."""

    name: str
    package: str
    files: str
    split: str
    licence: str
    description: str


VOICES = [
    Voice("en_US_f_Allison", "asterisk-core-sounds-en-g722", f"{ASTERISK}/en_US_f_Allison/**/*.g722", "train",
          "CC-BY-SA-3.0", "Allison Smith, US English prompts"),
    Voice("es_MX_f_Allison", "asterisk-core-sounds-es-g722", f"{ASTERISK}/es_MX_f_Allison/**/*.g722", "train",
          "CC-BY-SA-3.0", "Allison Smith, Mexican Spanish prompts"),
    Voice("ru_RU_f_IvrvoiceRU", "asterisk-core-sounds-ru-g722", f"{ASTERISK}/ru_RU_f_IvrvoiceRU/**/*.g722", "train",
          "CC-BY-SA-3.0", "Russian prompts, female"),
    Voice("fillets_cs_small_fish", "fillets-ng-data-cs", f"{FILLETS}/*/cs/*-m-*.ogg", "train",
          "GPL-2", "Fish Fillets NG Czech voice acting, small fish (female)"),
    Voice("fillets_cs_big_fish", "fillets-ng-data-cs", f"{FILLETS}/*/cs/*-v-*.ogg", "train",
          "GPL-2", "Fish Fillets NG Czech voice acting, big fish (male)"),
    Voice("it_IT_m_Carlo", "asterisk-core-sounds-it-g722", f"{ASTERISK}/it_IT_m_Carlo/**/*.g722", "test",
          "CC-BY-SA-3.0", "Italian prompts, male"),
    Voice("fr_CA_f_June", "asterisk-core-sounds-fr-g722", f"{ASTERISK}/fr_CA_f_June/**/*.g722", "test",
          "CC-BY-SA-3.0", "June Wallack, Canadian French prompts"),
]
PACKAGES = sorted({v.package for v in VOICES} | {"espeak-ng", "base-files"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeaudio.plugins.enhance.build_corpus", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="corpus folder (default: the edgeaudio cache)")
    parser.add_argument("--install", action="store_true", help="apt-get install the source packages first (as root)")
    parser.add_argument("--ship", action="store_true", help="also write the packaged validation set")
    args = parser.parse_args(argv)
    try:
        build(args.out or default_corpus(), install=args.install, ship=args.ship)
    except EdgeAudioError as exc:
        return report(exc)
    return 0


def default_corpus() -> Path:
    from edgeaudio.cache import cache_root

    return cache_root() / "enhance" / "corpus"


def build(out: Path, install: bool = False, ship: bool = False, progress: bool = True) -> dict:
    """Write the corpus into ``out`` (replacing a previous build) and return CORPUS.json's content."""
    from edgeaudio.events.build_library import _apt_install, _installed_version

    started = time.monotonic()
    if install:
        _apt_install([p for p in PACKAGES if not _installed_version(p)])
    versions = {p: _installed_version(p) for p in PACKAGES}
    missing = [p for p, v in versions.items() if not v]
    if missing:
        raise UsageError(f"missing Debian packages: {' '.join(missing)}",
                         hint="python -m edgeaudio.plugins.enhance.build_corpus --install (as root) installs them "
                              "and builds the corpus; then train again")
    if out.exists() and any(out.iterdir()) and not (out / "CORPUS.json").is_file():
        raise UsageError(f"{out} is not empty and holds no previous corpus", hint="pick an empty folder")
    final, out = out, out.parent / f".{out.name}.partial"  # an interrupted build never looks finished
    shutil.rmtree(out, ignore_errors=True)
    speech = {v.name: _write_voice(out, v, progress) for v in VOICES}
    speech["espeak_ng"] = _write_espeak(out, progress)
    noise = _write_noise(out, install, progress)
    rooms = {split: _write_rooms(out / "rirs" / split, count, SEED + i) for i, (split, count) in enumerate(ROOMS.items())}
    test_pools = Pools.load(out, "test")
    write_pairs(out / "test", _stratified(test_pools, TEST_MIXTURES_PER_BUCKET, TEST_SECONDS, SEED + 100))
    validation = _stratified(test_pools, VALIDATION_MIXTURES // len(SNR_BUCKETS) + 1, VALIDATION_SECONDS, SEED + 200)
    write_pairs(out / "validation", validation[:VALIDATION_MIXTURES])
    manifest = {
        "generator": "python -m edgeaudio.plugins.enhance.build_corpus",
        "sample_rate": SAMPLE_RATE,
        "packages": versions,
        "speech": speech,
        "noise": noise,
        "rooms": rooms,
        "test": {"mixtures": TEST_MIXTURES_PER_BUCKET * len(SNR_BUCKETS), "seconds": TEST_SECONDS,
                 "snr_buckets": SNR_BUCKETS, "seed": SEED + 100},
        "validation": {"mixtures": VALIDATION_MIXTURES, "seconds": VALIDATION_SECONDS, "seed": SEED + 200},
    }
    (out / "CORPUS.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    out = out.rename(final)
    if ship:
        _ship_validation(out, manifest)
    minutes = {split: sum(s["seconds"] for s in speech.values() if s["split"] == split) / 60 for split in ("train", "test")}
    print(f"corpus: {out}: speech {minutes['train']:.1f} min train / {minutes['test']:.1f} min test, "
          f"noise {len(noise['train'])} / {len(noise['test'])} clips, in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return manifest


# --- speech ---------------------------------------------------------------------------------------


def _write_voice(out: Path, voice: Voice, progress: bool) -> dict:
    import glob

    sf = require("soundfile")
    files = sorted(glob.glob(voice.files, recursive=True))
    folder = out / "speech" / voice.split / voice.name
    folder.mkdir(parents=True, exist_ok=True)
    seconds, kept = 0.0, 0
    for path in tqdm(files, desc=voice.name, unit="file", disable=None if progress else True, leave=False):
        audio = _decode(Path(path))
        audio = trim_and_level(audio) if len(audio) else None
        if audio is None:
            continue
        sf.write(str(folder / f"{Path(path).stem}.wav"), audio, SAMPLE_RATE, subtype="PCM_16")
        seconds += len(audio) / SAMPLE_RATE
        kept += 1
    return {"split": voice.split, "package": voice.package, "licence": voice.licence, "description": voice.description,
            "source": voice.files, "utterances": kept, "seconds": round(seconds, 1)}


def _decode(path: Path) -> np.ndarray:
    """G.722 through PyAV (libavcodec; soundfile cannot read it), everything else through soundfile.

    A file with no decodable frame (a few prompts are empty) comes back empty.
    """
    if path.suffix != ".g722":
        return read_mono(path)
    av = require("av")
    with av.open(str(path), format="g722") as container:
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
        rate = container.streams.audio[0].rate
    if not frames:
        return np.zeros(0, np.float32)
    audio = np.concatenate(frames).astype(np.float32) / 32768.0
    if rate != SAMPLE_RATE:
        raise EdgeAudioError(f"{path} decoded at {rate} Hz, expected {SAMPLE_RATE}")
    return audio


def trim_and_level(audio: np.ndarray) -> np.ndarray | None:
    """Cut leading and trailing silence (40 dB under the peak frame, 0.1 s kept), set the level.

    Returns None for clips too short to be speech or too long to mix well.
    """
    frame = SAMPLE_RATE // 100
    n = len(audio) // frame
    if n == 0:
        return None
    energy = 10 * np.log10(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    active = np.flatnonzero(energy > energy.max() - 40.0)
    start = max(0, active[0] * frame - SAMPLE_RATE // 10)
    stop = min(len(audio), (active[-1] + 1) * frame + SAMPLE_RATE // 10)
    audio = audio[start:stop]
    if not MIN_UTTERANCE * SAMPLE_RATE <= len(audio) <= MAX_UTTERANCE * SAMPLE_RATE:
        return None
    rms = np.sqrt(np.mean(audio**2)) + 1e-12
    return (audio * 10 ** (UTTERANCE_RMS_DBFS / 20) / rms).astype(np.float32)


def _write_espeak(out: Path, progress: bool) -> dict:
    """Sentences of the GPL text in English voice variants at random rate and pitch (train only)."""
    sf = require("soundfile")
    text = Path("/usr/share/common-licenses/GPL-3").read_text()
    sentences = [s.strip() for s in re.split(r"(?<=[.;:])\s+", re.sub(r"\s+", " ", text))]
    sentences = [s for s in sentences if 5 <= len(s.split()) <= 25]
    rng = np.random.default_rng([SEED, zlib.crc32(b"espeak")])
    chosen = [sentences[i] for i in rng.permutation(len(sentences))[:ESPEAK_SENTENCES]]
    folder = out / "speech" / "train" / "espeak_ng"
    folder.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i, sentence in enumerate(tqdm(chosen, desc="espeak-ng", unit="sentence", disable=None if progress else True, leave=False)):
            voice = f"{ESPEAK_LANGUAGES[i % len(ESPEAK_LANGUAGES)]}+{ESPEAK_VARIANTS[rng.integers(len(ESPEAK_VARIANTS))]}"
            wav = Path(tmp) / "s.wav"
            rate, pitch = str(rng.integers(130, 200)), str(rng.integers(25, 75))
            command = ["espeak-ng", "-v", voice, "-s", rate, "-p", pitch, "-w", str(wav), sentence]
            subprocess.run(command, check=True, capture_output=True)
            audio = trim_and_level(read_mono(wav))
            if audio is not None:
                sf.write(str(folder / f"s{i:04d}.wav"), audio, SAMPLE_RATE, subtype="PCM_16")
                seconds += len(audio) / SAMPLE_RATE
    return {"split": "train", "package": "espeak-ng", "licence": "synthesized (espeak-ng, GPL-3; text: GPL-3 licence text)",
            "description": "espeak-ng English variants, rate 130-200 wpm, pitch 25-75", "utterances": len(list(folder.iterdir())),
            "seconds": round(seconds, 1)}


# --- noise and rooms ------------------------------------------------------------------------------


def _write_noise(out: Path, install: bool, progress: bool) -> dict:
    """The event library's clips at 16 kHz, split by recording exactly as SELD splits it."""
    from edgeaudio.events import EventLibrary
    from edgeaudio.events.build_library import ensure_builtin

    sf = require("soundfile")
    root = ensure_builtin(install=install, progress=progress, edition=NOISE_EDITION)
    library = EventLibrary.from_folder(root, sample_rate=SAMPLE_RATE)
    sources = {c["file"]: c for c in json.loads((root / "SOURCES.json").read_text())["clips"]}
    listing: dict[str, list[dict]] = {}
    for split, half in zip(("train", "test"), library.split(0.2, seed=SEED)):
        listing[split] = []
        for label in [c for c in half.classes if c != "speech"]:
            for clip in half.clips(label):
                target = out / "noise" / split / label / clip.path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(target), half.load(clip), SAMPLE_RATE, subtype="PCM_16")
                source = sources.get(f"{label}/{clip.path.name}", {})
                listing[split].append({"file": f"{label}/{clip.path.name}", "recording": clip.recording,
                                       "package": source.get("package"), "licence": source.get("licence")})
    return listing


def _write_rooms(folder: Path, count: int, seed: int) -> dict:
    """Single-mic shoebox responses (RT60 0.2-0.8 s), starting at the direct sound, peak 1."""
    pra = require("pyroomacoustics")
    sf = require("soundfile")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    described = []
    for i in range(count):
        size = rng.uniform([3.0, 3.0, 2.4], [10.0, 8.0, 3.5])
        rt60 = float(rng.uniform(0.2, 0.8))
        absorption, order = pra.inverse_sabine(rt60, size)
        room = pra.ShoeBox(size, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=min(order, 12))
        mic = rng.uniform(0.5, size - 0.5)
        direction = rng.standard_normal(3)
        source = np.clip(mic + rng.uniform(0.5, 3.0) * direction / np.linalg.norm(direction), 0.3, size - 0.3)
        room.add_source(source)
        room.add_microphone(mic)
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float64)
        peak = int(np.argmax(np.abs(rir)))
        rir = rir[max(0, peak - 16) :] / np.abs(rir[peak])
        sf.write(str(folder / f"{i:03d}.wav"), (rir * 0.5).astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
        distance = float(np.linalg.norm(source - mic))
        described.append({"size_m": size.round(2).tolist(), "rt60_s": round(rt60, 3), "distance_m": round(distance, 2)})
    return {"count": count, "seed": seed, "rooms": described}


def _stratified(pools: Pools, per_bucket: int, seconds: float, seed: int):
    """Mixtures with input SNRs spread evenly over every bucket, so each bucket is measured."""
    rng = np.random.default_rng(seed)
    mixtures = []
    for _ in range(per_bucket):
        for low, high in SNR_BUCKETS:
            mixtures.append(mix(pools, seconds, rng, snr_db=float(rng.uniform(low, high))))
    return mixtures


def _ship_validation(out: Path, manifest: dict) -> None:
    """Copy the validation pairs into the package, with where their audio came from."""
    target = Path(__file__).parent / "validation"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(out / "validation", target)
    test_voices = {k: v for k, v in manifest["speech"].items() if v["split"] == "test"}
    sources = {"generator": manifest["generator"] + " --ship", "speech": test_voices,
               "noise": manifest["noise"]["test"], "packages": manifest["packages"]}
    (target / "SOURCES.json").write_text(json.dumps(sources, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
