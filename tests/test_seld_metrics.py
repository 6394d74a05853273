"""The SELD metric definitions (DCASE 2022/23), pinned on cases small enough to count by hand."""

from __future__ import annotations

import numpy as np
import pytest

from edgeaudio.errors import UsageError
from edgeaudio.plugins.seld.metrics import (
    SeldEvaluator,
    accdoa_events,
    accdoa_to_labels,
    angular_distance_deg,
    seld_metrics,
)

VARIANTS = [pytest.param(True, id="segment"), pytest.param(False, id="frame")]


def steady(cls, az, el, frames=range(10), track=0):
    """One event held still over ``frames``."""
    return {f: [(cls, az, el, track)] for f in frames}


def merged(*label_sets):
    out = {}
    for labels in label_sets:
        for frame, events in labels.items():
            out.setdefault(frame, []).extend(events)
    return out


def score(pred, ref, num_classes=2, **kwargs):
    return seld_metrics(pred, ref, num_classes, **kwargs)


@pytest.mark.parametrize("az1, el1, az2, el2, expected", [
    (0, 0, 90, 0, 90),
    (179, 0, -179, 0, 2),
    (0, 90, 123, 90, 0),
    (0, 0, 180, 0, 180),
    (0, 0, 0, -45, 45),
    (45, 35, 45, 35, 0),
])
def test_angular_distance_known_values(az1, el1, az2, el2, expected):
    assert angular_distance_deg(az1, el1, az2, el2) == pytest.approx(expected, abs=1e-9)


def test_angular_distance_broadcasts():
    out = angular_distance_deg(np.array([[0.0], [90.0]]), 0.0, np.array([0.0, 90.0, 180.0]), 0.0)
    np.testing.assert_allclose(out, [[0, 90, 180], [90, 0, 90]], atol=1e-9)


@pytest.mark.parametrize("segment_based", VARIANTS)
def test_perfect_prediction(segment_based):
    ref = merged(steady(0, 30, 10, range(25)), steady(1, -120, -20, range(5, 12)))
    result = score(ref, ref, segment_based=segment_based)
    assert (result["ER"], result["F"], result["LE"], result["LR"], result["SELD"]) == (0, 1, 0, 1, 0)
    assert result["FP"] == result["FN"] == result["FP_spatial"] == 0


@pytest.mark.parametrize("segment_based", VARIANTS)
def test_20_degree_boundary(segment_based):
    ref = steady(0, 0, 0)
    near = score(steady(0, 19, 0), ref, segment_based=segment_based)
    assert (near["TP"], near["FP_spatial"], near["ER"], near["F"]) == (near["Nref"], 0, 0, 1)
    assert near["LE"] == pytest.approx(19) and near["LR"] == 1

    far = score(steady(0, 0, 21), ref, segment_based=segment_based)
    assert (far["TP"], far["FP_spatial"], far["F"]) == (0, far["Nref"], 0)
    # Mislocalised: one insertion per block in ER, yet the class was found, so LR stays 1.
    assert far["ER"] == 1 and far["I"] == far["Nref"] and far["S"] == far["D"] == 0
    assert far["LE"] == pytest.approx(21) and far["LR"] == 1


def test_segment_track_is_judged_on_its_mean_error():
    ref = steady(0, 0, 0)
    pred = {f: [(0, 10.0 if f < 5 else 28.0, 0.0)] for f in range(10)}  # mean 19 deg over the second
    seg = score(pred, ref)
    assert seg["TP"] == 1 and seg["LE"] == pytest.approx(19)
    frames = score(pred, ref, segment_based=False)
    assert (frames["TP"], frames["FP_spatial"]) == (5, 5)


def test_class_mismatch():
    result = score(steady(1, 0, 0), steady(0, 0, 0))
    assert (result["TP"], result["FP"], result["FN"], result["S"], result["ER"]) == (0, 1, 1, 1, 1)
    # Both classes occur: neither found (F 0, LE 180, LR 0), so every term is at its worst.
    assert (result["F"], result["LE"], result["LR"], result["SELD"]) == (0, 180, 0, 1)


def test_empty_reference_and_prediction_is_perfect():
    result = score({}, {5: []})
    assert (result["ER"], result["F"], result["LE"], result["LR"], result["SELD"]) == (0, 1, 0, 1, 0)
    assert all(np.isnan(c["F"]) for c in result["classwise"])


def test_empty_reference_counts_insertions():
    result = score(merged(steady(0, 0, 0), steady(1, 90, 0, range(10, 30))), {})
    assert result["Nref"] == 0 and result["I"] == 3 and result["ER"] == 3  # divided by max(Nref, 1)
    assert (result["F"], result["LE"], result["LR"]) == (0, 180, 0)


def test_empty_prediction():
    result = score({}, merged(steady(0, 0, 0), steady(1, 90, 0)))
    assert (result["ER"], result["D"], result["FN"]) == (1, 2, 2)
    assert (result["F"], result["LE"], result["LR"], result["SELD"]) == (0, 180, 0, 1)


@pytest.mark.parametrize("segment_based", VARIANTS)
def test_same_class_instances_matched_by_hungarian(segment_based):
    ref = {f: [(0, 0.0, 0.0, 0), (0, 90.0, 0.0, 1)] for f in range(10)}
    in_order = {f: [(0, 5.0, 0.0), (0, 95.0, 0.0)] for f in range(10)}
    swapped = {f: [(0, 95.0, 0.0), (0, 5.0, 0.0)] for f in range(10)}
    for pred in (in_order, swapped):
        result = score(pred, ref, segment_based=segment_based)
        assert (result["TP"], result["FP_spatial"], result["ER"], result["F"]) == (result["Nref"], 0, 0, 1)
        assert result["LE"] == pytest.approx(5)


def test_reference_tracks_follow_track_ids_then_list_order():
    # Source 0 is found 5 deg off, source 1 50 deg off; odd frames list the sources in reverse.
    ref = {f: [(0, 0.0, 0.0, 0), (0, 90.0, 0.0, 1)][:: 1 if f % 2 == 0 else -1] for f in range(10)}
    pred = {f: [(0, 5.0, 0.0), (0, 140.0, 0.0)] for f in range(10)}
    by_id = score(pred, ref)
    assert (by_id["TP"], by_id["FP_spatial"], by_id["LE"]) == (1, 1, pytest.approx(27.5))
    # Without ids the rank in the list is the track, so each track mixes both errors (27.5 deg).
    by_rank = score(pred, {f: [event[:3] for event in events] for f, events in ref.items()})
    assert (by_rank["TP"], by_rank["FP_spatial"], by_rank["LE"]) == (0, 2, pytest.approx(27.5))


def test_hand_computed_segment_example():
    ref = merged(
        steady(0, 0, 0, range(0, 10)),  # seg 0: found 10 deg off (TP)
        steady(1, 90, 0, range(0, 5)),  # seg 0: found 30 deg off (FP_spatial)
        steady(0, 0, 0, range(10, 20)),  # seg 1: missed (FN)
        steady(1, 45, 0, range(20, 30), track=0),  # seg 2: missed (FN) ...
        steady(1, -45, 0, range(20, 30), track=1),  # ... while this one is found 5 deg off (TP)
    )
    pred = merged(
        steady(0, 10, 0, range(0, 10)),
        steady(1, 120, 0, range(0, 5)),
        steady(1, -90, 0, range(10, 13)),  # seg 1: no class-1 reference (FP)
        steady(1, -40, 0, range(20, 30)),
    )
    result = score(pred, ref)
    assert (result["TP"], result["FP"], result["FP_spatial"], result["FN"], result["Nref"]) == (2, 1, 1, 2, 5)
    # Per segment: I (spatial FP alone), S (FP class 1 with FN class 0), D (one of two missed).
    assert (result["S"], result["D"], result["I"]) == (1, 1, 1)
    assert result["ER"] == pytest.approx(3 / 5)
    class0, class1 = result["classwise"]
    assert class0["F"] == pytest.approx(1 / 1.5) and class1["F"] == pytest.approx(1 / 3)
    assert class0["LE"] == pytest.approx(10) and class1["LE"] == pytest.approx(17.5)
    assert class0["LR"] == pytest.approx(1 / 2) and class1["LR"] == pytest.approx(2 / 3)
    assert result["F"] == pytest.approx(0.5)
    assert result["LE"] == pytest.approx(13.75)
    assert result["LR"] == pytest.approx(7 / 12)
    assert result["SELD"] == pytest.approx((0.6 + 0.5 + 13.75 / 180 + 5 / 12) / 4)
    assert class1["SELD"] == pytest.approx((0.6 + 2 / 3 + 17.5 / 180 + 1 / 3) / 4)


def test_frame_and_segment_variants_differ_on_timing():
    ref = steady(0, 0, 0, range(0, 2))
    pred = steady(0, 0, 0, range(1, 3))  # one frame late
    frames = score(pred, ref, segment_based=False)
    assert (frames["TP"], frames["D"], frames["I"], frames["ER"], frames["F"], frames["LR"]) == (1, 1, 1, 1, 0.5, 0.5)
    segments = score(pred, ref)
    assert (segments["ER"], segments["F"], segments["LR"]) == (0, 1, 1)


def test_class_only_in_both_but_never_in_the_same_frame():
    # The reference code books the predicted count as misses there, and no false positive.
    result = score(merged(steady(0, 0, 0, range(5, 10)), steady(0, 90, 0, range(5, 10), track=1)), steady(0, 0, 0, range(0, 5)))
    assert (result["FN"], result["FP"], result["S"], result["D"], result["ER"], result["F"], result["LR"]) == (2, 0, 0, 2, 2, 0, 0)


def _reference_scores(pred: dict, ref: dict, num_classes: int, frames: int, block: int = 10, threshold: float = 20.0):
    """The DCASE 2022/23 scores as the challenge's reference code computes them (seld-dcase2023
    ``SELD_evaluation_metrics.py``: ``segment_labels``, ``SELDMetrics.update_seld_scores``,
    ``compute_seld_scores`` with ``average="macro"``), transcribed step for step with its data
    structures, so the numbers the tests pin come from the reference's rules and not from ours:

    - per block of ``block`` frames and class: ``[frames present, doas per frame]``; ``nb_gt_doas`` /
      ``nb_pred_doas`` = the most simultaneous instances; ``Nref += nb_gt_doas``;
    - both present: per shared frame, Hungarian assignment on the great-circle distance
      (``arccos`` of the clipped dot product); the reference track is the instance's rank in its
      frame; each matched track's mean distance adds to ``total_DE`` and ``DE_TP`` and is a TP when
      <= ``threshold``, else ``FP_spatial`` (``loc_FP``); then **only the difference** is booked:
      ``nb_pred - nb_gt`` more as FP, or ``nb_gt - nb_pred`` more as FN (and ``DE_FN``); with no
      shared frame at all, ``nb_pred_doas`` is booked as FN;
    - only reference: FN += nb_gt; only prediction: FP += nb_pred;
    - per block ``S += min(loc_FP, loc_FN)``, ``D += max(0, loc_FN - loc_FP)``, ``I += max(0, loc_FP - loc_FN)``;
    - ``ER = (S + D + I) / (Nref + eps)``, ``F = TP / (eps + TP + FP_spatial + 0.5 (FP + FN))``,
      ``LE = total_DE / (DE_TP + eps)`` (180 where ``DE_TP == 0``), ``LR = DE_TP / (eps + DE_TP + DE_FN)``,
      SELD per class = mean(ER, 1 - F, LE / 180, 1 - LR); F, LE, LR, SELD averaged over all classes.
    Events are (class, azimuth, elevation[, track]) listed in track order, as the CSV rows come.
    """
    from scipy.optimize import linear_sum_assignment

    eps = np.finfo(float).eps

    def segment_labels(labels):
        out = {b: {} for b in range(int(np.ceil(frames / block)))}
        for start in range(0, frames, block):
            loc = {}
            for frame in range(start, start + block):
                for event in labels.get(frame, []):
                    loc.setdefault(event[0], {}).setdefault(frame - start, []).append(event[1:3])
            for cls in loc:
                out[start // block].setdefault(cls, []).append([list(loc[cls]), [loc[cls][k] for k in loc[cls]]])
        return out

    def distance(a, b):  # degrees in, degrees out, as distance_between_spherical_coordinates_rad
        az1, el1, az2, el2 = np.radians(a[:, None, 0]), np.radians(a[:, None, 1]), np.radians(b[None, :, 0]), np.radians(b[None, :, 1])
        dot = np.sin(el1) * np.sin(el2) + np.cos(el1) * np.cos(el2) * np.cos(np.abs(az1 - az2))
        return np.arccos(np.clip(dot, -1, 1)) * 180 / np.pi

    gt, pr = segment_labels(ref), segment_labels(pred)
    c = {k: np.zeros(num_classes) for k in ("TP", "FP", "FP_spatial", "FN", "Nref", "total_DE", "DE_TP", "DE_FN")}
    S = D = I = 0
    for b in range(len(gt)):
        loc_fp = loc_fn = 0
        for cls in range(num_classes):
            nb_gt = max(len(v) for v in gt[b][cls][0][1]) if cls in gt[b] else None
            nb_pred = max(len(v) for v in pr[b][cls][0][1]) if cls in pr[b] else None
            if nb_gt is not None:
                c["Nref"][cls] += nb_gt
            if cls in gt[b] and cls in pr[b]:
                dist, gt_frames, pred_frames = {}, gt[b][cls][0][0], pr[b][cls][0][0]
                for gi, frame in enumerate(gt_frames):
                    if frame in pred_frames:
                        cost = distance(np.array(gt[b][cls][0][1][gi]), np.array(pr[b][cls][0][1][pred_frames.index(frame)]))
                        for row, col in zip(*linear_sum_assignment(cost)):
                            dist.setdefault(row, []).append(cost[row, col])
                if not dist:
                    loc_fn += nb_pred
                    c["FN"][cls] += nb_pred
                    c["DE_FN"][cls] += nb_pred
                    continue
                for values in dist.values():
                    mean = sum(values) / len(values)
                    c["total_DE"][cls] += mean
                    c["DE_TP"][cls] += 1
                    if mean <= threshold:
                        c["TP"][cls] += 1
                    else:
                        loc_fp += 1
                        c["FP_spatial"][cls] += 1
                if nb_pred > nb_gt:
                    loc_fp += nb_pred - nb_gt
                    c["FP"][cls] += nb_pred - nb_gt
                elif nb_pred < nb_gt:
                    loc_fn += nb_gt - nb_pred
                    c["FN"][cls] += nb_gt - nb_pred
                    c["DE_FN"][cls] += nb_gt - nb_pred
            elif cls in gt[b]:
                loc_fn += nb_gt
                c["FN"][cls] += nb_gt
                c["DE_FN"][cls] += nb_gt
            elif cls in pr[b]:
                loc_fp += nb_pred
                c["FP"][cls] += nb_pred
        S, D, I = S + min(loc_fp, loc_fn), D + max(0, loc_fn - loc_fp), I + max(0, loc_fp - loc_fn)
    er = (S + D + I) / (c["Nref"].sum() + eps)
    f = c["TP"] / (eps + c["TP"] + c["FP_spatial"] + 0.5 * (c["FP"] + c["FN"]))
    le = c["total_DE"] / (c["DE_TP"] + eps)
    le[c["DE_TP"] == 0] = 180.0
    lr = c["DE_TP"] / (eps + c["DE_TP"] + c["DE_FN"])
    seld = np.mean([np.repeat(er, num_classes), 1 - f, le / 180, 1 - lr], 0)
    return {"ER": er, "F": f.mean(), "LE": le.mean(), "LR": lr.mean(), "SELD": seld.mean()}


def test_segment_booking_equals_the_reference_code():
    """Two reference tracks of one class in frames 0-4 and two predictions in frames 5-9 (one of
    each near the reference that lasts all segment): one track matched, 5 degrees off. The
    reference code books only the difference of the counts (2 - 2 = 0): F 1.0, ER 0, LR 1. Our
    former rule booked the unmatched reference and the unmatched prediction (F 0.5)."""
    ref = merged(steady(0, 0, 0, range(10), track=0), steady(0, 90, 0, range(5), track=1))
    pred = merged(steady(0, 5, 0, range(10), track=0), steady(0, 95, 0, range(5, 10), track=1))
    expected = {"ER": 0.0, "F": 1.0, "LE": 5.0, "LR": 1.0, "SELD": (5 / 180) / 4}
    result = score(pred, ref, num_classes=1)
    assert (result["TP"], result["FP"], result["FN"]) == (1, 0, 0)
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-9)
        assert _reference_scores(pred, ref, 1, 10)[name] == pytest.approx(value, abs=1e-9)


@pytest.mark.parametrize("block", [10, 1], ids=["segment", "frame"])
def test_scores_equal_the_reference_code_on_random_scenes(block):
    """Random scenes of 3 classes, 0-3 instances per frame, moving and jittered tracks; every class
    occurs in the references (where the macro conventions agree): each score equals the
    transcribed reference code's to 1e-6, on 1 s segments and per frame."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        frames = int(rng.integers(10, 45))
        ref, pred = {}, {}
        for labels, events in ((ref, 6), (pred, 7)):
            for _ in range(int(rng.integers(1, events))):
                cls, start = int(rng.integers(3)), int(rng.integers(frames))
                az, el = rng.uniform(-180, 180), rng.uniform(-30, 40)
                for frame in range(start, min(frames, start + int(rng.integers(1, 15)))):
                    labels.setdefault(frame, []).append((cls, az + rng.normal(0, 8), el + rng.normal(0, 4)))
        for cls in range(3):  # every class in the reference
            ref.setdefault(int(rng.integers(frames)), []).append((cls, rng.uniform(-180, 180), 0.0))
        ref = {f: [e[:3] + (i,) for i, e in enumerate(events)] for f, events in ref.items()}
        ours = score(pred, ref, num_classes=3, frames_per_segment=block)
        reference = _reference_scores(pred, ref, 3, frames, block=block)
        for name in ("ER", "F", "LE", "LR", "SELD"):
            assert ours[name] == pytest.approx(reference[name], abs=1e-6), (name, ref, pred)


def test_evaluator_accumulates_recordings_before_ratios():
    evaluator = SeldEvaluator(num_classes=2)
    evaluator.update(steady(0, 0, 0), steady(0, 0, 0))
    evaluator.update({}, steady(0, 0, 0))
    result = evaluator.scores()
    assert (result["TP"], result["FN"], result["Nref"], result["ER"], result["LR"]) == (1, 1, 2, 0.5, 0.5)


def test_malformed_labels_are_usage_errors():
    with pytest.raises(UsageError, match="class index 5"):
        score({0: [(5, 0, 0)]}, {})
    with pytest.raises(UsageError, match="events are"):
        score({}, {0: [(0, 0)]})


def accdoa_frame(num_classes, tracks, vectors):
    """One multi-ACCDOA frame from ``{(track, class): (x, y, z)}``."""
    row = np.zeros(tracks * 3 * num_classes)
    for (track, cls), xyz in vectors.items():
        for axis, value in enumerate(xyz):
            row[track * 3 * num_classes + axis * num_classes + cls] = value
    return row


def test_accdoa_decodes_layout_and_directions():
    frames = np.stack([
        accdoa_frame(3, 3, {(0, 2): (0, 0.9, 0), (2, 0): (0.5, 0, 0.5)}),
        accdoa_frame(3, 3, {(1, 1): (0.3, 0, 0)}),  # length 0.3: inactive
    ])
    labels = accdoa_to_labels(frames, num_classes=3)
    assert list(labels) == [0]
    (cls_a, az_a, el_a, track_a), (cls_b, az_b, el_b, track_b) = sorted(labels[0])
    assert (cls_a, track_a, cls_b, track_b) == (0, 2, 2, 0)
    assert (az_a, el_a) == pytest.approx((0, 45))
    assert (az_b, el_b) == pytest.approx((90, 0))  # +y is left, azimuth 90


def unit(az):
    return np.cos(np.radians(az)), np.sin(np.radians(az)), 0.0


def test_accdoa_merges_close_duplicates_only():
    frame = accdoa_frame(2, 3, {(0, 1): unit(0), (1, 1): unit(10), (2, 1): unit(60)})
    events = sorted(accdoa_to_labels(frame[None], num_classes=2)[0], key=lambda e: e[3])
    assert [(e[0], e[3]) for e in events] == [(1, 0), (1, 2)]
    assert events[0][1] == pytest.approx(5) and events[1][1] == pytest.approx(60)
    # Chains link: 0 ~ 10 ~ 20 are one source even though 0 and 20 are 20 deg apart.
    chain = accdoa_frame(2, 3, {(0, 1): unit(0), (1, 1): unit(10), (2, 1): unit(20)})
    (event,) = accdoa_to_labels(chain[None], num_classes=2)[0]
    assert event[1] == pytest.approx(10)
    apart = accdoa_to_labels(frame[None], num_classes=2, merge_deg=5.0)[0]
    assert len(apart) == 3


def test_accdoa_rejects_wrong_width():
    with pytest.raises(UsageError, match=r"expected \[frames, 39\]"):
        accdoa_to_labels(np.zeros((4, 38)), num_classes=13, tracks=1)


def test_decoded_accdoa_scores_perfectly_against_its_source():
    ref = merged(steady(0, 30, 10, range(10), track=0), steady(0, -100, -20, range(5, 10), track=1))
    rows = []
    for f in range(10):
        vectors = {}
        for cls, az, el, track in ref[f]:
            a, e = np.radians(az), np.radians(el)
            vectors[(track, cls)] = (np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e))
        rows.append(accdoa_frame(1, 3, vectors))
    result = seld_metrics(accdoa_to_labels(np.stack(rows), num_classes=1), ref, num_classes=1)
    assert result["SELD"] == pytest.approx(0, abs=1e-9)


def test_le_micro_separates_missed_classes_from_localization():
    """A class that is never detected enters the macro LE at 180 degrees: half the classes missed,
    the other half 10 degrees off gives LE 95, which reads like no localization at all. LE_micro
    averages over the matched tracks only and says the detected events are 10 degrees off."""
    reference = merged(steady(0, 0, 0), steady(1, 90, 0))
    result = score(steady(0, 10, 0), reference)
    assert result["LE"] == pytest.approx(95) and result["LE_micro"] == pytest.approx(10)
    assert score({}, reference)["LE_micro"] == 180 and score({}, {})["LE_micro"] == 0


def test_one_streamed_frame_decodes_as_it_does_among_many():
    """A single frame (what a stream decodes per graph call) takes a plain-float path of its own;
    it must give what the many-frame path gives for that frame, to the last bit, for float32 and
    float64 outputs, a strided view and float16 (read as float64), duplicates merged or not."""
    rng = np.random.default_rng(3)
    classes, frames = 5, 400
    vectors = rng.standard_normal((frames, 3, 3, classes)) * rng.uniform(0.1, 0.6, (frames, 1, 1, 1))
    twin = rng.random((frames, 1, classes)) < 0.4  # track 1 repeats track 0 (a duplicate to merge) now and then
    vectors[:, 1] = np.where(twin, vectors[:, 0] + 0.01 * rng.standard_normal((frames, 3, classes)), vectors[:, 1])
    for dtype in (np.float32, np.float64, np.float16):
        rows = vectors.reshape(frames, -1).astype(dtype)
        strided = np.repeat(rows, 2, axis=1)[:, ::2]
        for threshold, merge_deg in ((0.5, 15.0), (0.2, 40.0)):
            many = accdoa_events(rows, classes, threshold=threshold, merge_deg=merge_deg)
            assert sum(len(events) for events in many.values()) > frames // 4  # the test sees events
            for source in (rows, strided):
                one = {i: accdoa_events(source[i : i + 1], classes, threshold=threshold, merge_deg=merge_deg).get(0)
                       for i in range(frames)}
                assert {i: events for i, events in one.items() if events} == many
            assert accdoa_to_labels(rows, classes, threshold=threshold, merge_deg=merge_deg) == {
                frame: [event[:4] for event in events] for frame, events in many.items()}


def test_event_length_is_its_tracks_vector_length():
    frame = accdoa_frame(2, 3, {(0, 1): (0.6, 0.0, 0.0), (1, 1): (0.0, 0.7, 0.0)})  # 90 deg apart: two events
    for rows in (frame[None], np.stack([frame, frame])):
        assert [event[4] for event in accdoa_events(rows, num_classes=2)[0]] == pytest.approx([0.6, 0.7])
