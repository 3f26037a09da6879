"""VOC-style detection evaluation: precision/recall per class, average precision, mAP.

For one class, all detections over all images are sorted by score (descending, ties in input
order). Each is a true positive when its IoU with a not-yet-matched ground-truth box of that class
in the same image is at least ``iou_threshold`` (0.5 in VOC; the best-overlapping ground truth is
the candidate), otherwise a false positive (including a second detection of an already matched
object). With ``tp``/``fp`` cumulative counts and ``G`` ground-truth objects::

    recall = tp / G        precision = tp / (tp + fp)

Two areas under the precision/recall curve:

- ``"11point"`` (VOC2007): ``AP = mean over t in {0, 0.1, ..., 1} of max(precision[recall >= t])``
  (0 where no point reaches recall ``t``).
- ``"area"`` (VOC2010+): the precision envelope (made non-increasing from the right) integrated
  exactly over recall.

A class with no ground truth gets ``AP = nan`` and is left out of the mAP.

Examples
--------
>>> import numpy as np
>>> ap = average_precision(np.array([1.0]), np.array([1.0]), method="area")
>>> float(ap)
1.0
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..validate import check_choice
from .geometry import check_boxes, iou

AP_METHODS = ("11point", "area")


class PRCurve(NamedTuple):
    precision: np.ndarray    # (D,) after each detection, in score order
    recall: np.ndarray       # (D,)
    scores: np.ndarray       # (D,) sorted descending
    n_ground_truth: int


def average_precision(precision, recall, method: str = "area") -> float:
    """Area under a precision/recall curve (points in score order).

    Parameters
    ----------
    precision, recall : arrays of shape (D,)
    method : {"area", "11point"}

    Examples
    --------
    >>> # hits at ranks 1 and 3 of 3 detections, 2 objects: P = 1, 1/2, 2/3; R = 1/2, 1/2, 1
    >>> p, r = np.array([1, 1 / 2, 2 / 3]), np.array([0.5, 0.5, 1.0])
    >>> round(float(average_precision(p, r, "area")), 4)   # 0.5 * 1 + 0.5 * 2/3
    0.8333
    >>> round(float(average_precision(p, r, "11point")), 4)  # (6 * 1 + 5 * 2/3) / 11
    0.8485
    """
    check_choice(method, "method", "average_precision", AP_METHODS)
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    if p.shape != r.shape or p.ndim != 1:
        raise ValueError(
            f"average_precision: precision and recall must be 1-D of equal length, "
            f"got {p.shape} and {r.shape}"
        )
    if method == "11point":
        return float(np.mean([p[r >= t].max() if (r >= t).any() else 0.0
                              for t in np.linspace(0, 1, 11)]))
    mrec = np.concatenate([[0.0], r, [1.0]])
    mpre = np.concatenate([[0.0], p, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]          # envelope: non-increasing
    step = np.flatnonzero(mrec[1:] != mrec[:-1])            # where recall changes
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


def _as_list(per_image, name, func):
    if not isinstance(per_image, (list, tuple)):
        raise TypeError(f"{func}: {name} must be a list with one entry per image, "
                        f"got {type(per_image).__name__}")
    return list(per_image)


def pr_curve(detections, ground_truth, cls: int, iou_threshold: float = 0.5) -> PRCurve:
    """Precision/recall of class ``cls`` over a set of images.

    Parameters
    ----------
    detections : list of (boxes (D_i, 4), scores (D_i,), labels (D_i,)), one per image
    ground_truth : list of (boxes (G_i, 4), labels (G_i,)), one per image
    cls : int
    iou_threshold : float
    """
    func = "pr_curve"
    dets = _as_list(detections, "detections", func)
    gts = _as_list(ground_truth, "ground_truth", func)
    if len(dets) != len(gts):
        raise ValueError(f"{func}: detections ({len(dets)} images) and ground_truth "
                         f"({len(gts)} images) differ in length")
    rows = []                                    # (score, image, box) of every class-cls detection
    gt_boxes, n_gt = [], 0
    for i, ((boxes, scores, labels), (g_boxes, g_labels)) in enumerate(zip(dets, gts)):
        boxes = check_boxes(boxes, f"detections[{i}] boxes", func)
        g_boxes = check_boxes(g_boxes, f"ground_truth[{i}] boxes", func)
        mine = np.asarray(labels).reshape(-1) == cls
        for s, b in zip(np.asarray(scores, dtype=np.float64)[mine], boxes[mine]):
            rows.append((s, i, b))
        g = g_boxes[np.asarray(g_labels).reshape(-1) == cls]
        gt_boxes.append(g)
        n_gt += len(g)
    order = sorted(range(len(rows)), key=lambda k: -rows[k][0])    # stable: ties in input order
    matched = [np.zeros(len(g), dtype=bool) for g in gt_boxes]
    tp = np.zeros(len(rows))
    for rank, k in enumerate(order):
        s, i, b = rows[k]
        if len(gt_boxes[i]) == 0:
            continue
        ov = iou(b[None], gt_boxes[i])[0]
        j = int(np.argmax(ov))
        if ov[j] >= iou_threshold and not matched[i][j]:
            matched[i][j] = True
            tp[rank] = 1
    ctp = np.cumsum(tp)
    precision = ctp / np.arange(1, len(rows) + 1)
    recall = ctp / n_gt if n_gt else np.zeros(len(rows))
    scores = np.array([rows[k][0] for k in order], dtype=np.float64)
    return PRCurve(precision, recall, scores, n_gt)


def evaluate_detections(detections, ground_truth, n_classes: int, iou_threshold: float = 0.5,
                        method: str = "area") -> dict:
    """Per-class AP and mAP, VOC style.

    Parameters
    ----------
    detections : list of (boxes (D_i, 4), scores (D_i,), labels (D_i,)), one per image
    ground_truth : list of (boxes (G_i, 4), labels (G_i,)), one per image
    n_classes : int
        Classes are ``0 .. n_classes - 1``.
    method : {"area", "11point"}

    Returns
    -------
    dict
        ``ap``: array (n_classes,) (nan for a class without ground truth); ``map``: nanmean of it;
        ``curves``: list of :class:`PRCurve`.
    """
    check_choice(method, "method", "evaluate_detections", AP_METHODS)
    curves = [pr_curve(detections, ground_truth, c, iou_threshold) for c in range(n_classes)]
    ap = np.array([average_precision(c.precision, c.recall, method) if c.n_ground_truth
                   else np.nan for c in curves])
    mean = float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
    return {"ap": ap, "map": mean, "curves": curves}
