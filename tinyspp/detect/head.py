"""The shared detection head: per-class linear SVMs, hard-negative mining, box regression, NMS.

SPP-net (Sec. 4) and R-CNN differ only in how a window's feature vector is computed (an
*extractor*, :mod:`tinyspp.detect.features`); everything after it is this one head.

Training data: a re-iterable of per-image :class:`ImageRecord` s (a list, or any object whose
``__iter__`` starts over -- e.g. a reader of an on-disk feature store). The head reads them image
by image, and keeps in memory only the positives, the box-regression rows and the current cache
of negatives, never all windows of all images.

The paper's rules (SPP-net Sec. 4.1, after R-CNN), each an option with the paper's default:

- **positives** of class ``c``: its ground-truth windows;
- **negatives** of class ``c``: windows whose IoU with every object of ``c`` is at most
  ``neg_iou = 0.3`` (ground truth of other classes included); a negative overlapping another
  negative of the same image by more than ``neg_overlap = 0.7`` is removed -- greedily in window
  order (non-maximum suppression with equal scores), so one of each cluster stays;
- **mining**: the first SVM sees up to ``initial_negatives`` negatives drawn uniformly at random
  over all images; each of ``mining_rounds`` passes then adds every negative scoring above
  ``hard_threshold = -1`` (inside the margin) and refits;
- **box regression** (R-CNN): ridge regression from l2-normalised pool5 features to
  :func:`~tinyspp.detect.geometry.encode` targets, on windows with IoU >= ``reg_iou = 0.6``;
- **inference**: scores above ``score_threshold``, boxes regressed (deltas clamped) and clipped,
  NMS at ``nms_threshold = 0.3`` per class, at most ``max_per_image`` detections.

The SVMs see l2-normalised pool5 features (``features="pool"``) or the output of fc layers
``fc`` (``features="fc"``; fine-tuned by :mod:`tinyspp.detect.finetune`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np

from ..backend import asnumpy, check_device, to_device
from ..validate import check_choice, check_int
from .geometry import check_boxes, clip_boxes, decode, encode, iou, nms_per_class


class ImageRecord(NamedTuple):
    """The training windows of one image and their features.

    ``R = G + P`` windows: the image's ``G`` ground-truth boxes first, then its ``P`` proposals.
    ``K`` is the number of classes.
    """

    boxes: np.ndarray      # (R, 4) float64 windows [x0, y0, x1, y1]
    features: np.ndarray   # (R, D) float32 pool5 (region SPP) features of the windows
    labels: np.ndarray     # (R,) int64 class of ground-truth rows, -1 for proposals
    overlap: np.ndarray    # (R, K) float64 IoU with the best-overlapping object of each class
    match: np.ndarray      # (R, K) int64 index into gt_boxes of that object (0 if none)
    gt_boxes: np.ndarray   # (G, 4) float64 the image's (non-difficult) objects


def make_record(gt_boxes, gt_labels, proposals, features, n_classes: int, *,
                difficult=None) -> ImageRecord:
    """Build the :class:`ImageRecord` of one image.

    Parameters
    ----------
    gt_boxes : array of shape (G, 4)
    gt_labels : array of shape (G,), ints in ``[0, n_classes)``
    proposals : array of shape (P, 4)
    features : array of shape (G + P, D), or callable ``windows (G+P, 4) -> (G+P, D)``
        Features of the windows, ground truth first (e.g. ``extractor.pool`` bound to an image).
    n_classes : int
    difficult : array of shape (G,) of bool, optional
        Objects marked difficult (VOC) are left out of training: not positives, not regression
        targets, and windows are labelled against the other objects only (tinyspp's choice; VOC
        evaluation ignores them as well).
    """
    func = "make_record"
    gt = check_boxes(gt_boxes, "gt_boxes", func)
    lab = np.asarray(gt_labels).reshape(-1)
    if lab.size and not np.issubdtype(lab.dtype, np.integer):
        raise TypeError(f"{func}: gt_labels must be integers, got dtype {lab.dtype}")
    lab = lab.astype(np.int64)
    K = check_int(n_classes, "n_classes", func)
    if len(lab) != len(gt) or (lab < 0).any() or (lab >= K).any():
        raise ValueError(f"{func}: gt_labels must hold {len(gt)} ints in [0, {K}), "
                         f"got {lab.tolist()}")
    if difficult is not None:
        keep = ~np.asarray(difficult, dtype=bool).reshape(-1)
        if len(keep) != len(gt):
            raise ValueError(f"{func}: difficult must have one flag per object ({len(gt)}), "
                             f"got {len(keep)}")
        gt, lab = gt[keep], lab[keep]
    props = check_boxes(proposals, "proposals", func)
    windows = np.concatenate([gt, props])
    feats = features(windows) if callable(features) else features
    feats = np.asarray(feats)
    if feats.ndim != 2 or len(feats) != len(windows):
        raise ValueError(f"{func}: features must have one row per window ({len(windows)} = "
                         f"{len(gt)} ground truth + {len(props)} proposals), got shape "
                         f"{feats.shape}")
    overlap = np.zeros((len(windows), K))
    match = np.zeros((len(windows), K), dtype=np.int64)
    if len(gt):
        all_ov = iou(windows, gt)                                        # (R, G)
        for c in range(K):
            members = np.flatnonzero(lab == c)
            if len(members):
                best = np.argmax(all_ov[:, members], axis=1)
                match[:, c] = members[best]
                overlap[:, c] = all_ov[np.arange(len(windows)), members[best]]
    labels = np.concatenate([lab, -np.ones(len(props), dtype=np.int64)])
    return ImageRecord(windows, feats.astype(np.float32, copy=False), labels, overlap, match, gt)


def check_reiterable(records, func: str):
    """``records`` must give a fresh iterator each time (training reads it several times)."""
    if isinstance(records, Iterator):
        raise TypeError(f"{func}: records must be re-iterable (a list, or an object whose "
                        "__iter__ starts over), got a one-shot iterator such as a generator; "
                        "training reads it once per mining round")
    if not isinstance(records, Iterable):
        raise TypeError(f"{func}: records must be an iterable of ImageRecord, got "
                        f"{type(records).__name__}")
    return records


def l2_normalise(x):
    """Rows of ``x`` scaled to unit length (zero rows stay zero), float64."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def greedy_unique(boxes, threshold: float, overlaps=None) -> np.ndarray:
    """Indices of ``boxes`` kept when, in order, a box overlapping an already kept one by IoU
    more than ``threshold`` is dropped (NMS with equal scores). ``threshold >= 1`` keeps all.
    ``overlaps``: their ``(K, K)`` IoU matrix, if already computed."""
    b = check_boxes(boxes, "boxes", "greedy_unique")
    if threshold >= 1 or len(b) < 2:
        return np.arange(len(b))
    ov = iou(b, b) if overlaps is None else overlaps
    alive = np.ones(len(b), dtype=bool)
    keep = []
    for i in range(len(b)):
        if alive[i]:
            keep.append(i)
            alive &= ov[i] <= threshold
    return np.array(keep, dtype=np.int64)


def _set_mode(net, train: bool):
    """Call ``net.train()`` / ``net.eval()`` where the network has them."""
    method = getattr(net, "train" if train else "eval", None)
    if callable(method):
        method()


class DetectionHead:
    """Per-class linear SVMs with hard-negative mining, box regression and NMS.

    Parameters
    ----------
    n_classes : int
        Object classes ``0 .. n_classes - 1`` (background is not a class here).
    fc : layers with ``forward((R, D)) -> (R, D')``, optional
        fc layers applied to pool5 features when ``features="fc"``.
    features : {"pool", "fc"}
        What the SVMs see: l2-normalised pool5, or l2-normalised fc output.
    svm_C : float
        ``LinearSVC`` regularisation.
    neg_iou : float
        Negatives of a class overlap each of its objects by at most this (paper: 0.3).
    neg_overlap : float
        A negative overlapping another negative of its image by more than this is removed
        (paper: 0.7; 1.0 keeps all).
    mining_rounds : int
        Hard-negative mining passes after the first fit (0 = none).
    initial_negatives : int
        Random negatives per class for the first fit.
    hard_threshold : float
        Mining adds negatives scoring above this (R-CNN: -1, the margin).
    bbox_regression : bool
    reg_iou : float
        Box regression trains on windows with IoU >= this with an object (R-CNN: 0.6).
    ridge_alpha : float
    nms_threshold, score_threshold : float
    max_per_image : int
    device : {"cpu", "gpu"}
        Where ``fc`` runs.
    seed : int
        Random initial negatives.
    """

    def __init__(self, n_classes: int, *, fc=None, features: str = "pool", svm_C: float = 1.0,
                 neg_iou: float = 0.3, neg_overlap: float = 0.7, mining_rounds: int = 1,
                 initial_negatives: int = 1000, hard_threshold: float = -1.0,
                 bbox_regression: bool = True, reg_iou: float = 0.6, ridge_alpha: float = 1.0,
                 nms_threshold: float = 0.3, score_threshold: float = -1.0,
                 max_per_image: int = 100, device: str = "cpu", seed: int = 0):
        func = "DetectionHead"
        self.n_classes = check_int(n_classes, "n_classes", func)
        self.features = check_choice(features, "features", func, ("pool", "fc"))
        if features == "fc" and fc is None:
            raise ValueError(f"{func}: features='fc' needs fc layers (fc=...)")
        for name, v in (("neg_iou", neg_iou), ("neg_overlap", neg_overlap), ("reg_iou", reg_iou),
                        ("nms_threshold", nms_threshold)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{func}: {name} must be in [0, 1], got {v}")
        self.fc = fc
        self.svm_C, self.neg_iou = float(svm_C), float(neg_iou)
        self.neg_overlap = float(neg_overlap)
        self.mining_rounds = check_int(mining_rounds, "mining_rounds", func, minimum=0)
        self.initial_negatives = check_int(initial_negatives, "initial_negatives", func)
        self.hard_threshold = float(hard_threshold)
        self.bbox_regression, self.reg_iou = bool(bbox_regression), float(reg_iou)
        self.ridge_alpha = float(ridge_alpha)
        self.nms_threshold, self.score_threshold = float(nms_threshold), float(score_threshold)
        self.max_per_image = check_int(max_per_image, "max_per_image", func)
        self.device = check_device(device, func)
        self.seed = seed
        self.svm_w = self.svm_b = None       # (D, K), (K,) after fit
        self.regressors = None               # list of K fitted Ridge models (or None) after fit
        self.classifier = None               # (K + 1)-way Linear left by fine-tuning, if any
        self.fit_stats = {}                  # positives / negatives per class after fit

    # ------------------------------------------------------------------ features
    def svm_input(self, pooled) -> np.ndarray:
        """What the SVMs see, ``(R, D)`` float64: pool5 or ``fc(pool5)``, l2-normalised."""
        pooled = np.asarray(pooled)
        if self.features == "fc" and len(pooled):
            _set_mode(self.fc, train=False)
            x = to_device(np.ascontiguousarray(pooled, dtype=np.float32), self.device)
            pooled = asnumpy(self.fc.forward(x))
        return l2_normalise(pooled)

    def negatives(self, record: ImageRecord, c: int, overlaps=None) -> np.ndarray:
        """Row indices of the negatives of class ``c`` in one record (the paper's two rules).

        ``overlaps``: the record's ``(R, R)`` window IoU matrix, if already computed (it is the
        same for every class of an image).
        """
        rows = np.flatnonzero((record.overlap[:, c] <= self.neg_iou) & (record.labels != c))
        sub = None if overlaps is None else overlaps[np.ix_(rows, rows)]
        return rows[greedy_unique(record.boxes[rows], self.neg_overlap, sub)]

    def _window_overlaps(self, record):
        """The ``(R, R)`` IoU of a record's windows when the 0.7 rule needs it, else None."""
        return iou(record.boxes, record.boxes) if self.neg_overlap < 1 else None

    # ------------------------------------------------------------------ training
    def fit(self, records) -> DetectionHead:
        """Train the SVMs (with hard-negative mining) and the box regressors.

        Parameters
        ----------
        records : re-iterable of ImageRecord
            Read ``1 + mining_rounds`` times, one image at a time.

        Returns
        -------
        self
        """
        from sklearn.svm import LinearSVC

        func = "DetectionHead.fit"
        check_reiterable(records, func)
        K = self.n_classes
        rng = np.random.default_rng(self.seed)
        n0 = self.initial_negatives
        pos = [[] for _ in range(K)]                 # SVM inputs of positives, per class
        reg_x = [[] for _ in range(K)]               # pool5 (l2) of regression rows
        reg_t = [[] for _ in range(K)]               # their encode() targets
        # reservoir of initial negatives: keep the n0 smallest random keys seen so far
        res_key = [np.zeros(0) for _ in range(K)]
        res_id = [np.zeros((0, 2), dtype=np.int64) for _ in range(K)]
        res_x = [None] * K
        D = None
        n_images = 0
        for i, rec in enumerate(records):
            n_images += 1
            self._check_record(rec, i, func)
            if len(rec.boxes) == 0:
                continue                                 # an image without windows adds nothing
            X = self.svm_input(rec.features).astype(np.float32)           # (R, D)
            if D is None and len(X):
                D = X.shape[1]
            window_ov = self._window_overlaps(rec)
            for c in range(K):
                pos[c].append(X[rec.labels == c])
                if self.bbox_regression:
                    wide = (rec.boxes[:, 2] > rec.boxes[:, 0]) & (rec.boxes[:, 3] > rec.boxes[:, 1])
                    r = np.flatnonzero((rec.overlap[:, c] >= self.reg_iou) & wide)
                    if len(r):
                        reg_x[c].append(l2_normalise(rec.features[r]))
                        reg_t[c].append(encode(rec.boxes[r], rec.gt_boxes[rec.match[r, c]]))
                rows = self.negatives(rec, c, window_ov)
                keys = np.concatenate([res_key[c], rng.random(len(rows))])
                ids = np.concatenate([res_id[c], np.stack([np.full(len(rows), i), rows], 1)])
                xs = X[rows] if res_x[c] is None else np.concatenate([res_x[c], X[rows]])
                top = np.argsort(keys, kind="stable")[:n0]
                res_key[c], res_id[c], res_x[c] = keys[top], ids[top], xs[top]
        if n_images == 0:
            raise ValueError(f"{func}: records is empty; need at least one image")
        if D is None:
            raise ValueError(f"{func}: no record has any window; need ground truth or proposals")
        self.svm_w, self.svm_b = np.zeros((D, K)), np.zeros(K)
        pos = [np.concatenate(p) if p else np.zeros((0, D), np.float32) for p in pos]
        # negatives cache per class: {(image, row): SVM input (float32)}
        cache = [dict(zip(map(tuple, res_id[c].tolist()), res_x[c])) if res_x[c] is not None
                 else {} for c in range(K)]
        self.fit_stats = {"positives": [len(p) for p in pos], "negatives": []}
        active = [len(pos[c]) > 0 and len(cache[c]) > 0 for c in range(K)]
        for c in range(K):
            if not active[c]:
                self.svm_b[c] = -10.0                # a class never seen never fires
        svm = LinearSVC(C=self.svm_C, class_weight="balanced", max_iter=5000,
                        random_state=self.seed)

        def refit(c):
            Xn = np.stack(list(cache[c].values()))
            X = np.concatenate([pos[c], Xn]).astype(np.float64)
            y = np.concatenate([np.ones(len(pos[c])), -np.ones(len(Xn))])
            svm.fit(X, y)
            self.svm_w[:, c], self.svm_b[c] = svm.coef_[0], svm.intercept_[0]

        for c in range(K):
            if active[c]:
                refit(c)
        for _ in range(self.mining_rounds):
            added = np.zeros(K, dtype=np.int64)
            for i, rec in enumerate(records):
                if i >= n_images:
                    raise ValueError(f"{func}: records gave more images on a later pass "
                                     f"({i + 1}) than on the first ({n_images})")
                X = window_ov = None
                for c in range(K):
                    if not active[c]:
                        continue
                    if window_ov is None:
                        window_ov = self._window_overlaps(rec)
                    rows = self.negatives(rec, c, window_ov)
                    if len(rows) == 0:
                        continue
                    if X is None:
                        X = self.svm_input(rec.features).astype(np.float32)
                    s = X[rows] @ self.svm_w[:, c] + self.svm_b[c]
                    hard = rows[s > self.hard_threshold]
                    for r, x in zip(hard, X[hard]):
                        if (i, int(r)) not in cache[c]:
                            cache[c][(i, int(r))] = x
                            added[c] += 1
            if not added.any():
                break
            for c in range(K):
                if active[c] and added[c]:
                    refit(c)
        self.fit_stats["negatives"] = [len(cache[c]) for c in range(K)]
        self.regressors = None
        if self.bbox_regression:
            from sklearn.linear_model import Ridge

            self.regressors = []
            for c in range(K):
                if sum(len(x) for x in reg_x[c]) < 4:
                    self.regressors.append(None)
                    continue
                self.regressors.append(Ridge(alpha=self.ridge_alpha).fit(
                    np.concatenate(reg_x[c]), np.concatenate(reg_t[c])))
        return self

    def _check_record(self, rec, i, func):
        if not isinstance(rec, ImageRecord):
            raise TypeError(f"{func}: records[{i}] must be an ImageRecord (make_record), got "
                            f"{type(rec).__name__}")
        R = len(rec.boxes)
        if rec.overlap.shape != (R, self.n_classes) or len(rec.features) != R:
            raise ValueError(f"{func}: records[{i}] has {R} windows but features "
                             f"{np.shape(rec.features)} and overlap {np.shape(rec.overlap)} "
                             f"(expected ({R}, D) and ({R}, {self.n_classes}))")

    # ------------------------------------------------------------------ inference
    def score(self, pooled) -> np.ndarray:
        """SVM scores ``(R, K)`` of pool5 features ``(R, D)``."""
        if self.svm_w is None:
            raise RuntimeError("DetectionHead.score: call fit() first")
        if len(pooled) == 0:
            return np.zeros((0, self.n_classes))
        scores = self.svm_input(pooled) @ self.svm_w + self.svm_b
        if not np.isfinite(scores).all():
            raise ValueError("DetectionHead.score: non-finite scores; the features hold NaN or "
                             "inf (check the image and the trunk)")
        return scores

    def detect_windows(self, boxes, pooled, image_shape):
        """Detections among scored windows: ``(boxes (D, 4), scores (D,), labels (D,))``.

        Parameters
        ----------
        boxes : array of shape (R, 4), the windows
        pooled : array of shape (R, D), their pool5 features
        image_shape : (H, W, ...) of the image (boxes are clipped into it)
        """
        func = "DetectionHead.detect_windows"
        boxes = check_boxes(boxes, "boxes", func)
        if len(pooled) != len(boxes):
            raise ValueError(f"{func}: pooled has {len(pooled)} rows for {len(boxes)} boxes")
        empty = np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)
        if len(boxes) == 0:
            if self.svm_w is None:
                raise RuntimeError(f"{func}: call fit() first")
            return empty
        scores = self.score(pooled)                                        # (R, K)
        rows, cls = np.nonzero(scores > self.score_threshold)
        out = boxes[rows]
        if self.regressors is not None and len(rows):
            X = l2_normalise(pooled[rows])
            wide = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
            for c in np.unique(cls):
                sel = np.flatnonzero((cls == c) & wide)
                if self.regressors[c] is not None and len(sel):
                    out[sel] = decode(out[sel], self.regressors[c].predict(X[sel]))
            out = clip_boxes(out, image_shape)
        s = scores[rows, cls]
        ok = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])      # clipped to nothing: drop
        out, s, cls = out[ok], s[ok], cls[ok]
        if len(s) == 0:
            return empty
        keep = nms_per_class(out, s, cls, self.nms_threshold)[: self.max_per_image]
        return out[keep], s[keep], cls[keep].astype(np.int64)
