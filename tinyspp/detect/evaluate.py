"""Detection evaluation as the PASCAL VOC devkit defines it: precision/recall, AP, mAP.

This is ``VOCevaldet.m`` of the VOC devkit, read line by line. For one class, the detections of
all images are sorted by score, highest first; ties keep their input order (image by image, then
in each image's order: a stable sort, like MATLAB's ``sort``). Walking down that list, each
detection is compared with the objects of its class in its own image:

1. its best match is the object with the largest IoU (the first one on ties);
2. if that IoU is below ``iou_threshold`` (0.5 in VOC) -- or the image has no such object --
   the detection is a **false positive**;
3. otherwise, if the object is marked *difficult*, the detection is **ignored**: neither a true
   nor a false positive;
4. otherwise it is a **true positive** if the object is not matched yet (it then becomes
   matched) and a **false positive** if it is -- a duplicate detection, even when another object
   would have matched it.

Difficult objects are also left out of the number of positives ``G``. With cumulative counts
``tp`` and ``fp`` over the detections that count::

    recall = tp / G        precision = tp / (tp + fp)

Two areas under the curve:

- ``"11point"`` (VOC2007): ``AP = mean over t in 0:0.1:1 of max(precision[recall >= t])``
  (0 where no point reaches ``t``). The thresholds are MATLAB's ``0:0.1:1`` exactly
  (:data:`VOC07_THRESHOLDS`): its fourth value is ``0.30000000000000004``, so a recall of exactly
  3/10 does not reach it, while 3/5 does reach ``0.6`` (``np.linspace(0, 1, 11)`` would not).
- ``"area"`` (VOC2010+, ``VOCap.m``): precision made non-increasing from the right (the
  envelope), integrated exactly over recall.

The devkit's IoU uses 1-based inclusive pixel boxes (width ``xmax - xmin + 1``); a continuous box
``[x0, x1)`` of :mod:`tinyspp.detect.geometry` is the pixels ``x0 + 1 .. x1``, so both give the
same IoU, and :func:`~tinyspp.detect.geometry.iou` is used as it is.

Empty cases: an image without detections or objects takes part as such; a class without
detections has ``AP = 0``; a class without (non-difficult) objects has ``AP = nan`` and is left out
of the mAP, since its recall is undefined (the devkit divides by zero). Detections that are all
ignored give ``AP = 0``, as the devkit's Python port ``voc_eval.py`` does.

Examples
--------
>>> import numpy as np
>>> gt = [(np.array([[0, 0, 10, 10], [20, 0, 30, 10]]), np.array([0, 0]),
...        np.array([False, True]))]                       # the second object is difficult
>>> dets = [(np.array([[20, 0, 30, 10], [0, 0, 10, 10]]), np.array([0.9, 0.8]),
...          np.array([0, 0]))]
>>> res = evaluate_detections(dets, gt, n_classes=1)
>>> float(res["ap"][0]), res["curves"][0].n_ground_truth, res["curves"][0].n_ignored
(1.0, 1, 1)
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from ..validate import check_choice, check_int
from .geometry import check_boxes, iou

AP_METHODS = ("11point", "area")

# MATLAB's 0:0.1:1 (colonop: the first half a + k*d, the second half b - k*d, the middle (a+b)/2)
VOC07_THRESHOLDS = tuple([k * 0.1 for k in range(5)] + [(0 + 1) / 2]
                         + [1 - k * 0.1 for k in range(4, -1, -1)])


class PRCurve(NamedTuple):
    precision: np.ndarray    # (D,) after each counted detection, in score order
    recall: np.ndarray       # (D,)
    scores: np.ndarray       # (D,) their scores, descending
    n_ground_truth: int      # positives G: the class's objects that are not difficult
    n_ignored: int = 0       # detections left out because their best match is difficult


def _check_curve(values, name, func):
    v = np.asarray(values, dtype=np.float64)
    bad = ~(np.isfinite(v) & (v >= 0) & (v <= 1))
    if bad.any():
        raise ValueError(f"{func}: {name} must hold finite values in [0, 1], got "
                         f"{v[bad][0]} at index {int(np.flatnonzero(bad)[0])}")
    return v


def average_precision(precision, recall, method: str = "area") -> float:
    """Area under a precision/recall curve (points in score order), as the VOC devkit computes it.

    Parameters
    ----------
    precision, recall : arrays of shape (D,)
        Values in ``[0, 1]``; ``D = 0`` (no detections) gives 0.
    method : {"area", "11point"}
        ``"area"``: VOC2010+ (``VOCap.m``); ``"11point"``: VOC2007, thresholds
        :data:`VOC07_THRESHOLDS`.

    Examples
    --------
    >>> # hits at ranks 1 and 3 of 3 detections, 2 objects: P = 1, 1/2, 2/3; R = 1/2, 1/2, 1
    >>> p, r = np.array([1, 1 / 2, 2 / 3]), np.array([0.5, 0.5, 1.0])
    >>> round(float(average_precision(p, r, "area")), 4)   # 0.5 * 1 + 0.5 * 2/3
    0.8333
    >>> round(float(average_precision(p, r, "11point")), 4)  # (6 * 1 + 5 * 2/3) / 11
    0.8485
    """
    func = "average_precision"
    check_choice(method, "method", func, AP_METHODS)
    p = _check_curve(precision, "precision", func)
    r = _check_curve(recall, "recall", func)
    if p.shape != r.shape or p.ndim != 1:
        raise ValueError(f"{func}: precision and recall must be 1-D of equal length, "
                         f"got {p.shape} and {r.shape}")
    if method == "11point":
        # the devkit adds p/11 eleven times; the plain mean differs in the last bit only and
        # keeps a perfect curve at exactly 1
        reached = [p[r >= t] for t in VOC07_THRESHOLDS]
        return float(np.mean([v.max() if v.size else 0.0 for v in reached]))
    mrec = np.concatenate([[0.0], r, [1.0]])
    mpre = np.concatenate([[0.0], p, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]          # envelope: non-increasing
    step = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1        # where recall changes
    return float(np.sum((mrec[step] - mrec[step - 1]) * mpre[step]))


# ---------------------------------------------------------------- input checks
def _as_list(per_image, name, func):
    if not isinstance(per_image, (list, tuple)):
        raise TypeError(f"{func}: {name} must be a list with one entry per image, "
                        f"got {type(per_image).__name__}")
    return list(per_image)


def _labels(labels, n, name, func, n_classes):
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) != n:
        raise ValueError(f"{func}: {name} must have shape ({n},) like its boxes, "
                         f"got shape {np.shape(labels)}")
    if n == 0:
        return lab.astype(np.int64)
    if not np.issubdtype(lab.dtype, np.integer):
        raise TypeError(f"{func}: {name} must be integer class indices, got dtype {lab.dtype}")
    if n_classes is not None and (lab.min() < 0 or lab.max() >= n_classes):
        bad = lab[(lab < 0) | (lab >= n_classes)][0]
        raise ValueError(f"{func}: {name} must lie in 0 .. {n_classes - 1} (n_classes="
                         f"{n_classes}), got {bad}")
    return lab.astype(np.int64)


def _scores(scores, n, name, func):
    s = np.asarray(scores)
    if s.ndim > 1 or s.size != n:
        raise ValueError(f"{func}: {name} must have shape ({n},) like its boxes, "
                         f"got shape {s.shape}")
    if n and not (np.issubdtype(s.dtype, np.floating) or np.issubdtype(s.dtype, np.integer)):
        raise TypeError(f"{func}: {name} must be numeric, got dtype {s.dtype}")
    s = s.reshape(-1).astype(np.float64)
    bad = ~np.isfinite(s)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{func}: {name} must be finite (a NaN or infinite score has no place "
                         f"in the ranking), got {s[k]} at index {k}")
    return s


def _difficult(flags, n, name, func):
    d = np.asarray(flags)
    if d.ndim > 1 or d.size != n:
        raise ValueError(f"{func}: {name} must have shape ({n},) like its boxes, "
                         f"got shape {d.shape}")
    d = d.reshape(-1)
    if d.dtype != bool:
        if not (np.issubdtype(d.dtype, np.integer) and np.isin(d, (0, 1)).all()):
            raise TypeError(f"{func}: {name} must be a boolean array (or 0/1 integers), "
                            f"got dtype {d.dtype}" + (f" with values {np.unique(d)[:5].tolist()}"
                                                      if d.size else ""))
        d = d.astype(bool)
    return d


def _entry(entry, sizes, name, func):
    if not isinstance(entry, (tuple, list)) or len(entry) not in sizes:
        what = " or ".join(str(k) for k in sizes)
        got = f"length {len(entry)}" if isinstance(entry, (tuple, list)) else type(entry).__name__
        raise TypeError(f"{func}: {name} must be a tuple of {what} arrays, got {got}")
    return entry


def _prepare(detections, ground_truth, func, n_classes=None):
    """Validated per-image arrays: ([(boxes, scores, labels)], [(boxes, labels, difficult)])."""
    dets = _as_list(detections, "detections", func)
    gts = _as_list(ground_truth, "ground_truth", func)
    if len(dets) != len(gts):
        raise ValueError(f"{func}: detections ({len(dets)} images) and ground_truth "
                         f"({len(gts)} images) differ in length")
    clean_d, clean_g = [], []
    for i, (d, g) in enumerate(zip(dets, gts)):
        boxes, scores, labels = _entry(d, (3,), f"detections[{i}] (boxes, scores, labels)", func)
        boxes = check_boxes(boxes, f"detections[{i}] boxes", func)
        clean_d.append((boxes, _scores(scores, len(boxes), f"detections[{i}] scores", func),
                        _labels(labels, len(boxes), f"detections[{i}] labels", func, n_classes)))
        g = _entry(g, (2, 3), f"ground_truth[{i}] (boxes, labels[, difficult])", func)
        g_boxes = check_boxes(g[0], f"ground_truth[{i}] boxes", func)
        G = len(g_boxes)
        g_labels = _labels(g[1], G, f"ground_truth[{i}] labels", func, n_classes)
        diff = (np.zeros(G, dtype=bool) if len(g) == 2
                else _difficult(g[2], G, f"ground_truth[{i}] difficult", func))
        clean_g.append((g_boxes, g_labels, diff))
    return clean_d, clean_g


def _check_threshold(iou_threshold, func):
    if (isinstance(iou_threshold, bool) or not isinstance(iou_threshold, numbers.Real)
            or not 0 < iou_threshold <= 1):
        raise ValueError(f"{func}: iou_threshold must be a number in (0, 1], "
                         f"got {iou_threshold!r}")
    return float(iou_threshold)


# ---------------------------------------------------------------- the devkit's matching
def _curve(dets, gts, cls, iou_threshold) -> PRCurve:
    image_of, best_iou, best_obj, scores = [], [], [], []
    for i, ((boxes, s, labels), (g_boxes, g_labels, _)) in enumerate(zip(dets, gts)):
        mine = labels == cls
        if not mine.any():
            continue
        g = g_boxes[g_labels == cls]
        if len(g):
            ov = iou(boxes[mine], g)                        # (D_i, G_i)
            best_obj.append(np.argmax(ov, axis=1))          # first of equal IoUs, as the devkit
            best_iou.append(ov.max(axis=1))
        else:
            best_obj.append(np.zeros(int(mine.sum()), dtype=np.int64))
            best_iou.append(np.full(int(mine.sum()), -np.inf))      # nothing to match
        image_of.append(np.full(int(mine.sum()), i))
        scores.append(s[mine])
    difficult = [diff[g_labels == cls] for _, g_labels, diff in gts]
    n_pos = int(sum(int((~d).sum()) for d in difficult))
    if not scores:
        empty = np.zeros(0)
        return PRCurve(empty, empty.copy(), empty.copy(), n_pos, 0)
    image_of, best_iou, best_obj, scores = (np.concatenate(a) for a in
                                            (image_of, best_iou, best_obj, scores))
    order = np.argsort(-scores, kind="stable")              # descending; ties in input order
    matched = [np.zeros(len(d), dtype=bool) for d in difficult]
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for rank, k in enumerate(order):
        i, j = image_of[k], best_obj[k]
        if best_iou[k] < iou_threshold:
            fp[rank] = 1                                    # no object close enough
        elif difficult[i][j]:
            continue                                        # matched a difficult object: ignore
        elif not matched[i][j]:
            matched[i][j] = True
            tp[rank] = 1
        else:
            fp[rank] = 1                                    # a duplicate of a matched object
    counted = (tp + fp) > 0
    ctp, cfp = np.cumsum(tp[counted]), np.cumsum(fp[counted])
    precision = ctp / (ctp + cfp)
    recall = ctp / n_pos if n_pos else np.full(len(ctp), np.nan)
    return PRCurve(precision, recall, scores[order][counted], n_pos,
                   int(len(order) - counted.sum()))


def pr_curve(detections, ground_truth, cls: int, iou_threshold: float = 0.5) -> PRCurve:
    """Precision/recall of class ``cls`` over a set of images (the devkit's ``VOCevaldet``).

    Parameters
    ----------
    detections : list of (boxes (D_i, 4), scores (D_i,), labels (D_i,)), one per image
        Scores must be finite; labels are integer class indices.
    ground_truth : list of (boxes (G_i, 4), labels (G_i,)[, difficult (G_i,) bool]), one per image
        Without ``difficult``, no object is difficult.
    cls : int
    iou_threshold : float in (0, 1]

    Returns
    -------
    PRCurve
        One point per counted detection (ignored ones, whose best match is difficult, are left
        out: they change neither count, so the area is the same). ``recall`` is nan when the
        class has no positives.
    """
    func = "pr_curve"
    cls = check_int(cls, "cls", func, minimum=0)
    iou_threshold = _check_threshold(iou_threshold, func)
    dets, gts = _prepare(detections, ground_truth, func)
    return _curve(dets, gts, cls, iou_threshold)


def evaluate_detections(detections, ground_truth, n_classes: int, iou_threshold: float = 0.5,
                        method: str = "area") -> dict:
    """Per-class AP and mAP as the VOC devkit computes them.

    Parameters
    ----------
    detections : list of (boxes (D_i, 4), scores (D_i,), labels (D_i,)), one per image
    ground_truth : list of (boxes (G_i, 4), labels (G_i,)[, difficult (G_i,) bool]), one per image
        E.g. ``dataset.ground_truth()`` of :mod:`tinyspp.detect.data`.
    n_classes : int
        Classes are ``0 .. n_classes - 1``; a label outside that range is an error.
    iou_threshold : float in (0, 1]
    method : {"area", "11point"}
        ``"11point"`` is VOC2007 (the paper's numbers), ``"area"`` VOC2010 and later.

    Returns
    -------
    dict
        ``ap``: array (n_classes,) (nan for a class without positives); ``map``: the mean over
        the other classes (nan if none); ``curves``: list of :class:`PRCurve`.
    """
    func = "evaluate_detections"
    check_choice(method, "method", func, AP_METHODS)
    n_classes = check_int(n_classes, "n_classes", func)
    iou_threshold = _check_threshold(iou_threshold, func)
    dets, gts = _prepare(detections, ground_truth, func, n_classes)
    curves = [_curve(dets, gts, c, iou_threshold) for c in range(n_classes)]
    ap = np.array([average_precision(c.precision, c.recall, method) if c.n_ground_truth
                   else np.nan for c in curves])
    mean = float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
    return {"ap": ap, "map": mean, "curves": curves}
