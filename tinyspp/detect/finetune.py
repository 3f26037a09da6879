"""Fine-tuning for detection: the paper's fc-only recipe, and Fast R-CNN's end-to-end variant.

SPP-net (Sec. 4) fine-tunes only the fully-connected layers, on pooled features computed once
and cached: region SPP is then the input layer, and training costs no convolution at all.
Fast R-CNN (Girshick 2015) later back-propagated through region pooling into the conv layers;
with ``roi_spp_backward`` at hand that is one more call per step::

    fmap, cache  = trunk.forward(image)                 (1, C, h, w)   once per step
    pooled, pc   = roi_spp_forward(fmap, rois)          (R, C*M)       sampled windows
    logits       = classifier(head(pooled))             (R, K + 1)     class 0 = background
    dpooled      = head.backward(classifier.backward(dlogits))
    dfmap        = roi_spp_backward(dpooled, pc)        (1, C, h, w)
    trunk.backward(dfmap)

The (K + 1)-way softmax layer trained on top of the fc layers is kept as ``head.classifier``, so
running ``finetune_fc`` first warm-starts ``finetune_trunk`` (a random classifier would send
large, meaningless gradients into a good trunk). Both sample mini-batches with a quarter
foreground windows and the rest background, with the paper's overlaps (SPP-net Sec. 4.1):

- foreground: IoU >= ``fg_iou = 0.5`` with an object (label ``class + 1`` of the best one);
- background: best IoU in ``[bg_low, fg_iou) = [0.1, 0.5)`` (label 0);
- windows overlapping every object by less than ``bg_low`` are not used (``bg_low=0`` uses them).
"""

from __future__ import annotations

import numpy as np

from ..backend import asnumpy, to_device
from ..validate import check_int
from .head import DetectionHead, ImageRecord, _set_mode


def window_labels(record: ImageRecord, fg_iou: float = 0.5, bg_low: float = 0.1) -> np.ndarray:
    """``(R,)`` int64 fine-tuning labels of one record's windows.

    ``class + 1`` where the best IoU with an object is ``>= fg_iou``, 0 (background) where it
    lies in ``[bg_low, fg_iou)``, -1 (not sampled) below ``bg_low``.

    Examples
    --------
    >>> rec = ImageRecord(np.zeros((4, 4)), np.zeros((4, 1)), np.array([0, -1, -1, -1]),
    ...                   np.array([[1.0, 0.0], [0.2, 0.6], [0.05, 0.0], [0.1, 0.49]]),
    ...                   np.zeros((4, 2), int), np.zeros((1, 4)))
    >>> window_labels(rec).tolist()
    [1, 2, -1, 0]
    """
    if not 0.0 <= bg_low <= fg_iou <= 1.0:
        raise ValueError(f"window_labels: need 0 <= bg_low <= fg_iou <= 1, got bg_low={bg_low}, "
                         f"fg_iou={fg_iou}")
    ov = record.overlap
    if ov.shape[1] == 0:
        return np.full(len(ov), -1 if bg_low > 0 else 0, dtype=np.int64)
    best = ov.max(axis=1)
    out = np.where(best >= fg_iou, np.argmax(ov, axis=1) + 1, 0)
    return np.where(best < bg_low, -1, out).astype(np.int64)


def _sample(labels, batch: int, fg_fraction: float, rng) -> np.ndarray:
    """Row indices of one mini-batch: up to ``fg_fraction`` foreground, the rest background."""
    fg, bg = np.flatnonzero(labels > 0), np.flatnonzero(labels == 0)
    n_fg = min(len(fg), int(round(batch * fg_fraction)))
    n_bg = min(len(bg), batch - n_fg)
    return np.concatenate([rng.choice(fg, n_fg, replace=False),
                           rng.choice(bg, n_bg, replace=False)]).astype(np.int64)


def _classifier(head: DetectionHead, pooled_dim: int, rng):
    """The fc layers followed by the (K + 1)-way classifier, one Sequential sharing their layers.

    The classifier is ``head.classifier`` when an earlier fine-tuning left one there (a warm
    start), else a new ``Linear(D, K + 1)``, which is stored on the head.
    """
    from ..nn import Linear, Sequential

    if head.classifier is None:
        _set_mode(head.fc, train=False)
        probe = to_device(np.zeros((1, pooled_dim), dtype=np.float32), head.device)
        D = head.fc.forward(probe).shape[1]
        head.classifier = Linear(D, head.n_classes + 1, rng=rng)
    net = Sequential(*list(head.fc), head.classifier)
    if head.device == "gpu":
        net.to("gpu")
    return net


def _check(head, func):
    if not isinstance(head, DetectionHead):
        raise TypeError(f"{func}: head must be a DetectionHead, got {type(head).__name__}")
    if head.fc is None:
        raise ValueError(f"{func}: the head has no fc layers to fine-tune (DetectionHead(fc=...))")


def finetune_fc(head: DetectionHead, records, *, iterations: int = 300, batch: int = 128,
                fg_fraction: float = 0.25, fg_iou: float = 0.5, bg_low: float = 0.1,
                lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
                seed=0) -> list:
    """Fine-tune ``head.fc`` on cached pool5 features (the paper's recipe).

    Parameters
    ----------
    head : DetectionHead with ``fc`` layers
    records : iterable of ImageRecord
        Read once; the rows that can be sampled (labels >= 0) are kept in memory.
    iterations, batch, fg_fraction : mini-batch SGD schedule
    fg_iou, bg_low : the foreground / background overlaps (:func:`window_labels`)
    lr, momentum, weight_decay : SGD hyper-parameters
    seed : int or np.random.Generator

    Returns
    -------
    list of float
        The training loss of every iteration.
    """
    from ..nn import SGD
    from ..ops import softmax_cross_entropy

    func = "finetune_fc"
    _check(head, func)
    check_int(iterations, "iterations", func)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for rec in records:
        lab = window_labels(rec, fg_iou, bg_low)
        xs.append(rec.features[lab >= 0])
        ys.append(lab[lab >= 0])
    if not xs or sum(len(y) for y in ys) == 0:
        raise ValueError(f"{func}: no window can be sampled: none has IoU >= {fg_iou} "
                         f"(foreground) or in [{bg_low}, {fg_iou}) (background) with an object")
    X, y = np.concatenate(xs), np.concatenate(ys)                    # (R, C*M), (R,)
    net = _classifier(head, X.shape[1], rng)
    opt = SGD(net, lr=lr, momentum=momentum, weight_decay=weight_decay)
    net.train()
    losses = []
    for _ in range(iterations):
        idx = _sample(y, batch, fg_fraction, rng)
        xb = to_device(np.ascontiguousarray(X[idx]), head.device)
        yb = to_device(y[idx], head.device)
        loss, dlogits = softmax_cross_entropy(net.forward(xb), yb)
        net.backward(dlogits, input_grad=False)
        opt.step()
        losses.append(float(loss))
    net.eval()
    return losses


def finetune_trunk(extractor, head: DetectionHead, images, records, *, iterations: int = 200,
                   rois_per_image: int = 64, fg_fraction: float = 0.25, fg_iou: float = 0.5,
                   bg_low: float = 0.1, lr: float = 0.005, momentum: float = 0.9,
                   weight_decay: float = 5e-4, seed=0) -> list:
    """Fine-tune trunk AND fc end to end through region SPP (Fast R-CNN style).

    One image per step, at a random scale of ``extractor.scales``; ``rois_per_image`` of its
    windows (``records[i].boxes``) pooled with ``roi_spp_forward`` and back-propagated with
    ``roi_spp_backward``. Images with no window to sample are skipped. The records' pooled
    features are stale afterwards: compute them again.

    Parameters
    ----------
    extractor : SPPFeatures
    head : DetectionHead with ``fc`` layers
    images : sequence of images, one per record
    records : sequence of ImageRecord (``len`` and indexing)

    Returns
    -------
    list of float
        The training loss of every iteration.
    """
    from ..nn import SGD
    from ..ops import softmax_cross_entropy
    from ..ops.roi import roi_spp_backward, roi_spp_forward

    func = "finetune_trunk"
    _check(head, func)
    if len(images) != len(records):
        raise ValueError(f"{func}: images ({len(images)}) and records ({len(records)}) differ "
                         "in length")
    check_int(iterations, "iterations", func)
    rng = np.random.default_rng(seed)
    labels = [window_labels(rec, fg_iou, bg_low) for rec in records]
    usable = [i for i, lab in enumerate(labels) if (lab >= 0).any()]
    if not usable:
        raise ValueError(f"{func}: no image has a window to sample (IoU >= {fg_iou} or in "
                         f"[{bg_low}, {fg_iou}) with an object)")
    trunk = extractor.trunk
    net = _classifier(head, records[usable[0]].features.shape[1], rng)
    opt_head = SGD(net, lr=lr, momentum=momentum, weight_decay=weight_decay)
    opt_trunk = SGD(trunk, lr=lr, momentum=momentum, weight_decay=weight_decay)
    net.train()
    _set_mode(trunk, train=True)
    losses = []
    for _ in range(iterations):
        i = usable[int(rng.integers(len(usable)))]
        idx = _sample(labels[i], rois_per_image, fg_fraction, rng)
        side = extractor.scales[int(rng.integers(len(extractor.scales)))]
        x, factor = extractor.to_input(images[i], side)
        fmap = trunk.forward(x)                                          # (1, C, h, w)
        rois = extractor.feature_rois(records[i].boxes[idx], factor, fmap.shape[2:])  # host
        pooled, pcache = roi_spp_forward(fmap, rois, levels=extractor.levels,
                                         mode=extractor.mode)
        yb = to_device(labels[i][idx], head.device)
        loss, dlogits = softmax_cross_entropy(net.forward(pooled), yb)
        dpooled = net.backward(dlogits)                                  # (R, C*M)
        trunk.backward(roi_spp_backward(dpooled, pcache), input_grad=False)
        opt_head.step()
        opt_trunk.step()
        losses.append(float(asnumpy(loss)))
    net.eval()
    _set_mode(trunk, train=False)
    return losses
