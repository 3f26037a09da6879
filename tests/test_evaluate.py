"""VOC evaluation (tinyspp.detect.evaluate) against a literal transcription of the VOC devkit.

``devkit_ap`` below is ``VOCevaldet.m`` (VOC2007 11-point and VOC2010+ ``VOCap.m``) written out
line by line in plain Python, 1-based inclusive pixel boxes, MATLAB's ``0:0.1:1`` and MATLAB's
NaN-ignoring ``max`` included; it shares no code with the library.
"""

import math

import numpy as np
import pytest
from checks import raises_exactly
from hypothesis import given
from hypothesis import strategies as st

from tinyspp.detect.evaluate import (
    VOC07_THRESHOLDS,
    average_precision,
    evaluate_detections,
    pr_curve,
)


# ---------------------------------------------------------------- the devkit, transcribed
def matlab_colon(a, d, b):
    """MATLAB's a:d:b (colonop.m): the first half a + k*d, the second half b - k*d."""
    n = int(math.floor((b - a) / d))
    v = [0.0] * (n + 1)
    for k in range(n // 2 + 1):
        v[k] = a + k * d
        v[n - k] = b - k * d
    if n % 2 == 0:
        v[n // 2] = (a + b) / 2
    return v


def matlab_max(values):
    """MATLAB's max of a vector: NaNs ignored; [] for an empty vector, NaN if all are NaN."""
    if not values:
        return None
    finite = [v for v in values if not math.isnan(v)]
    return max(finite) if finite else math.nan


def devkit_ap(detections, ground_truth, cls, method, minoverlap=0.5):
    """VOCevaldet for one class; returns (ap, tp flags, fp flags, npos) in sorted order."""
    # load ground truth objects (PASreadrecord boxes are 1-based inclusive pixels)
    gt, npos = [], 0
    for entry in ground_truth:
        boxes, labels = entry[0], entry[1]
        diff = entry[2] if len(entry) == 3 else [False] * len(labels)
        clsinds = [j for j in range(len(labels)) if labels[j] == cls]
        gt.append({
            "BB": [[boxes[j][0] + 1, boxes[j][1] + 1, boxes[j][2], boxes[j][3]] for j in clsinds],
            "diff": [bool(diff[j]) for j in clsinds],
            "det": [False] * len(clsinds),
        })
        npos += sum(1 for j in clsinds if not diff[j])
    # load results
    ids, confidence, BB = [], [], []
    for i, (boxes, scores, labels) in enumerate(detections):
        for b, s, lab in zip(boxes, scores, labels):
            if lab == cls:
                ids.append(i)
                confidence.append(float(s))
                BB.append([b[0] + 1, b[1] + 1, b[2], b[3]])
    # sort detections by decreasing confidence ([sc,si]=sort(-confidence): MATLAB sort is stable)
    si = sorted(range(len(confidence)), key=lambda k: -confidence[k])
    ids = [ids[k] for k in si]
    BB = [BB[k] for k in si]
    # assign detections to ground truth objects
    nd = len(confidence)
    tp, fp = [0] * nd, [0] * nd
    for d in range(nd):
        i = ids[d]
        bb = BB[d]
        ovmax = -math.inf
        jmax = None
        for j in range(len(gt[i]["BB"])):
            bbgt = gt[i]["BB"][j]
            bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]),
                  min(bb[3], bbgt[3])]
            iw = bi[2] - bi[0] + 1
            ih = bi[3] - bi[1] + 1
            if iw > 0 and ih > 0:
                ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
                      + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih)
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax = ov
                    jmax = j
        if ovmax >= minoverlap:
            if not gt[i]["diff"][jmax]:
                if not gt[i]["det"][jmax]:
                    tp[d] = 1
                    gt[i]["det"][jmax] = True
                else:
                    fp[d] = 1                  # false positive (multiple detection)
        else:
            fp[d] = 1
    flags = (list(tp), list(fp))
    # compute precision/recall
    for d in range(1, nd):
        fp[d] += fp[d - 1]
        tp[d] += tp[d - 1]
    rec = [t / npos if npos else math.nan for t in tp]
    prec = [t / (f + t) if f + t else math.nan for t, f in zip(tp, fp)]   # 0/0 is NaN in MATLAB
    if method == "11point":
        ap = 0.0
        for t in matlab_colon(0, 0.1, 1):
            p = matlab_max([pr for pr, r in zip(prec, rec) if r >= t])
            if p is None:
                p = 0.0
            ap = ap + p / 11
        return ap, flags, npos
    mrec = [0.0] + rec + [1.0]
    mpre = [0.0] + prec + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = matlab_max([mpre[i], mpre[i + 1]])
    ap = 0.0
    for i in range(1, len(mrec)):
        if mrec[i] != mrec[i - 1]:
            ap += (mrec[i] - mrec[i - 1]) * mpre[i]
    return ap, flags, npos


def assert_matches_devkit(dets, gts, n_classes, iou_threshold=0.5):
    for method in ("11point", "area"):
        res = evaluate_detections(dets, gts, n_classes, iou_threshold=iou_threshold,
                                  method=method)
        for c in range(n_classes):
            want, (tp, fp), npos = devkit_ap(dets, gts, c, method, iou_threshold)
            curve = res["curves"][c]
            assert curve.n_ground_truth == npos
            assert curve.n_ignored == sum(1 for t, f in zip(tp, fp) if not t and not f)
            if npos == 0:
                assert math.isnan(res["ap"][c])
            elif math.isnan(want):       # 11-point with every detection ignored: MATLAB's max
                assert res["ap"][c] == 0.0   # of all-NaN is NaN; voc_eval.py (and we) give 0
                assert len(curve.precision) == 0
            else:
                assert res["ap"][c] == pytest.approx(want, rel=1e-12, abs=1e-15), (method, c)
            # the curve is the devkit's points without the ignored detections
            ctp = np.cumsum([t for t, f in zip(tp, fp) if t or f])
            cfp = np.cumsum([f for t, f in zip(tp, fp) if t or f])
            np.testing.assert_array_equal(curve.precision, ctp / np.maximum(ctp + cfp, 1))
            if npos:
                np.testing.assert_array_equal(curve.recall, ctp / npos)


def _gt_from(boxes, labels, difficult=None):
    b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    lab = np.array(labels, dtype=np.int64)
    if difficult is None:
        return b, lab
    return b, lab, np.array(difficult, dtype=bool)


def _det(boxes, scores, labels):
    return (np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(scores, dtype=np.float64),
            np.array(labels, dtype=np.int64))


# ---------------------------------------------------------------- hand-worked cases
def _gt():
    # image 0: two class-0 objects; image 1: one class-0 and one class-1 object
    return [
        (np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0, 0])),
        (np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([0, 1])),
    ]


def test_perfect_detections_give_ap_one():
    dets = [(b, np.linspace(1, 0.5, len(b)), lab) for b, lab in _gt()]
    for method in ("area", "11point"):
        res = evaluate_detections(dets, _gt(), n_classes=2, method=method)
        np.testing.assert_allclose(res["ap"], [1.0, 1.0])
        assert res["map"] == 1.0


def test_known_pr_curve_by_hand():
    # class 0 detections by score: hit, miss (no overlap), duplicate of a hit (counts as a miss),
    # hit, hit.  3 objects.  tp = 1,0,0,1,1  ->  P = 1, 1/2, 1/3, 1/2, 3/5; R = 1/3,1/3,1/3,2/3,1
    dets = [
        (np.array([[0, 0, 10, 10], [70, 70, 80, 80], [1, 0, 10, 10], [20, 20, 30, 31]]),
         np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 0, 0, 0])),
        (np.array([[0, 0, 10, 11]]), np.array([0.5]), np.array([0])),
    ]
    curve = pr_curve(dets, _gt(), cls=0)
    np.testing.assert_allclose(curve.precision, [1, 1 / 2, 1 / 3, 1 / 2, 3 / 5])
    np.testing.assert_allclose(curve.recall, [1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    # all-point: envelope 1 on (0, 1/3], 3/5 on (1/3, 1]
    area = 1 / 3 * 1 + 2 / 3 * 3 / 5
    # 11-point: t = 0, .1, .2, .3 -> 1; t = .4 .. 1 (7 values) -> 3/5
    eleven = (4 * 1 + 7 * 3 / 5) / 11
    res = evaluate_detections(dets, _gt(), n_classes=2, method="area")
    assert res["ap"][0] == pytest.approx(area)
    assert res["ap"][1] == 0.0                     # the class-1 object was never detected
    assert res["map"] == pytest.approx(area / 2)
    res = evaluate_detections(dets, _gt(), n_classes=2, method="11point")
    assert res["ap"][0] == pytest.approx(eleven)
    assert_matches_devkit(dets, _gt(), 2)


def test_iou_threshold_and_class_without_ground_truth():
    # IoU of [0,0,10,10] with [0,0,10,20] is 0.5: a hit at 0.5, a miss at 0.6
    gt = [(np.array([[0, 0, 10, 20]]), np.array([0]))]
    dets = [(np.array([[0, 0, 10, 10]]), np.array([1.0]), np.array([0]))]
    assert evaluate_detections(dets, gt, 2)["ap"][0] == 1.0
    assert evaluate_detections(dets, gt, 2, iou_threshold=0.6)["ap"][0] == 0.0
    res = evaluate_detections(dets, gt, 2)
    assert np.isnan(res["ap"][1]) and res["map"] == 1.0
    assert_matches_devkit(dets, gt, 2)
    assert_matches_devkit(dets, gt, 2, iou_threshold=0.6)


def test_difficult_objects_are_ignored_not_false_positives():
    # one image: object A (easy), B (difficult). Detections by score: on B, on A, on B again.
    gt = [_gt_from([[0, 0, 10, 10], [20, 0, 30, 10]], [0, 0], [False, True])]
    dets = [_det([[20, 0, 30, 10], [0, 0, 10, 10], [21, 0, 30, 10]], [0.9, 0.8, 0.7], [0, 0, 0])]
    res = evaluate_detections(dets, gt, 1, method="11point")
    curve = res["curves"][0]
    assert curve.n_ground_truth == 1 and curve.n_ignored == 2
    np.testing.assert_array_equal(curve.precision, [1.0])       # only the hit on A counts
    np.testing.assert_array_equal(curve.scores, [0.8])
    assert res["ap"][0] == 1.0
    # dropping B instead (the old behaviour) would make both detections on it false positives
    dropped = [_gt_from([[0, 0, 10, 10]], [0])]
    assert evaluate_detections(dets, dropped, 1, method="area")["ap"][0] == pytest.approx(0.5)
    assert_matches_devkit(dets, gt, 1)


def test_detection_whose_best_match_is_difficult_is_ignored_even_if_it_overlaps_an_easy_one():
    # the detection overlaps easy A by IoU 0.6 and difficult B by 0.9: the devkit looks at B only
    gt = [_gt_from([[0, 0, 10, 10], [2, 0, 12, 10]], [0, 0], [False, True])]
    dets = [_det([[2, 0, 11, 10]], [1.0], [0])]
    curve = pr_curve(dets, gt, 0)
    assert curve.n_ignored == 1 and len(curve.precision) == 0
    assert evaluate_detections(dets, gt, 1)["ap"][0] == 0.0    # A is never found
    assert_matches_devkit(dets, gt, 1)


def test_duplicate_detection_is_a_false_positive_even_next_to_a_free_object():
    # two objects 0.6 apart in IoU... the second detection's best match is the taken object
    gt = [_gt_from([[0, 0, 10, 10], [3, 0, 13, 10]], [0, 0])]
    dets = [_det([[0, 0, 10, 10], [1, 0, 11, 10]], [0.9, 0.8], [0, 0])]
    curve = pr_curve(dets, gt, 0)
    np.testing.assert_array_equal(curve.precision, [1.0, 0.5])
    np.testing.assert_array_equal(curve.recall, [0.5, 0.5])
    assert_matches_devkit(dets, gt, 1)


def test_ties_in_score_keep_input_order():
    # one object; a hit and a miss with the same score: whichever comes first in the input
    # is ranked first (stable sort), so the AP depends on the input order, as in the devkit
    gt = [_gt_from([[0, 0, 10, 10]], [0])]
    hit, miss = [0, 0, 10, 10], [50, 50, 60, 60]
    first_hit = [_det([hit, miss], [0.5, 0.5], [0, 0])]
    first_miss = [_det([miss, hit], [0.5, 0.5], [0, 0])]
    c = pr_curve(first_hit, gt, 0)
    np.testing.assert_array_equal(c.precision, [1.0, 0.5])
    c = pr_curve(first_miss, gt, 0)
    np.testing.assert_array_equal(c.precision, [0.0, 0.5])
    assert evaluate_detections(first_hit, gt, 1)["ap"][0] == 1.0
    assert evaluate_detections(first_miss, gt, 1)["ap"][0] == 0.5
    # across images: image order, then the order within each image
    two = [_gt_from([[0, 0, 10, 10]], [0]), _gt_from([[0, 0, 10, 10]], [0])]
    dets = [_det([miss, hit], [0.7, 0.7], [0, 0]), _det([hit], [0.7], [0])]
    np.testing.assert_array_equal(pr_curve(dets, two, 0).precision, [0, 1 / 2, 2 / 3])
    for d, g in ((first_hit, gt), (first_miss, gt), (dets, two)):
        assert_matches_devkit(d, g, 1)


def test_ties_within_many_equal_scores_follow_input_order():
    # a sort that is not stable reorders long runs of equal keys; 40 hits then 40 misses
    gt = [_gt_from([[10 * k, 0, 10 * k + 9, 9] for k in range(40)], [0] * 40)]
    boxes = [[10 * k, 0, 10 * k + 9, 9] for k in range(40)] + [[0, 50, 9, 59]] * 40
    dets = [_det(boxes, [1.0] * 80, [0] * 80)]
    curve = pr_curve(dets, gt, 0)
    np.testing.assert_array_equal(curve.precision[:40], 1.0)
    assert evaluate_detections(dets, gt, 1)["ap"][0] == 1.0
    assert_matches_devkit(dets, gt, 1)


def test_voc07_thresholds_are_matlabs_colon():
    assert VOC07_THRESHOLDS == tuple(matlab_colon(0, 0.1, 1))
    assert VOC07_THRESHOLDS[3] == 0.30000000000000004 and VOC07_THRESHOLDS[6] == 0.6
    # recall exactly 3/5 reaches t = 0.6 (np.linspace's 0.6000000000000001 would not)
    gt = [_gt_from([[10 * k, 0, 10 * k + 9, 9] for k in range(5)], [0] * 5)]
    dets = [_det([[10 * k, 0, 10 * k + 9, 9] for k in range(3)], [0.9, 0.8, 0.7], [0, 0, 0])]
    assert evaluate_detections(dets, gt, 1, method="11point")["ap"][0] == pytest.approx(7 / 11)
    # recall exactly 3/10 does not reach t = 0.30000000000000004
    gt = [_gt_from([[10 * k, 0, 10 * k + 9, 9] for k in range(10)], [0] * 10)]
    assert evaluate_detections(dets, gt, 1, method="11point")["ap"][0] == pytest.approx(3 / 11)
    assert_matches_devkit(dets, gt, 1)


def test_empty_cases():
    gt = [_gt_from([[0, 0, 10, 10]], [0]), _gt_from([], []),
          _gt_from([[0, 0, 5, 5], [5, 5, 9, 9]], [1, 2], [True, False])]
    dets = [_det([[0, 0, 10, 10]], [0.4], [0]), _det([], [], []),
            _det([[0, 0, 5, 5], [0, 0, 3, 3]], [0.9, 0.1], [1, 1])]
    for method in ("11point", "area"):
        res = evaluate_detections(dets, gt, 4, method=method)
        assert res["ap"][0] == 1.0
        assert np.isnan(res["ap"][1])            # only a difficult object: no positives
        assert res["ap"][2] == 0.0               # a positive, no detection
        assert np.isnan(res["ap"][3])            # nothing at all
        assert res["map"] == 0.5                 # over the classes with positives
    assert res["curves"][1].n_ignored == 1 and len(res["curves"][1].precision) == 1   # 1 FP
    assert np.isnan(res["curves"][1].recall).all()
    assert len(res["curves"][2].precision) == 0 and res["curves"][2].n_ground_truth == 1
    assert_matches_devkit(dets, gt, 4)
    # no image at all, and no positives anywhere
    assert np.isnan(evaluate_detections([], [], 2)["map"])
    # every detection matched a difficult object: AP 0 (voc_eval.py; MATLAB's max gives NaN)
    gt = [_gt_from([[0, 0, 10, 10], [20, 0, 30, 10]], [0, 0], [True, False])]
    dets = [_det([[0, 0, 10, 10]], [0.9], [0])]
    for method in ("11point", "area"):
        assert evaluate_detections(dets, gt, 1, method=method)["ap"][0] == 0.0
    assert math.isnan(devkit_ap(dets, gt, 0, "11point")[0])
    assert_matches_devkit(dets, gt, 1)


def test_ground_truth_may_mix_two_and_three_entry_tuples():
    gt = [_gt_from([[0, 0, 10, 10]], [0]), _gt_from([[0, 0, 10, 10]], [0], [True])]
    dets = [_det([[0, 0, 10, 10]], [0.5], [0]), _det([[0, 0, 10, 10]], [0.6], [0])]
    res = evaluate_detections(dets, gt, 1)
    assert res["ap"][0] == 1.0 and res["curves"][0].n_ignored == 1
    # 0/1 integers are accepted as flags, lists as arrays
    gt[1] = ([[0, 0, 10, 10]], [0], [1])
    assert evaluate_detections(dets, gt, 1)["curves"][0].n_ignored == 1


# ---------------------------------------------------------------- drawn cases
@st.composite
def detection_problems(draw):
    """Images with integer boxes on a small grid (many overlaps, IoU exactly 0.5 possible),
    some objects difficult, detections jittered from objects or anywhere, scores from a small
    set (many ties)."""
    n_images = draw(st.integers(1, 4))
    n_classes = draw(st.integers(1, 3))

    def box(lo=0, hi=16):
        x0, y0 = draw(st.integers(lo, hi)), draw(st.integers(lo, hi))
        return [x0, y0, x0 + draw(st.integers(1, 8)), y0 + draw(st.integers(1, 8))]

    gts, dets = [], []
    for _ in range(n_images):
        G = draw(st.integers(0, 4))
        g_boxes = [box() for _ in range(G)]
        g_labels = [draw(st.integers(0, n_classes - 1)) for _ in range(G)]
        diff = [draw(st.booleans()) for _ in range(G)]
        gts.append(_gt_from(g_boxes, g_labels, diff) if draw(st.booleans())
                   else _gt_from(g_boxes, g_labels))
        D = draw(st.integers(0, 6))
        d_boxes, d_labels = [], []
        for _ in range(D):
            if g_boxes and draw(st.booleans()):
                j = draw(st.integers(0, G - 1))
                dx = [draw(st.integers(-2, 2)) for _ in range(4)]
                b = [g_boxes[j][k] + dx[k] for k in range(4)]
                b[2], b[3] = max(b[2], b[0] + 1), max(b[3], b[1] + 1)
                d_boxes.append(b)
                d_labels.append(g_labels[j] if draw(st.booleans()) else
                                draw(st.integers(0, n_classes - 1)))
            else:
                d_boxes.append(box())
                d_labels.append(draw(st.integers(0, n_classes - 1)))
        scores = [draw(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, -1.5])) for _ in range(D)]
        dets.append(_det(d_boxes, scores, d_labels))
    return dets, gts, n_classes


@given(detection_problems(), st.sampled_from([0.5, 0.3, 0.7, 1.0]))
def test_ap_equals_the_devkit_on_drawn_cases(problem, iou_threshold):
    dets, gts, n_classes = problem
    assert_matches_devkit(dets, gts, n_classes, iou_threshold)


@given(detection_problems())
def test_pr_curve_is_a_valid_curve(problem):
    dets, gts, n_classes = problem
    for c in range(n_classes):
        curve = pr_curve(dets, gts, c)
        assert np.all(np.diff(curve.scores) <= 0)
        assert np.all((curve.precision >= 0) & (curve.precision <= 1))
        if curve.n_ground_truth:
            assert np.all(np.diff(curve.recall) >= 0) and np.all(curve.recall <= 1)
        n_dets = sum(int((d[2] == c).sum()) for d in dets)
        assert len(curve.scores) + curve.n_ignored == n_dets


# ---------------------------------------------------------------- bad input, exact errors


def test_average_precision_bad_input():
    with pytest.raises(ValueError, match="average_precision: method"):
        average_precision(np.ones(2), np.ones(2), method="auc")
    with pytest.raises(ValueError, match="equal length"):
        average_precision(np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="differ in length"):
        evaluate_detections(_gt()[:1], _gt(), 2)
    with raises_exactly(ValueError, "average_precision: precision must hold finite values in "
                        "[0, 1], got nan at index 1"):
        average_precision(np.array([1.0, np.nan]), np.array([0.5, 1.0]))
    with raises_exactly(ValueError, "average_precision: recall must hold finite values in "
                        "[0, 1], got 1.5 at index 0"):
        average_precision(np.array([1.0]), np.array([1.5]))
    assert average_precision(np.zeros(0), np.zeros(0), "11point") == 0.0
    assert average_precision(np.zeros(0), np.zeros(0), "area") == 0.0


GT1 = [_gt_from([[0, 0, 10, 10]], [0])]


@pytest.mark.parametrize("bad, exc, message", [
    (np.nan, ValueError, "detections[0] scores must be finite (a NaN or infinite score has no "
                         "place in the ranking), got nan at index 1"),
    (np.inf, ValueError, "detections[0] scores must be finite (a NaN or infinite score has no "
                         "place in the ranking), got inf at index 1"),
    (-np.inf, ValueError, "detections[0] scores must be finite (a NaN or infinite score has no "
                          "place in the ranking), got -inf at index 1"),
])
@pytest.mark.parametrize("func", ["evaluate_detections", "pr_curve"])
def test_non_finite_scores_are_rejected(bad, exc, message, func):
    dets = [_det([[0, 0, 10, 10], [0, 0, 5, 5]], [0.5, bad], [0, 0])]
    with raises_exactly(exc, f"{func}: {message}"):
        if func == "pr_curve":
            pr_curve(dets, GT1, 0)
        else:
            evaluate_detections(dets, GT1, 1)


def _boxes(k=1):
    return np.array([[0, 0, 10, 10]] * k, dtype=np.float64)


@pytest.mark.parametrize("dets, gts, kwargs, exc, message", [
    (np.zeros((1, 3)), GT1, {}, TypeError,
     "detections must be a list with one entry per image, got ndarray"),
    ([_det([[0, 0, 1, 1]], [1], [0])], (np.zeros((1, 4)),), {}, TypeError,
     "ground_truth[0] (boxes, labels[, difficult]) must be a tuple of 2 or 3 arrays, "
     "got ndarray"),
    ([(_boxes(), np.ones(1))], GT1, {}, TypeError,
     "detections[0] (boxes, scores, labels) must be a tuple of 3 arrays, got length 2"),
    ([_det([[0, 0, 1, 1]], [1], [0])], [(_boxes(), [0], [False], [1])], {}, TypeError,
     "ground_truth[0] (boxes, labels[, difficult]) must be a tuple of 2 or 3 arrays, "
     "got length 4"),
    ([(_boxes(2), np.ones(1), np.zeros(2, dtype=int))], GT1, {}, ValueError,
     "detections[0] scores must have shape (2,) like its boxes, got shape (1,)"),
    ([(_boxes(), np.ones(1), np.zeros(2, dtype=int))], GT1, {}, ValueError,
     "detections[0] labels must have shape (1,) like its boxes, got shape (2,)"),
    ([(_boxes(), np.ones(1), np.zeros(1))], GT1, {}, TypeError,
     "detections[0] labels must be integer class indices, got dtype float64"),
    ([(_boxes(), np.ones(1), np.array([1]))], GT1, {}, ValueError,
     "detections[0] labels must lie in 0 .. 0 (n_classes=1), got 1"),
    ([(_boxes(), np.array(["a"]), np.array([0]))], GT1, {}, TypeError,
     "detections[0] scores must be numeric, got dtype <U1"),
    ([_det([[0, 0, 1, 1]], [1], [0])], [(_boxes(), np.array([-1]))], {}, ValueError,
     "ground_truth[0] labels must lie in 0 .. 0 (n_classes=1), got -1"),
    ([_det([[0, 0, 1, 1]], [1], [0])], [(_boxes(), np.array([0]), np.array([0.5]))], {},
     TypeError, "ground_truth[0] difficult must be a boolean array (or 0/1 integers), "
                "got dtype float64 with values [0.5]"),
    ([_det([[0, 0, 1, 1]], [1], [0])], [(_boxes(), np.array([0]), np.array([2]))], {},
     TypeError, "ground_truth[0] difficult must be a boolean array (or 0/1 integers), "
                "got dtype int64 with values [2]"),
    ([_det([[0, 0, 1, 1]], [1], [0])], [(_boxes(), np.array([0]), np.array([True, False]))],
     {}, ValueError, "ground_truth[0] difficult must have shape (1,) like its boxes, "
                     "got shape (2,)"),
    ([_det([[0, 0, np.nan, 1]], [1], [0])], GT1, {}, ValueError,
     "detections[0] boxes row 0 has a non-finite coordinate: [0.0, 0.0, nan, 1.0]"),
    ([_det([[0, 0, 1, 1]], [1], [0])], [(np.array([[5, 0, 1, 1]]), np.array([0]))], {},
     ValueError, "ground_truth[0] boxes row 0 is inverted (need x1 >= x0 and y1 >= y0), "
                 "got [5.0, 0.0, 1.0, 1.0]"),
    ([_det([[0, 0, 1, 1]], [1], [0])], GT1, {"iou_threshold": 0.0}, ValueError,
     "iou_threshold must be a number in (0, 1], got 0.0"),
    ([_det([[0, 0, 1, 1]], [1], [0])], GT1, {"iou_threshold": 1.5}, ValueError,
     "iou_threshold must be a number in (0, 1], got 1.5"),
    ([_det([[0, 0, 1, 1]], [1], [0])], GT1, {"iou_threshold": float("nan")}, ValueError,
     "iou_threshold must be a number in (0, 1], got nan"),
    ([_det([[0, 0, 1, 1]], [1], [0])], GT1, {"iou_threshold": True}, ValueError,
     "iou_threshold must be a number in (0, 1], got True"),
])
def test_evaluate_detections_bad_input(dets, gts, kwargs, exc, message):
    with raises_exactly(exc, f"evaluate_detections: {message}"):
        evaluate_detections(dets, gts, 1, **kwargs)


def test_argument_checks_of_the_entry_points():
    dets = [_det([[0, 0, 1, 1]], [1], [0])]
    with raises_exactly(ValueError, "evaluate_detections: n_classes must be >= 1, got 0"):
        evaluate_detections(dets, GT1, 0)
    with raises_exactly(TypeError, "evaluate_detections: n_classes must be an integer, got 2.0"):
        evaluate_detections(dets, GT1, 2.0)
    with raises_exactly(ValueError, "evaluate_detections: method must be one of ('11point', "
                        "'area'), got 'voc12'"):
        evaluate_detections(dets, GT1, 1, method="voc12")
    with raises_exactly(ValueError, "pr_curve: cls must be >= 0, got -1"):
        pr_curve(dets, GT1, -1)
    with raises_exactly(ValueError, "pr_curve: detections (1 images) and ground_truth (2 images) "
                        "differ in length"):
        pr_curve(dets, GT1 * 2, 0)
    # pr_curve does not know n_classes: any label is just "another class"
    assert pr_curve([_det([[0, 0, 1, 1]], [1], [7])], GT1, 0).n_ground_truth == 1
