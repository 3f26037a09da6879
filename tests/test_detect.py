"""Detection: VOC average precision, proposals, data, the SPP-net detector end to end."""

import numpy as np
import pytest

from tinyspp.detect.evaluate import average_precision, evaluate_detections, pr_curve


# ---------------------------------------------------------------- evaluation
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


def test_iou_threshold_and_class_without_ground_truth():
    # IoU of [0,0,10,10] with [0,0,10,20] is 0.5: a hit at 0.5, a miss at 0.6
    gt = [(np.array([[0, 0, 10, 20]]), np.array([0]))]
    dets = [(np.array([[0, 0, 10, 10]]), np.array([1.0]), np.array([0]))]
    assert evaluate_detections(dets, gt, 2)["ap"][0] == 1.0
    assert evaluate_detections(dets, gt, 2, iou_threshold=0.6)["ap"][0] == 0.0
    res = evaluate_detections(dets, gt, 2)
    assert np.isnan(res["ap"][1]) and res["map"] == 1.0


def test_average_precision_bad_input():
    with pytest.raises(ValueError, match="average_precision: method"):
        average_precision(np.ones(2), np.ones(2), method="auc")
    with pytest.raises(ValueError, match="equal length"):
        average_precision(np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="differ in length"):
        evaluate_detections(_gt()[:1], _gt(), 2)
