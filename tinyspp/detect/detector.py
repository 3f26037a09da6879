"""The SPP-net object detector (He et al. 2014, Sec. 4).

Pipeline, per image::

    selective search (~2,000 windows)
      -> conv trunk ONCE per image and scale                     (1, C, h, w) per scale
      -> each window mapped onto the feature map of its scale     (geometry.image_to_feature_boxes)
      -> region SPP (6, 3, 2, 1) of its cells                     (R, C * 50)   "pool5"
      -> optional fc layers (the head)                            (R, D)        "fc7"
      -> one linear SVM per class -> class-specific box regression (Ridge on pool5) -> NMS 0.3

Multi-scale rule (Sec. 4): every window is pooled at the single scale whose scaled window area is
closest to ``input_size ** 2`` (the size the trunk was trained on). One scale = single-scale.

Training (R-CNN recipe, kept by SPP-net): positives are the ground-truth boxes of a class,
negatives the proposals with IoU <= 0.3 with every object of that class; the SVM is trained on an
initial random set of negatives, then re-trained after adding the "hard" negatives it scores above
-1 (``mining_rounds`` times). Box regression is trained on proposals with IoU >= 0.6 with an object
of the class, targets :func:`geometry.encode`.

Fine-tuning lives in :mod:`tinyspp.detect.finetune` (fc layers on cached pool5 features, as the
paper; or back-propagating through region SPP into the trunk, as Fast R-CNN later did).
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from ..backend import asnumpy, check_device, to_device
from ..validate import check_choice, check_int
from .geometry import (
    MAPPING_METHODS,
    check_boxes,
    clip_boxes,
    decode,
    encode,
    image_to_feature_boxes,
    iou,
    nms_per_class,
    receptive_field,
)


class TrainingCache(NamedTuple):
    """Pooled features of every training window, computed once and reused.

    Per image i (lists of length N): ``boxes[i] (R_i, 4)`` = ground truth then proposals,
    ``pooled[i] (R_i, C*M)`` float32, ``overlap[i] (R_i, K)`` IoU of each window with the
    best-overlapping object of each class (0 where the image has none), ``match[i] (R_i, K)``
    index of that object, ``gt_labels[i] (R_i,)`` the class of ground-truth rows, -1 for proposals.
    """

    boxes: list
    pooled: list
    overlap: list
    match: list
    gt_labels: list
    gt_boxes: list


def _l2_normalise(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class SPPDetector:
    """SPP-net detector: trunk once per image, region SPP per window, SVMs, box regression, NMS.

    Parameters
    ----------
    trunk : layers with ``forward(x (N, 3, H, W)) -> (N, C, h, w)``
        The convolutional part of a classification network (e.g. ``net[:k]`` of a tinyspp
        ``Sequential``). Iterating over it must give its layers, so that
        :func:`geometry.receptive_field` finds the stride ``S`` and the centre of cell 0.
    n_classes : int
        Object classes ``0 .. n_classes - 1`` (background is not a class here).
    head : layers with ``forward((R, C*M)) -> (R, D)``, optional
        fc layers applied to pooled features when ``features="fc"``.
    levels, mode : region SPP pyramid (default ``(6, 3, 2, 1)``, ``"adaptive"``).
    scales : sequence of int
        Shorter image side at each scale; one value = single-scale detection.
    input_size : int
        Side the trunk was trained on; selects the scale of each window.
    mapping : {"paper", "center"}
        Window-to-feature mapping (see :mod:`tinyspp.detect.geometry`).
    features : {"pool", "fc"}
        SVMs on pool5 (region SPP output) or on the head's output.
    svm_C : float
        ``LinearSVC`` regularisation (features are l2-normalised).
    neg_iou : float
        Proposals with IoU <= this with every object of a class are its negatives.
    mining_rounds : int
        Hard-negative mining rounds after the first SVM fit (0 = none).
    initial_negatives : int
        Random negatives per class for the first fit.
    bbox_regression : bool
    ridge_alpha : float
    nms_threshold : float
    score_threshold : float
        Windows with an SVM score below this are not reported.
    max_per_image : int
    proposal_kwargs : dict, optional
        Passed to :func:`tinyspp.detect.proposals.selective_search`.
    mean, std : per-channel image normalisation used when training the trunk.
    device : {"cpu", "gpu"}
        ``"gpu"`` runs the trunk and region pooling on CuPy (the trunk must already be there).
    seed : int
        Random negatives for the first SVM fit.
    """

    def __init__(self, trunk, n_classes: int, *, head=None, levels=(6, 3, 2, 1), mode="adaptive",
                 scales=(128,), input_size: int = 64, mapping: str = "paper",
                 features: str = "pool", svm_C: float = 1.0, neg_iou: float = 0.3,
                 mining_rounds: int = 1, initial_negatives: int = 1000,
                 bbox_regression: bool = True, ridge_alpha: float = 1.0,
                 nms_threshold: float = 0.3, score_threshold: float = -1.0,
                 max_per_image: int = 100, proposal_kwargs=None, mean=(0.5, 0.5, 0.5),
                 std=(0.25, 0.25, 0.25), device: str = "cpu", seed: int = 0):
        func = "SPPDetector"
        self.n_classes = check_int(n_classes, "n_classes", func)
        self.mapping = check_choice(mapping, "mapping", func, MAPPING_METHODS)
        self.features = check_choice(features, "features", func, ("pool", "fc"))
        if features == "fc" and head is None:
            raise ValueError(f"{func}: features='fc' needs a head (the fc layers)")
        self.device = check_device(device, func)
        self.scales = tuple(check_int(s, "scales", func, minimum=8) for s in scales)
        if not self.scales:
            raise ValueError(f"{func}: scales must not be empty")
        self.trunk, self.head = trunk, head
        self.levels, self.mode = tuple(levels), mode
        self.input_size = check_int(input_size, "input_size", func)
        self.svm_C, self.neg_iou = float(svm_C), float(neg_iou)
        self.mining_rounds = check_int(mining_rounds, "mining_rounds", func, minimum=0)
        self.initial_negatives = check_int(initial_negatives, "initial_negatives", func)
        self.bbox_regression, self.ridge_alpha = bool(bbox_regression), float(ridge_alpha)
        self.nms_threshold, self.score_threshold = float(nms_threshold), float(score_threshold)
        self.max_per_image = check_int(max_per_image, "max_per_image", func)
        self.proposal_kwargs = dict(proposal_kwargs or {})
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
        self.seed = seed
        self.stride, self.centre, _ = receptive_field(trunk)
        self.svm_w = self.svm_b = None       # (D, K), (K,) after fit
        self.regressors = None               # list of K fitted Ridge models (or None)
        self.classifier = None               # (K + 1)-way Linear left by fine-tuning, if any
        self.timings = {"trunk": [], "pool": []}

    # ------------------------------------------------------------------ features
    def propose(self, image) -> np.ndarray:
        """Selective search windows ``(R, 4)`` for one ``(H, W, 3)`` image."""
        from .proposals import selective_search

        return selective_search(image, **self.proposal_kwargs)

    def to_input(self, image, side: int):
        """Resize an ``(H, W, 3)`` image so its shorter side is ``side``; return the
        normalised ``(1, 3, h, w)`` float32 array (on the detector's device) and ``(fx, fy)``."""
        from skimage.transform import resize

        H, W = image.shape[:2]
        f = side / min(H, W)
        h, w = max(1, round(H * f)), max(1, round(W * f))
        img = resize(image, (h, w), order=1, anti_aliasing=f < 1, preserve_range=True)
        x = (img.transpose(2, 0, 1)[None].astype(np.float32) - self.mean) / self.std
        return to_device(np.ascontiguousarray(x), self.device), (w / W, h / H)

    def choose_scales(self, boxes, factors) -> np.ndarray:
        """Index of the scale whose scaled window area is closest to ``input_size ** 2``.

        ``boxes (R, 4)`` in image pixels, ``factors`` a list of ``(fx, fy)`` per scale.
        Returns ``(R,)`` int64.
        """
        b = check_boxes(boxes, "boxes", "SPPDetector.choose_scales")
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])                      # (R,)
        scaled = area[:, None] * np.array([fx * fy for fx, fy in factors])   # (R, scales)
        return np.argmin(np.abs(scaled - self.input_size ** 2), axis=1)

    def feature_rois(self, boxes, factor, feature_shape) -> np.ndarray:
        """``(R, 5)`` RoIs ``[0, x0', y0', x1', y1']`` of image windows on one scale's map."""
        fx, fy = factor
        scaled = check_boxes(boxes, "boxes", "feature_rois") * np.array([fx, fy, fx, fy])
        cells = image_to_feature_boxes(scaled, self.stride, feature_shape, method=self.mapping,
                                       centre=self.centre)
        return np.concatenate([np.zeros((len(cells), 1), dtype=np.int64), cells], axis=1)

    def pool(self, image, boxes) -> np.ndarray:
        """Region SPP features ``(R, C*M)`` (float32, NumPy) of windows ``boxes (R, 4)``.

        Runs the trunk once per scale (only the scales some window picks) and pools each window
        at its scale. Appends the seconds spent to ``self.timings``.
        """
        from ..ops.roi import roi_spp_forward

        boxes = check_boxes(boxes, "boxes", "SPPDetector.pool")
        t0 = time.perf_counter()
        inputs = [self.to_input(image, s) for s in self.scales]
        pick = self.choose_scales(boxes, [f for _, f in inputs]) if len(boxes) else np.zeros(0)
        maps = {}
        for k in np.unique(pick):
            maps[int(k)] = self.trunk.forward(inputs[int(k)][0])
        _sync(self.device)
        t1 = time.perf_counter()
        out = None
        for k, fmap in maps.items():
            rows = np.flatnonzero(pick == k)
            rois = self.feature_rois(boxes[rows], inputs[k][1], fmap.shape[2:])
            pooled, _ = roi_spp_forward(fmap, to_device(rois, self.device), levels=self.levels,
                                        mode=self.mode)
            pooled = asnumpy(pooled).astype(np.float32, copy=False)
            if len(maps) == 1:  # one scale took every window, in order: no copy
                out = pooled
                continue
            if out is None:
                out = np.empty((len(boxes), pooled.shape[1]), dtype=np.float32)
            out[rows] = pooled
        t2 = time.perf_counter()
        self.timings["trunk"].append(t1 - t0)
        self.timings["pool"].append(t2 - t1)
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)

    def head_features(self, pooled) -> np.ndarray:
        """What the SVMs see: pooled features or the head's output, l2-normalised, ``(R, D)``."""
        if self.features == "fc" and len(pooled):
            _set_mode(self.head, train=False)
            pooled = asnumpy(self.head.forward(to_device(np.ascontiguousarray(pooled),
                                                         self.device)))
        return _l2_normalise(np.asarray(pooled, dtype=np.float64))

    # ------------------------------------------------------------------ training
    def prepare(self, images, boxes, labels, proposals=None) -> TrainingCache:
        """Propose (unless given) and pool every training window once.

        ``images``: list of ``(H, W, 3)``; ``boxes``: list of ``(G_i, 4)``; ``labels``: list of
        ``(G_i,)``; ``proposals``: optional list of ``(P_i, 4)``.
        """
        func = "SPPDetector.prepare"
        if not (len(images) == len(boxes) == len(labels)):
            raise ValueError(f"{func}: images, boxes and labels need one entry per image, got "
                             f"{len(images)}, {len(boxes)}, {len(labels)}")
        if proposals is not None and len(proposals) != len(images):
            raise ValueError(f"{func}: proposals must have one entry per image")
        K = self.n_classes
        cache = TrainingCache([], [], [], [], [], [])
        for i, image in enumerate(images):
            gt = check_boxes(boxes[i], f"boxes[{i}]", func)
            lab = np.asarray(labels[i], dtype=np.int64).reshape(-1)
            if len(lab) != len(gt) or (lab < 0).any() or (lab >= K).any():
                raise ValueError(f"{func}: labels[{i}] must hold {len(gt)} ints in [0, {K}), "
                                 f"got {lab.tolist()}")
            props = self.propose(image) if proposals is None else proposals[i]
            props = check_boxes(props, f"proposals[{i}]", func)
            windows = np.concatenate([gt, props])
            ov = np.zeros((len(windows), K))
            match = np.zeros((len(windows), K), dtype=np.int64)
            if len(gt):
                all_ov = iou(windows, gt)                                   # (R, G)
                for c in range(K):
                    members = np.flatnonzero(lab == c)
                    if len(members):
                        best = np.argmax(all_ov[:, members], axis=1)
                        match[:, c] = members[best]
                        ov[:, c] = all_ov[np.arange(len(windows)), members[best]]
            cache.boxes.append(windows)
            cache.pooled.append(self.pool(image, windows))
            cache.overlap.append(ov)
            cache.match.append(match)
            cache.gt_labels.append(np.concatenate([lab, -np.ones(len(props), dtype=np.int64)]))
            cache.gt_boxes.append(gt)
        return cache

    def fit(self, images=None, boxes=None, labels=None, proposals=None, cache=None):
        """Train the per-class SVMs (with hard-negative mining) and box regressors.

        Pass ``images, boxes, labels`` (lists, one entry per image), or a ``cache`` from
        :meth:`prepare`. Returns ``self``.
        """
        from sklearn.svm import LinearSVC

        if cache is None:
            cache = self.prepare(images, boxes, labels, proposals)
        rng = np.random.default_rng(self.seed)
        feats = np.concatenate([self.head_features(p) for p in cache.pooled])   # (R, D)
        gt_labels = np.concatenate(cache.gt_labels)
        overlap = np.concatenate(cache.overlap)
        K, D = self.n_classes, feats.shape[1]
        self.svm_w, self.svm_b = np.zeros((D, K)), np.zeros(K)
        for c in range(K):
            pos = np.flatnonzero(gt_labels == c)
            neg_pool = np.flatnonzero((overlap[:, c] <= self.neg_iou) & (gt_labels != c))
            if len(pos) == 0 or len(neg_pool) == 0:
                self.svm_b[c] = -10.0                    # a class never seen never fires
                continue
            neg = rng.choice(neg_pool, min(self.initial_negatives, len(neg_pool)), replace=False)
            for round_ in range(self.mining_rounds + 1):
                X = np.concatenate([feats[pos], feats[neg]])
                y = np.concatenate([np.ones(len(pos)), -np.ones(len(neg))])
                svm = LinearSVC(C=self.svm_C, class_weight="balanced", max_iter=5000)
                svm.fit(X, y)
                w, b = svm.coef_[0], svm.intercept_[0]
                if round_ == self.mining_rounds:
                    break
                hard = neg_pool[feats[neg_pool] @ w + b > -1.0]        # margin violators
                new = np.setdiff1d(hard, neg)
                if len(new) == 0:
                    break
                neg = np.concatenate([neg, new])
            self.svm_w[:, c], self.svm_b[c] = w, b
        self.regressors = self._fit_regressors(cache) if self.bbox_regression else None
        return self

    def _fit_regressors(self, cache):
        from sklearn.linear_model import Ridge

        regs = []
        X_all = _l2_normalise(np.concatenate(cache.pooled).astype(np.float64))
        overlap = np.concatenate(cache.overlap)
        windows = np.concatenate(cache.boxes)
        targets = np.concatenate([g[m] if len(g) else np.zeros(m.shape + (4,))     # (R, K, 4)
                                  for g, m in zip(cache.gt_boxes, cache.match)], axis=0)
        widths = (windows[:, 2] > windows[:, 0]) & (windows[:, 3] > windows[:, 1])
        for c in range(self.n_classes):
            rows = np.flatnonzero((overlap[:, c] >= 0.6) & widths)
            if len(rows) < 4:
                regs.append(None)
                continue
            t = encode(windows[rows], targets[rows, c])
            regs.append(Ridge(alpha=self.ridge_alpha).fit(X_all[rows], t))
        return regs

    # ------------------------------------------------------------------ inference
    def detect(self, image, proposals=None):
        """Detections of one image: ``(boxes (D, 4), scores (D,), labels (D,))``."""
        if self.svm_w is None:
            raise RuntimeError("SPPDetector.detect: call fit() first")
        props = self.propose(image) if proposals is None else proposals
        props = check_boxes(props, "proposals", "SPPDetector.detect")
        if len(props) == 0:
            return np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)
        pooled = self.pool(image, props)
        scores = self.head_features(pooled) @ self.svm_w + self.svm_b       # (R, K)
        rows, cls = np.nonzero(scores > self.score_threshold)
        boxes = props[rows]
        if self.regressors is not None and len(rows):
            X = _l2_normalise(pooled.astype(np.float64))
            for c in np.unique(cls):
                if self.regressors[c] is None:
                    continue
                sel = cls == c
                boxes[sel] = decode(props[rows[sel]], self.regressors[c].predict(X[rows[sel]]))
            boxes = clip_boxes(np.maximum(boxes, boxes[:, [0, 1, 0, 1]]), image.shape)
        s = scores[rows, cls]
        keep = nms_per_class(boxes, s, cls, self.nms_threshold)[: self.max_per_image]
        return boxes[keep], s[keep], cls[keep]

    def predict(self, images, proposals=None):
        """:meth:`detect` for a list of images; returns a list of ``(boxes, scores, labels)``."""
        return [self.detect(img, None if proposals is None else proposals[i])
                for i, img in enumerate(images)]


def _set_mode(net, train: bool):
    """Call ``net.train()`` / ``net.eval()`` where the network has them."""
    method = getattr(net, "train" if train else "eval", None)
    if callable(method):
        method()


def _sync(device):
    if device == "gpu":
        import cupy

        cupy.cuda.Device().synchronize()
