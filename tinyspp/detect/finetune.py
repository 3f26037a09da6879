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

The (K + 1)-way softmax layer trained on top of the head is kept as ``detector.classifier``, so
running ``finetune_fc`` first warm-starts ``finetune_trunk`` (a random classifier would send
large, meaningless gradients into a good trunk). Both sample mini-batches with a quarter
foreground windows (IoU >= 0.5 with an object: label ``class + 1``) and the rest background
(IoU < 0.5 with every object: label 0), the R-CNN recipe.
"""

from __future__ import annotations

import numpy as np

from ..backend import asnumpy, to_device
from ..validate import check_int
from .detector import SPPDetector, TrainingCache, _set_mode


def window_labels(cache: TrainingCache, fg_iou: float = 0.5) -> list:
    """Per image, ``(R_i,)`` int64 labels: ``class + 1`` where IoU >= ``fg_iou``, else 0."""
    out = []
    for ov in cache.overlap:
        lab = np.argmax(ov, axis=1) + 1 if ov.shape[1] else np.zeros(len(ov), dtype=np.int64)
        out.append(np.where(ov.max(axis=1, initial=0) >= fg_iou, lab, 0).astype(np.int64))
    return out


def _sample(labels, batch: int, fg_fraction: float, rng) -> np.ndarray:
    fg, bg = np.flatnonzero(labels > 0), np.flatnonzero(labels == 0)
    n_fg = min(len(fg), int(round(batch * fg_fraction)))
    n_bg = min(len(bg), batch - n_fg)
    return np.concatenate([rng.choice(fg, n_fg, replace=False),
                           rng.choice(bg, n_bg, replace=False)])


def _classifier(detector: SPPDetector, pooled_dim: int, rng):
    """The head followed by the (K + 1)-way classifier, as one Sequential sharing their layers.

    The classifier is ``detector.classifier`` when an earlier fine-tuning left one there (a warm
    start), else a new ``Linear(D, K + 1)``, which is stored on the detector.
    """
    from ..nn import Linear, Sequential

    if detector.classifier is None:
        _set_mode(detector.head, train=False)
        probe = to_device(np.zeros((1, pooled_dim), dtype=np.float32), detector.device)
        D = detector.head.forward(probe).shape[1]
        detector.classifier = Linear(D, detector.n_classes + 1, rng=rng)
    net = Sequential(*list(detector.head), detector.classifier)
    if detector.device == "gpu":
        net.to("gpu")
    return net


def finetune_fc(detector: SPPDetector, cache: TrainingCache, *, iterations: int = 300,
                batch: int = 128, fg_fraction: float = 0.25, lr: float = 0.01,
                momentum: float = 0.9, weight_decay: float = 5e-4, seed=0) -> list:
    """Fine-tune ``detector.head`` on cached pooled features (the paper's recipe).

    Parameters
    ----------
    detector : SPPDetector with a ``head``
    cache : TrainingCache from ``detector.prepare``
    iterations, batch, fg_fraction : mini-batch SGD schedule
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
    if detector.head is None:
        raise ValueError(f"{func}: the detector has no head (fc layers) to fine-tune")
    check_int(iterations, "iterations", func)
    rng = np.random.default_rng(seed)
    X = np.concatenate(cache.pooled)                                   # (R, C*M)
    y = np.concatenate(window_labels(cache))                           # (R,)
    net = _classifier(detector, X.shape[1], rng)
    opt = SGD(net, lr=lr, momentum=momentum, weight_decay=weight_decay)
    net.train()
    losses = []
    for _ in range(iterations):
        idx = _sample(y, batch, fg_fraction, rng)
        xb = to_device(np.ascontiguousarray(X[idx]), detector.device)
        yb = to_device(y[idx], detector.device)
        loss, dlogits = softmax_cross_entropy(net.forward(xb), yb)
        net.backward(dlogits)
        opt.step()
        losses.append(loss)
    net.eval()
    return losses


def finetune_trunk(detector: SPPDetector, images, cache: TrainingCache, *, iterations: int = 200,
                   rois_per_image: int = 64, fg_fraction: float = 0.25, lr: float = 0.005,
                   momentum: float = 0.9, weight_decay: float = 5e-4, seed=0) -> list:
    """Fine-tune trunk AND head end to end through region SPP (Fast R-CNN style).

    One image per step at a random scale of ``detector.scales``; ``rois_per_image`` windows of
    ``cache`` pooled with ``roi_spp_forward`` and back-propagated with ``roi_spp_backward``.
    The cached pooled features are stale afterwards: call ``detector.prepare`` again.

    Returns
    -------
    list of float
        The training loss of every iteration.
    """
    from ..nn import SGD
    from ..ops import softmax_cross_entropy
    from ..ops.roi import roi_spp_backward, roi_spp_forward

    func = "finetune_trunk"
    if detector.head is None:
        raise ValueError(f"{func}: the detector has no head (fc layers) to fine-tune")
    if len(images) != len(cache.boxes):
        raise ValueError(f"{func}: images ({len(images)}) and cache ({len(cache.boxes)} images) "
                         "differ in length")
    check_int(iterations, "iterations", func)
    rng = np.random.default_rng(seed)
    labels = window_labels(cache)
    net = _classifier(detector, cache.pooled[0].shape[1], rng)
    opt_head = SGD(net, lr=lr, momentum=momentum, weight_decay=weight_decay)
    opt_trunk = SGD(detector.trunk, lr=lr, momentum=momentum, weight_decay=weight_decay)
    net.train()
    _set_mode(detector.trunk, train=True)
    losses = []
    for _ in range(iterations):
        i = int(rng.integers(len(images)))
        idx = _sample(labels[i], rois_per_image, fg_fraction, rng)
        side = detector.scales[int(rng.integers(len(detector.scales)))]
        x, factor = detector.to_input(images[i], side)
        fmap = detector.trunk.forward(x)                               # (1, C, h, w)
        rois = detector.feature_rois(cache.boxes[i][idx], factor, fmap.shape[2:])
        pooled, pcache = roi_spp_forward(fmap, to_device(rois, detector.device),
                                         levels=detector.levels, mode=detector.mode)
        yb = to_device(labels[i][idx], detector.device)
        loss, dlogits = softmax_cross_entropy(net.forward(pooled), yb)
        dpooled = net.backward(dlogits)                                # (R, C*M)
        detector.trunk.backward(roi_spp_backward(dpooled, pcache), input_grad=False)
        opt_head.step()
        opt_trunk.step()
        losses.append(float(asnumpy(loss)))
    net.eval()
    _set_mode(detector.trunk, train=False)
    return losses
