"""DCASE 2022/23 SELD metrics and the multi-ACCDOA decoder.

Written from the published definitions (Mesaros et al. 2019, "Joint measurement of localization and
detection of sound events"; Politis et al. 2020, "Overview and evaluation of sound event localization
and detection in DCASE 2019"; the DCASE 2022/23 task 3 pages), not from the challenge's code; where
the two differ, the challenge's reference code decides (unmatched tracks, step 4), so the scores
printed here are the ones the field compares (tests/test_seld_metrics.py pins them).

Label set: ``dict[frame] -> list[(class_index, azimuth_deg, elevation_deg[, track_id])]`` with 100 ms
frames. Azimuth is counter-clockwise from +x (90 = left, +y), elevation up from the xy-plane. Several
instances of one class may share a frame; frames without events may be missing or map to ``[]``.

How a prediction is scored (segment-based, the DCASE 2022/23 default):

1. Frames are grouped into blocks of ``frames_per_segment`` frames (10 = 1 s); the frame-based variant
   uses blocks of one frame (as DCASE 2024 does).
2. Per block and class, the reference and predicted instance counts are the largest number of
   simultaneous instances in any frame of the block (``n_ref``, ``n_pred``). ``Nref`` sums ``n_ref``.
3. In every frame where both have the class, instances are paired by Hungarian assignment on angular
   distance. A reference *track* is the rank of the instance within its frame (ordered by track id
   when given, else by list order), so the matched tracks never outnumber ``n_ref``. Each matched
   reference track gets the mean distance over the frames it was matched in.
4. A matched track is a TP when that mean is <= ``doa_threshold`` (20 deg), else a spatial false
   positive (``FP_spatial``). Unmatched tracks are booked as the challenge's reference code books
   them (seld-dcase2023 ``SELD_evaluation_metrics.py``), so printed scores equal the field's: only
   the difference of the counts, ``n_pred - n_ref`` extra predictions as false positives (``FP``)
   or ``n_ref - n_pred`` missing ones as false negatives (``FN``); a reference track and a
   prediction that never share a frame cost nothing beyond that. Where the class is in both but
   never in the same frame, the reference code books ``n_pred`` as FN (and no FP), and so do we.
5. Per block, with FP + FP_spatial false positives and FN misses over all classes: substitutions
   ``S = min(FP, FN)``, deletions ``D = max(0, FN - FP)``, insertions ``I = max(0, FP - FN)``, so a
   mislocalised detection is one insertion, as in DCASE.

Scores, macro-averaged over classes like DCASE 2022/23 (per-class values, then their plain mean):

- ``ER = (S + D + I) / Nref`` over all classes (one number, as DCASE; it enters every class's SELD).
- ``F_c = TP / (TP + FP_spatial + (FP + FN) / 2)``: a mislocalised detection is both a false alarm and
  a miss, so it weighs twice a plain one (standard F1 with it counted on both sides).
- ``LE_c`` = mean distance of the class-matched tracks (TP and FP_spatial alike); 180 when the class
  occurs but none matched, DCASE's convention for an undefined error.
- ``LR_c`` = matched tracks / (matched tracks + FN); 0 for a class that is only predicted (DCASE's
  epsilon-guarded division gives the same).
- ``SELD_c = mean(ER, 1 - F_c, LE_c / 180, 1 - LR_c)``; ``F``, ``LE``, ``LR`` and ``SELD`` are the means
  of the class values, hence ``SELD = mean(ER, 1 - F, LE / 180, 1 - LR)``.
- ``LE_micro``: the mean distance over all matched tracks of all classes (DCASE's micro average).
  Read it next to ``LE``: a class that occurs but is never detected enters the macro ``LE`` at
  180 degrees, so a detector that misses half the classes scores an ``LE`` near 90 however well
  it localizes what it does detect; ``LE_micro`` is how far off the detected events are.

Conventions where the definitions say nothing:

- A class absent from both references and predictions is left out of the macro mean and its class
  values are NaN. DCASE averages over every class and would score such a class F 0, LE 180, LR 0;
  the two agree whenever every class occurs in the reference, as on STARSS23 dev-test.
- No reference events at all: ``ER`` divides by ``max(Nref, 1)``, so spurious predictions on a silent
  clip give ER = their count, finite for averaging and early stopping (DCASE divides by an epsilon).
- Neither references nor predictions: a perfect score (ER 0, F 1, LE 0, LR 1, SELD 0).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from edgeaudio.errors import UsageError

LabelSet = dict[int, list[tuple]]

_COUNT_NAMES = {"TP": "tp", "FP": "fp", "FP_spatial": "fp_spatial", "FN": "fn", "Nref": "n_ref"}


def angular_distance_deg(az1, el1, az2, el2) -> np.ndarray:
    """Great-circle angle in degrees between directions given in degrees; numpy broadcasting applies.

    Computed as atan2(|u x v|, u . v) on unit vectors, which stays exact near 0 and 180 degrees where
    the arccos of a dot product loses precision.
    """
    return _angle_between(_unit_vector(az1, el1), _unit_vector(az2, el2))


def _unit_vector(az, el) -> np.ndarray:
    az, el = np.radians(np.asarray(az, dtype=float)), np.radians(np.asarray(el, dtype=float))
    return np.stack(np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)), axis=-1)


def _angle_between(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    cross = np.linalg.norm(np.cross(u, v), axis=-1)
    return np.degrees(np.arctan2(cross, np.sum(u * v, axis=-1)))


def _vector_to_az_el(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y, z = vectors[..., 0], vectors[..., 1], vectors[..., 2]
    return np.degrees(np.arctan2(y, x)), np.degrees(np.arctan2(z, np.hypot(x, y)))


def accdoa_to_labels(accdoa, num_classes: int, tracks: int = 3, threshold: float = 0.5,
                     merge_deg: float = 15.0) -> LabelSet:
    """Decode multi-ACCDOA output ``[frames, tracks * 3 * num_classes]`` into a label set.

    Column layout is track-major, then axis, then class: ``index = track * 3 * C + axis * C + class``
    with axis 0, 1, 2 = x, y, z. A class is active in a track when its vector is longer than
    ``threshold``. Active tracks of one class whose directions are closer than ``merge_deg`` are one
    source predicted twice (ADPIT lets tracks duplicate), so they are merged: linked pairwise into
    groups, and each group becomes the mean of its raw vectors (longer, more confident vectors weigh
    more), as the DCASE baseline unifies its three tracks. Each event is ``(class, az, el, track)``
    with the lowest track index of its group; frames without events are left out.
    """
    return {frame: [event[:4] for event in events]
            for frame, events in accdoa_events(accdoa, num_classes, tracks, threshold, merge_deg).items()}


def accdoa_events(accdoa, num_classes: int, tracks: int = 3, threshold: float = 0.5,
                  merge_deg: float = 15.0) -> dict[int, list[tuple]]:
    """``accdoa_to_labels`` with each event's ``length`` last: ``(class, az, el, track, length)``,
    the length of track ``track``'s own vector (its activity; what confidence reports)."""
    out = np.asarray(accdoa)
    if out.dtype.char not in "fd":  # float32 and float64 are read as they are
        out = out.astype(float)
    expected = tracks * 3 * num_classes
    if out.ndim != 2 or out.shape[1] != expected:
        raise UsageError(
            f"multi-ACCDOA output has shape {out.shape}, expected [frames, {expected}] "
            f"({tracks} tracks x 3 axes x {num_classes} classes)"
        )
    if len(out) == 1:  # a streamed frame
        events = _frame_events(memoryview(out[0]), num_classes, tracks, threshold, merge_deg)
        return {0: events} if events else {}
    vectors = np.asarray(out, dtype=float).reshape(len(out), tracks, 3, num_classes)  # frame, track, xyz, class
    lengths = np.sqrt((vectors * vectors).sum(axis=2))  # np.linalg.norm's arithmetic, without its overhead
    frames, classes, track_ids = np.nonzero((lengths > threshold).transpose(0, 2, 1))  # by frame, class, track
    # The few active vectors in plain floats: numpy's per-call cost would exceed the arithmetic.
    rows = vectors[frames, track_ids, :, classes].tolist()
    found_lengths = lengths[frames, track_ids, classes].tolist()
    keys = list(zip(frames.tolist(), classes.tolist()))
    track_ids = track_ids.tolist()
    events: dict[int, list[tuple]] = {}
    start = 0
    while start < len(keys):
        end = start + 1
        while end < len(keys) and keys[end] == keys[start]:
            end += 1
        frame, cls = keys[start]
        found = {track_ids[k]: (*rows[k], found_lengths[k]) for k in range(start, end)}
        _class_events(cls, found, merge_deg, events.setdefault(frame, []))
        start = end
    return events


def _frame_events(row: memoryview, num_classes: int, tracks: int, threshold: float, merge_deg: float) -> list[tuple]:
    """The events of one frame, ``row`` a view of its values: a stream decodes one frame per graph
    call, and right after one, numpy calls (or a list of every value) cost more than this loop,
    which makes a float only of the value it reads. The same arithmetic as the many-frame path
    (products and sums of doubles in numpy's order, one sqrt per vector)."""
    width, sqrt = 3 * num_classes, math.sqrt
    # a squared length up to ``below`` is not above threshold: the sqrt is taken only past it
    below = threshold * threshold * (1 - 1e-9) if threshold > 0 else -1.0
    by_class: dict[int, dict[int, tuple]] = {}
    for track in range(tracks):
        base = width * track
        xs = row[base : base + num_classes]
        ys = row[base + num_classes : base + 2 * num_classes]
        zs = row[base + 2 * num_classes : base + width]
        for cls, x, y, z in zip(range(num_classes), xs, ys, zs):
            squared = x * x + y * y + z * z
            if squared > below and sqrt(squared) > threshold:
                by_class.setdefault(cls, {})[track] = (x, y, z, sqrt(squared))
    events: list[tuple] = []
    for cls in sorted(by_class):
        _class_events(cls, by_class[cls], merge_deg, events)
    return events


def _class_events(cls: int, found: dict[int, tuple], merge_deg: float, events: list[tuple]) -> None:
    """Append to ``events`` those of class ``cls`` in one frame from its active tracks, ``found``:
    track -> (x, y, z, length), in track order."""
    for group in _close_groups(list(found), found, merge_deg) if len(found) > 1 else [list(found)]:
        x, y, z, length = found[group[0]]
        for track in group[1:]:  # the group's mean, summed in numpy's order
            x, y, z = x + found[track][0], y + found[track][1], z + found[track][2]
        if len(group) > 1:
            x, y, z = x / len(group), y / len(group), z / len(group)
        events.append((cls, math.degrees(math.atan2(y, x)), math.degrees(math.atan2(z, math.hypot(x, y))), group[0], length))


def _close_groups(members: list[int], rows: Mapping[int, list[float]], merge_deg: float) -> list[list[int]]:
    """``members`` (track indices into ``rows``, vectors x, y, z[, ...]) grouped by single linkage on angles
    below ``merge_deg``: connected components, ordered by their lowest member, each in index
    order. At most three tracks: plain floats beat numpy's per-call cost here."""
    groups: list[list[int]] = []
    left = list(members)
    while left:
        group = [left.pop(0)]
        todo = list(group)
        while todo:
            i = todo.pop()
            for j in [j for j in left if _degrees_between(rows[i], rows[j]) < merge_deg]:
                left.remove(j)
                group.append(j)
                todo.append(j)
        groups.append(sorted(group))
    return groups


def _degrees_between(u: list[float], v: list[float]) -> float:
    """``_angle_between`` of two xyz vectors in plain floats (atan2 of |u x v| and u . v)."""
    cross = math.sqrt((u[1] * v[2] - u[2] * v[1]) ** 2 + (u[2] * v[0] - u[0] * v[2]) ** 2 + (u[0] * v[1] - u[1] * v[0]) ** 2)
    return math.degrees(math.atan2(cross, u[0] * v[0] + u[1] * v[1] + u[2] * v[2]))


@dataclass
class _ClassBlock:
    """Outcome for one class in one block (segment or frame)."""

    n_ref: int
    tp: int
    fp_spatial: int
    fp: int
    fn: int
    distance_sum: float


class SeldEvaluator:
    """Accumulates SELD counts over files, then scores them; see the module doc for the definitions.

    Counts from several recordings add up before the per-class ratios are taken, as DCASE scores a
    whole split; update once per recording so that no segment spans two files.
    """

    def __init__(self, num_classes: int, frames_per_segment: int = 10, doa_threshold: float = 20.0,
                 segment_based: bool = True):
        if num_classes < 1:
            raise UsageError(f"num_classes must be at least 1, got {num_classes}")
        if segment_based and frames_per_segment < 1:
            raise UsageError(f"frames_per_segment must be at least 1, got {frames_per_segment}")
        self.num_classes = num_classes
        self.frames_per_block = frames_per_segment if segment_based else 1
        self.doa_threshold = doa_threshold
        self._counts = {key: np.zeros(num_classes) for key in ("n_ref", "tp", "fp_spatial", "fp", "fn", "distance_sum")}
        self._predicted = np.zeros(num_classes, dtype=bool)
        self._sdi = np.zeros(3)

    def update(self, predictions: LabelSet, references: LabelSet) -> None:
        """Add one recording's predictions and references."""
        pred_blocks = _blocks(predictions, self.frames_per_block, self.num_classes)
        ref_blocks = _blocks(references, self.frames_per_block, self.num_classes)
        for block in pred_blocks.keys() | ref_blocks.keys():
            self._update_block(pred_blocks.get(block, {}), ref_blocks.get(block, {}))

    def _update_block(self, pred: dict, ref: dict) -> None:
        false_positives = misses = 0
        for cls in pred.keys() | ref.keys():
            result = _compare_class(ref.get(cls, {}), pred.get(cls, {}), self.doa_threshold)
            for key, value in vars(result).items():
                self._counts[key][cls] += value
            self._predicted[cls] |= cls in pred
            false_positives += result.fp + result.fp_spatial
            misses += result.fn
        self._sdi += (min(false_positives, misses), max(0, misses - false_positives), max(0, false_positives - misses))

    def scores(self) -> dict:
        """ER, F, LE, LR and SELD (macro over the classes that occur), the counts, and class values."""
        c = self._counts
        substitutions, deletions, insertions = (int(v) for v in self._sdi)
        error_rate = (substitutions + deletions + insertions) / max(c["n_ref"].sum(), 1)
        occurs = (c["n_ref"] > 0) | self._predicted
        matched = c["tp"] + c["fp_spatial"]
        with np.errstate(invalid="ignore", divide="ignore"):
            f_score = c["tp"] / (c["tp"] + c["fp_spatial"] + 0.5 * (c["fp"] + c["fn"]))
            loc_error = np.where(matched > 0, c["distance_sum"] / matched, 180.0)
            loc_recall = np.where(matched + c["fn"] > 0, matched / (matched + c["fn"]), 0.0)
        f_score, loc_error, loc_recall = (np.where(occurs, v, np.nan) for v in (f_score, loc_error, loc_recall))
        seld = (error_rate + (1 - f_score) + loc_error / 180 + (1 - loc_recall)) / 4
        if occurs.any():
            f_mean, le_mean, lr_mean = (float(v[occurs].mean()) for v in (f_score, loc_error, loc_recall))
        else:
            f_mean, le_mean, lr_mean = 1.0, 0.0, 1.0
        if matched.sum() > 0:
            le_micro = float(c["distance_sum"].sum() / matched.sum())
        else:
            le_micro = 180.0 if occurs.any() else 0.0
        return {
            "ER": float(error_rate),
            "F": f_mean,
            "LE": le_mean,
            "LR": lr_mean,
            "SELD": float((error_rate + (1 - f_mean) + le_mean / 180 + (1 - lr_mean)) / 4),
            "LE_micro": le_micro,
            **{name: int(c[key].sum()) for name, key in _COUNT_NAMES.items()},
            "S": substitutions,
            "D": deletions,
            "I": insertions,
            "classwise": [
                {
                    "class": cls,
                    "F": float(f_score[cls]),
                    "LE": float(loc_error[cls]),
                    "LR": float(loc_recall[cls]),
                    "SELD": float(seld[cls]),
                    **{name: int(c[key][cls]) for name, key in _COUNT_NAMES.items()},
                }
                for cls in range(self.num_classes)
            ],
        }


def seld_metrics(predictions: LabelSet, references: LabelSet, num_classes: int, frames_per_segment: int = 10,
                 doa_threshold: float = 20.0, segment_based: bool = True) -> dict:
    """Score one recording with the DCASE 2022/23 SELD metrics (module doc: definitions, conventions).

    Returns ``ER``, ``F``, ``LE`` (degrees), ``LR``, ``SELD``; the counts ``TP``, ``FP`` (predicted
    instances with no reference of their class), ``FP_spatial`` (class right, beyond the threshold;
    all false positives = FP + FP_spatial), ``FN``, ``S``, ``D``, ``I``, ``Nref``; and ``classwise``,
    one dict per class with ``class``, ``F``, ``LE``, ``LR``, ``SELD`` (NaN where the class never
    occurs) and its ``TP``, ``FP``, ``FP_spatial``, ``FN``, ``Nref``. For a whole split use
    :class:`SeldEvaluator`, which adds counts over recordings before taking ratios.
    """
    evaluator = SeldEvaluator(num_classes, frames_per_segment, doa_threshold, segment_based)
    evaluator.update(predictions, references)
    return evaluator.scores()


def _blocks(labels: LabelSet, frames_per_block: int, num_classes: int) -> dict:
    """``block -> class -> frame -> [(az, el), ...]`` ordered by track id, else by list order."""
    blocks: dict = defaultdict(lambda: defaultdict(dict))
    for frame, events in labels.items():
        if not isinstance(frame, (int, np.integer)) or frame < 0:
            raise UsageError(f"label frame indices must be non-negative integers, got {frame!r}")
        by_class = defaultdict(list)
        for order, event in enumerate(events):
            cls, az, el = _check_event(event, frame, num_classes)
            track = event[3] if len(event) == 4 else order
            by_class[cls].append((track, order, az, el))
        for cls, instances in by_class.items():
            blocks[int(frame) // frames_per_block][cls][int(frame)] = [(az, el) for *_, az, el in sorted(instances)]
    return blocks


def _check_event(event, frame, num_classes: int) -> tuple[int, float, float]:
    if len(event) not in (3, 4):
        raise UsageError(f"frame {frame}: events are (class, azimuth, elevation[, track]), got {event!r}")
    cls = event[0]
    if not isinstance(cls, (int, np.integer)) or not 0 <= cls < num_classes:
        raise UsageError(f"frame {frame}: class index {cls!r} is not in 0..{num_classes - 1}")
    return int(cls), float(event[1]), float(event[2])


def _compare_class(ref: dict, pred: dict, doa_threshold: float) -> _ClassBlock:
    """Match one class's reference and predicted tracks within one block (module doc, steps 2-4)."""
    n_ref = max((len(v) for v in ref.values()), default=0)
    n_pred = max((len(v) for v in pred.values()), default=0)
    track_means = [np.mean(d) for d in _matched_track_distances(ref, pred).values()]
    tp = sum(1 for d in track_means if d <= doa_threshold)
    if ref and pred and not track_means:  # never in the same frame: the reference code's booking
        fp, fn = 0, n_pred
    else:
        fp, fn = max(0, n_pred - n_ref), max(0, n_ref - n_pred)
    return _ClassBlock(n_ref=n_ref, tp=tp, fp_spatial=len(track_means) - tp, fp=fp, fn=fn,
                       distance_sum=float(sum(track_means)))


def _matched_track_distances(ref: dict, pred: dict) -> dict[int, list[float]]:
    """Per reference track rank, the distances of its Hungarian matches in the frames shared with pred."""
    from scipy.optimize import linear_sum_assignment  # scoring only: decoding (the run path) never imports scipy

    distances = defaultdict(list)
    for frame in ref.keys() & pred.keys():
        r, p = np.asarray(ref[frame]), np.asarray(pred[frame])
        cost = angular_distance_deg(r[:, None, 0], r[:, None, 1], p[None, :, 0], p[None, :, 1])
        for row, col in zip(*linear_sum_assignment(cost)):
            distances[int(row)].append(float(cost[row, col]))
    return distances
