"""SELD training data: recordings with DCASE metadata -> random crops with multi-ACCDOA ADPIT targets.

Recordings come from a synthesized folder (``classes.json``, ``mic/*.wav``, ``metadata/*.csv``, as
:func:`edgeaudio.plugins.seld.scenes.synthesize_dataset` writes it) or a STARSS22/23 root. Targets follow the
DCASE baseline's ADPIT (auxiliary duplicating permutation invariant training): per frame and
class, one instance goes to dummy track A0, two to B0/B1, three to C0/C1/C2, and the loss takes the
best of the 13 ways to lay those onto the network's 3 output tracks, so the network never has to
guess which of two same-class sources is "track 1".
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeaudio.audio.files import read_audio
from edgeaudio.errors import UsageError
from edgeaudio.plugins.seld.scenes.metadata import EventRow, read_csv, read_csv_lines

from edgeaudio.plugins.seld.model import TRACKS

DUMMY_TRACKS = 6  # A0 | B0 B1 | C0 C1 C2
_FIRST_DUMMY = {1: 0, 2: 1, 3: 3}  # where the dummy tracks of a class with n instances start


@dataclass
class Recording:
    """A multichannel recording at the task's rate with its metadata rows (100 ms frames)."""

    name: str
    audio: np.ndarray  # float32 [mics, samples]
    rows: list[EventRow]

    def label_set(self) -> dict[int, list[tuple]]:
        """Rows as the metrics' label set: ``frame -> [(class, azimuth, elevation, source), ...]``."""
        labels: dict[int, list[tuple]] = {}
        for row in self.rows:
            labels.setdefault(row.frame, []).append((row.class_index, float(row.azimuth), float(row.elevation), row.source_index))
        return labels


@dataclass
class Pairs:
    """The (audio, metadata) files of a folder, the class names its class column indexes, the
    channels its audio must have (one per mic), and what the folder is, for messages."""

    files: list[tuple[Path, Path]]
    classes: list[str]
    mics: int | None
    kind: str


def read_folder(folder: str | Path, sample_rate: int, split: str | None = None) -> tuple[list[Recording], list[str] | None]:
    """Recordings of a synthesized folder or a STARSS root, and the class names when the folder says.

    ``split`` picks STARSS split folders by prefix (``"dev-train"``); synthesized folders ignore it.
    Every file is checked (:func:`check_pairs`) before any audio is loaded.
    """
    pairs = list_pairs(folder, split)
    check_pairs(pairs, sample_rate)
    return [_read_pair(wav, csv, sample_rate) for wav, csv in pairs.files], pairs.classes


def list_pairs(folder: str | Path, split: str | None = None) -> Pairs:
    root = Path(folder)
    if (root / "classes.json").is_file():
        info = json.loads((root / "classes.json").read_text())
        wavs = sorted((root / "mic").glob("*.wav"))
        if not wavs:
            raise UsageError(f"{root}/mic holds no .wav scenes", hint="synthesize scenes into it first")
        mics = len(info["mic_positions"]) if "mic_positions" in info else None
        files = [(wav, root / "metadata" / f"{wav.stem}.csv") for wav in wavs]
        return Pairs(files, list(info["classes"]), mics, f"the scenes synthesized in {root}")
    from edgeaudio.plugins.seld.starss import MIC_CAPSULES_AZ_EL_DEG, STARSS23_CLASSES, StarssDataset

    starss = StarssDataset(root, "mic", [split] if split else None)
    return Pairs(starss.pairs, list(STARSS23_CLASSES), len(MIC_CAPSULES_AZ_EL_DEG), "STARSS MIC-format audio")


def check_pairs(pairs: Pairs, sample_rate: int) -> None:
    """Refuse, naming the file (and the line of a metadata row), audio whose channel count is not
    the array's, audio recorded below the model's rate, and rows whose class index is not one of
    the folder's classes, whose angles are out of range, or that lie past the end of the audio.
    Only headers and CSVs are read, so a bad file anywhere (the test split too) fails at once."""
    import soundfile as sf

    n_classes = len(pairs.classes)
    for wav, csv_path in pairs.files:
        try:
            info = sf.info(str(wav))
        except RuntimeError as exc:
            raise UsageError(f"{wav} is not a readable audio file ({exc})") from exc
        if pairs.mics is not None and info.channels != pairs.mics:
            raise UsageError(
                f"{wav} has {info.channels} channel(s), but {pairs.kind} has {pairs.mics}, one per microphone",
                hint="every recording must come from the same array, all of its channels in its order "
                     "(STARSS: the mic_dev files, not foa_dev or a mixed-down copy)")
        if info.samplerate < sample_rate:
            raise UsageError(f"{wav} is {info.samplerate} Hz, below the model's {sample_rate} Hz",
                             hint="use the recordings at their original rate (STARSS: 24 kHz)")
        frames = math.ceil(info.frames / info.samplerate / 0.1)
        for line, row in read_csv_lines(csv_path):
            problem = None
            if not 0 <= row.class_index < n_classes:
                problem = f"class {row.class_index} is not one of the {n_classes} classes (0-{n_classes - 1})"
            elif not -180 <= row.azimuth <= 180 or not -90 <= row.elevation <= 90:
                problem = f"direction ({row.azimuth}, {row.elevation}) is outside azimuth -180..180, elevation -90..90"
            elif not 0 <= row.frame <= frames:
                problem = f"frame {row.frame} lies outside the {info.frames / info.samplerate:.1f} s of {wav.name} ({frames} frames)"
            if problem:
                raise UsageError(f"{csv_path} line {line}: {problem}",
                                 hint=f"rows are frame,class,source,azimuth,elevation; classes: {', '.join(pairs.classes)}")


def _read_pair(wav: Path, csv: Path, sample_rate: int) -> Recording:
    audio, _, _ = read_audio(wav, sample_rate=sample_rate)
    return Recording(wav.stem, audio, read_csv(csv))


def unit_vectors(azimuth_deg: np.ndarray, elevation_deg: np.ndarray) -> np.ndarray:
    """DCASE angles (azimuth counter-clockwise from +x, elevation up) -> unit xyz [..., 3]."""
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)


def adpit_targets(rows: list[EventRow], n_frames: int, num_classes: int) -> np.ndarray:
    """Dense targets [frames, DUMMY_TRACKS, 3, classes]: unit vectors of active events, else zero.

    Same-class instances of a frame are ordered by source index; beyond three, the first three count.
    """
    target = np.zeros((n_frames, DUMMY_TRACKS, 3, num_classes), np.float32)
    by_key: dict[tuple[int, int], list[EventRow]] = {}
    for row in rows:
        if 0 <= row.frame < n_frames and 0 <= row.class_index < num_classes:
            by_key.setdefault((row.frame, row.class_index), []).append(row)
    for (frame, cls), events in by_key.items():
        events = sorted(events, key=lambda r: r.source_index)[:TRACKS]
        first = _FIRST_DUMMY[len(events)]
        for k, event in enumerate(events):
            target[frame, first + k, :, cls] = unit_vectors(event.azimuth, event.elevation)
    return target


def _adpit_layouts() -> torch.Tensor:
    """The 13 candidate layouts [13, groups=3, TRACKS] of dummy tracks onto output tracks.

    Each candidate permutes one group (A, B or C) and keeps the others in their first layout, as in
    the DCASE baseline; only one group is non-zero for a given frame and class, so the padding
    with the other groups changes nothing there and keeps every candidate a valid assignment.
    """
    a = [(0, 0, 0)]
    b = sorted(set(itertools.permutations((1, 1, 2))) | set(itertools.permutations((1, 2, 2))))
    c = list(itertools.permutations((3, 4, 5)))
    layouts = [(p, b[0], c[0]) for p in a] + [(a[0], p, c[0]) for p in b] + [(a[0], b[0], p) for p in c]
    return torch.tensor(layouts)


_LAYOUTS = _adpit_layouts()


def adpit_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ADPIT mean squared error of multi-ACCDOA ``output`` [batch, frames, TRACKS*3*C] against
    ``target`` [batch, frames, DUMMY_TRACKS, 3, C]: per frame and class, the best of 13 layouts."""
    batch, frames, _, _, classes = target.shape
    output = output.reshape(batch, frames, 1, TRACKS, 3, classes)
    candidates = target[:, :, _LAYOUTS.to(target.device)].sum(dim=3)  # [b, t, 13, TRACKS, 3, C]
    errors = ((output - candidates) ** 2).mean(dim=(3, 4))  # [b, t, 13, C]
    return errors.min(dim=2).values.mean()


def array_symmetries(positions: np.ndarray, tolerance: float = 1e-3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rotations about z (15 degree steps) and mirror images that map the array onto itself.

    Each is ``(permutation, matrix)``: the 3x3 ``matrix`` takes mic i to mic ``permutation[i]``
    (about the array centre). Rotating the scene by ``matrix`` then means moving channel i to
    channel ``permutation[i]`` and rotating the labels: a square array gives eight versions of
    every crop, an irregular one only the identity. Up/down flips are left out on purpose: a flat
    array cannot hear them, so they would only teach it to doubt the elevations it can infer.
    """
    centred = np.asarray(positions, dtype=np.float64) - np.mean(positions, axis=0)
    found = []
    for degrees, mirror in itertools.product(range(0, 360, 15), (1.0, -1.0)):
        angle = math.radians(degrees)
        rotation = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
        matrix = rotation @ np.diag([1.0, mirror, 1.0])
        moved = centred @ matrix.T
        distances = np.linalg.norm(moved[:, None, :] - centred[None, :, :], axis=-1)
        permutation = distances.argmin(axis=1)
        if distances.min(axis=1).max() < tolerance and len(set(permutation)) == len(centred):
            found.append((permutation, matrix))
    return found


class SeldCrops(Dataset):
    """Random crops of ``crop_blocks`` 100 ms blocks with their ADPIT targets.

    Item i comes from recording ``i % len(recordings)`` at a random whole-block offset, with a
    random array symmetry and a random gain in ``gain_db`` (real capture levels vary far more than
    the synthesizer's peak-normalised scenes). Randomness is numpy's global generator, which the
    training loop reseeds per epoch, so runs repeat exactly.
    """

    def __init__(
        self,
        recordings: list[Recording],
        num_classes: int,
        positions: np.ndarray,
        block: int = 1600,
        crop_blocks: int = 50,
        gain_db: tuple[float, float] = (-20.0, 0.0),
        augment: bool = True,
    ):
        if not recordings:
            raise UsageError("no recordings to train on")
        self.recordings, self.block, self.crop_blocks, self.gain_db = recordings, block, crop_blocks, gain_db
        self.targets = [adpit_targets(r.rows, math.ceil(r.audio.shape[1] / block), num_classes) for r in recordings]
        self.symmetries = array_symmetries(positions) if augment else []
        total_blocks = sum(len(t) for t in self.targets)
        self.length = max(len(recordings), total_blocks // crop_blocks)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        recording, target = self.recordings[index % len(self.recordings)], self.targets[index % len(self.recordings)]
        start = np.random.randint(0, max(len(target) - self.crop_blocks, 0) + 1)
        audio = np.zeros((recording.audio.shape[0], self.crop_blocks * self.block), np.float32)
        piece = recording.audio[:, start * self.block : (start + self.crop_blocks) * self.block]
        audio[:, : piece.shape[1]] = piece
        labels = np.zeros((self.crop_blocks, *target.shape[1:]), np.float32)
        labels[: len(target) - start] = target[start : start + self.crop_blocks]
        if self.symmetries:
            permutation, matrix = self.symmetries[np.random.randint(len(self.symmetries))]
            audio[permutation] = audio.copy()
            labels = np.einsum("ij,tdjc->tdic", matrix, labels).astype(np.float32)
        audio *= 10 ** (np.random.uniform(*self.gain_db) / 20)
        return torch.from_numpy(audio), torch.from_numpy(labels)
