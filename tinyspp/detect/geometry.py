"""Box geometry for detection: window-to-feature mapping, IoU, NMS, box regression targets.

Boxes are ``(K, 4)`` arrays ``[x0, y0, x1, y1]`` in continuous image coordinates: pixel column
``i`` covers ``[i, i + 1)``, so a box around pixels ``2..5`` is ``[2, y0, 6, y1]`` and its area
is ``(x1 - x0) * (y1 - y0)``. ``x0`` is the 0-based index of the first pixel and ``x1`` the index
of the last pixel plus one (which is also the VOC devkit's 1-based inclusive ``xmax``). Feature
boxes (what region SPP pools) are integer and *inclusive* cells ``[x0', y0', x1', y1']``.

Mapping an image window onto a feature map (SPP-net, Appendix A). With ``S`` the product of all
strides before the pooled layer and padding ``floor(p/2)`` for every layer of size ``p``, the paper
puts the centre of cell ``x'`` at image coordinate ``S * x'`` and maps a window with::

    left/top:      x0' = floor(x0 / S) + 1
    right/bottom:  x1' = ceil(x1 / S) - 1

Which coordinates the formulas take: both are applied to the window's *edges* ``x0`` and ``x1``
as defined above (the right formula to the right edge of the last pixel, not to the last pixel's
index). Read that way the paper's pixel formula is one rule on both sides: ``floor(x0/S) + 1`` is
the first cell whose centre ``S x'`` lies strictly right of the left edge and ``ceil(x1/S) - 1``
the last cell whose centre lies strictly left of the right edge -- the cells whose centres lie
strictly inside ``(x0, x1)``. A cell centred exactly on an edge (an edge that is a multiple of
``S``) is dropped on both sides: ``[2S, 5S)`` maps to cells ``3 .. 4``. (Applying the right
formula to the last pixel's index ``x1 - 1`` instead would drop the cell centred on the last
pixel as well and make the two sides disagree by one pixel.)

The paper's rule assumes ``floor(p/2)`` padding everywhere ("if the padding is not floor(p/2),
we need to add a proper offset"), which centres cell ``x'`` on pixel ``S x'``.
:func:`mapping_offset` gives that offset for a real network: how far its receptive-field
centres (from the real kernel sizes, strides and paddings, :func:`receptive_field`) lie from the
centre of pixel ``S x'`` (a 2x2 pool without padding moves them right by half its input stride).
The paper rule with ``offset`` applies the formulas to ``x - offset``: it keeps the cells whose
real centre, read as the index of the pixel it falls on (as the paper's pixel formula does),
lies strictly inside the window -- the ``"center"`` rule up to that half pixel and to windows
whose edge passes exactly through a centre. With the offset of a network padded as the paper
assumes (0) it is the plain paper rule.

``method="center"`` instead keeps the cells whose receptive-field centre ``c0 + S * x'`` (from the
network's real kernel sizes, strides and paddings, see :func:`receptive_field`) lies inside the
closed window: ``x0' = ceil((x0 - c0) / S)``, ``x1' = floor((x1 - c0) / S)``.

Either rule can map a small window to nothing (``x0' > x1'``). Such a window *collapses* to the
single cell nearest its centre (``round((cx - c) / S)`` with ``c`` the offset or ``c0``). Every
result is then clamped into the map, so a mapped box is never empty or inverted.

Examples
--------
>>> import numpy as np
>>> image_to_feature_boxes(np.array([[0, 0, 100, 64]]), 16, (8, 10))
array([[1, 1, 6, 3]])
>>> iou(np.array([[0, 0, 2, 2]]), np.array([[1, 0, 3, 2]]))
array([[0.33333333]])
"""

from __future__ import annotations

import numpy as np

from ..validate import check_choice

MAPPING_METHODS = ("paper", "center")


def check_boxes(boxes, name: str = "boxes", func: str = "check_boxes") -> np.ndarray:
    """Validate a ``(K, 4)`` array of ``[x0, y0, x1, y1]`` boxes; return it as float64.

    Raises ``ValueError`` naming the first bad row when a coordinate is not finite or a box is
    inverted (``x1 < x0`` or ``y1 < y0``). ``K = 0`` is allowed.
    """
    arr = np.asarray(boxes)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{func}: {name} must be a numeric (K, 4) array, got dtype {arr.dtype}")
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(
            f"{func}: {name} must have shape (K, 4) [x0, y0, x1, y1], got shape {arr.shape}"
        )
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{func}: {name} row {r} has a non-finite coordinate: {arr[r].tolist()}")
    bad = (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{func}: {name} row {r} is inverted (need x1 >= x0 and y1 >= y0), "
            f"got {arr[r].tolist()}"
        )
    return arr


def _layer_geometry(layer):
    """``(kernel, stride, pad)`` of a layer along one axis, or None for a shape-preserving layer."""
    if not hasattr(layer, "stride"):
        return None
    values = []
    for attr in ("ksize", "stride", "pad"):
        v = getattr(layer, attr, 0)
        if isinstance(v, (tuple, list)):
            if len(set(v)) != 1:
                raise ValueError(
                    f"receptive_field: layer {type(layer).__name__} has a non-square {attr} {v}; "
                    "one stride per axis pair is assumed"
                )
            v = v[0]
        values.append(int(v))
    return tuple(values)


def receptive_field(network):
    """Stride, centre of cell 0 and size of the receptive field of a network's output cells.

    Walks the layers in order; a layer with ``.stride`` (and ``.ksize``, ``.pad``) changes the
    geometry, every other layer (ReLU, normalisation) keeps it. Pixel ``i`` is centred at
    ``i + 0.5`` in the box coordinates of this module.

    Parameters
    ----------
    network : iterable of layers (e.g. a ``Sequential`` or a slice of one)

    Returns
    -------
    stride : int
        Product of strides ``S``: neighbouring output cells are ``S`` pixels apart.
    centre : float
        Image coordinate of the centre of output cell 0; cell ``x'`` is centred at
        ``centre + S * x'``.
    size : int
        Side of the receptive field in pixels (ignoring padding at the borders).

    Examples
    --------
    >>> class Conv:  # stand-ins with the attributes tinyspp layers carry
    ...     def __init__(self, ksize, stride, pad):
    ...         self.ksize, self.stride, self.pad = ksize, stride, pad
    >>> receptive_field([Conv(3, 1, 1), Conv(2, 2, 0), Conv(3, 1, 1), Conv(2, 2, 0)])
    (4, 2.0, 10)
    """
    stride, centre, size = 1, 0.5, 1
    for layer in network:
        geom = _layer_geometry(layer)
        if geom is None:
            continue
        k, s, p = geom
        centre += ((k - 1) / 2 - p) * stride
        size += (k - 1) * stride
        stride *= s
    return stride, float(centre), size


def mapping_offset(network) -> float:
    """The "proper offset" of the paper's mapping rule for a network (SPP-net Appendix A).

    The paper's formulas assume that cell ``x'`` is centred on pixel ``S x'``, which holds when
    every layer of (odd) size ``p`` is padded ``floor(p/2)``; in the box coordinates of this
    module that pixel's centre is ``S x' + 0.5``. The offset is how far the network's real
    receptive-field centres (:func:`receptive_field`) lie from there::

        offset = centre_of_cell_0 - 0.5

    Pass it as ``offset`` to :func:`image_to_feature_boxes` (``method="paper"``); 0 for a network
    padded as the paper assumes.

    Examples
    --------
    >>> class Conv:
    ...     def __init__(self, ksize, stride, pad):
    ...         self.ksize, self.stride, self.pad = ksize, stride, pad
    >>> mapping_offset([Conv(3, 1, 1), Conv(3, 2, 1)])       # floor(p/2) padding: no offset
    0.0
    >>> mapping_offset([Conv(3, 1, 1), Conv(2, 2, 0), Conv(3, 1, 1), Conv(2, 2, 0)])
    1.5
    """
    return receptive_field(network)[1] - 0.5


def image_to_feature_boxes(boxes, stride, feature_shape, method: str = "paper",
                           centre: float = 0.0, offset: float = 0.0) -> np.ndarray:
    """Map image windows to inclusive feature-map cells (SPP-net Appendix A).

    Parameters
    ----------
    boxes : array of shape (K, 4)
        Image windows ``[x0, y0, x1, y1]`` in pixels.
    stride : int
        ``S``, the product of the strides up to the pooled feature map.
    feature_shape : (H, W)
        Size of the feature map; results are clamped into ``[0, W-1] x [0, H-1]``.
    method : {"paper", "center"}
        ``"paper"``: ``floor((x0 - offset)/S) + 1`` .. ``ceil((x1 - offset)/S) - 1``, applied to
        the window's edges (see the module docstring). ``"center"``: the cells whose
        receptive-field centre ``centre + S*x'`` lies inside the closed window.
    centre : float
        Centre of cell 0 for ``method="center"`` (from :func:`receptive_field`); ignored by
        ``"paper"``.
    offset : float
        The paper rule's "proper offset" (:func:`mapping_offset`; 0 = the plain rule, for a
        network padded ``floor(p/2)`` everywhere); ignored by ``"center"``.

    Returns
    -------
    ndarray of shape (K, 4), int64
        ``[x0', y0', x1', y1']`` inclusive, ``0 <= x0' <= x1' < W``, ``0 <= y0' <= y1' < H``.
        A window that maps to no cell collapses to the cell nearest its centre.
    """
    func = "image_to_feature_boxes"
    b = check_boxes(boxes, "boxes", func)
    check_choice(method, "method", func, MAPPING_METHODS)
    if not np.isscalar(stride) or stride <= 0:
        raise ValueError(f"{func}: stride must be a positive number, got {stride!r}")
    if len(feature_shape) != 2 or min(feature_shape) < 1:
        raise ValueError(
            f"{func}: feature_shape must be (H, W) with H, W >= 1, got {feature_shape}"
        )
    H, W = (int(v) for v in feature_shape)
    for v, name in ((centre, "centre"), (offset, "offset")):
        if not (np.isscalar(v) and np.isfinite(v)):
            raise ValueError(f"{func}: {name} must be a finite number, got {v!r}")
    c0 = float(offset) if method == "paper" else float(centre)
    lo_xy, hi_xy = b[:, :2] - c0, b[:, 2:] - c0             # (K, 2) each, x then y
    if method == "paper":
        lo = np.floor(lo_xy / stride) + 1
        hi = np.ceil(hi_xy / stride) - 1
    else:
        lo = np.ceil(lo_xy / stride)
        hi = np.floor(hi_xy / stride)
    mid = np.floor((lo_xy + hi_xy) / (2 * stride) + 0.5)    # nearest cell to the window centre
    empty = lo > hi                                          # per axis
    lo = np.where(empty, mid, lo)
    hi = np.where(empty, mid, hi)
    upper = np.array([W - 1, H - 1], dtype=np.float64)
    lo = np.clip(lo, 0, upper)
    hi = np.clip(hi, 0, upper)
    return np.concatenate([lo, hi], axis=1).astype(np.int64)


def box_area(boxes) -> np.ndarray:
    """Areas ``(x1 - x0) * (y1 - y0)`` of a ``(K, 4)`` box array, shape ``(K,)``."""
    b = check_boxes(boxes, "boxes", "box_area")
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def iou(a, b) -> np.ndarray:
    """Pairwise intersection over union.

    Parameters
    ----------
    a : array of shape (K, 4)
    b : array of shape (L, 4)

    Returns
    -------
    ndarray of shape (K, L)
        ``|a_k ∩ b_l| / |a_k ∪ b_l|``; 0 where the union has zero area.
    """
    a = check_boxes(a, "a", "iou")
    b = check_boxes(b, "b", "iou")
    ix = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    iy = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)     # (K, L)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def nms(boxes, scores, threshold: float = 0.3) -> np.ndarray:
    """Greedy non-maximum suppression.

    Repeatedly keeps the highest-scoring remaining box and drops every remaining box whose IoU
    with it is above ``threshold``. Equal scores are visited in index order.

    Parameters
    ----------
    boxes : array of shape (K, 4)
    scores : array of shape (K,)
    threshold : float in [0, 1]

    Returns
    -------
    ndarray of int64
        Indices of the kept boxes, highest score first.

    Examples
    --------
    >>> boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]])
    >>> nms(boxes, np.array([0.9, 0.8, 0.7]), threshold=0.5)
    array([0, 2])
    """
    b = check_boxes(boxes, "boxes", "nms")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.shape[0] != b.shape[0]:
        raise ValueError(f"nms: scores must have one entry per box ({b.shape[0]}), got {s.shape}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"nms: threshold must be in [0, 1], got {threshold}")
    order = np.argsort(-s, kind="stable")
    overlaps = iou(b, b)
    alive = np.ones(len(b), dtype=bool)
    keep = []
    for i in order:
        if not alive[i]:
            continue
        keep.append(i)
        alive &= overlaps[i] <= threshold
    return np.array(keep, dtype=np.int64)


def nms_per_class(boxes, scores, labels, threshold: float = 0.3) -> np.ndarray:
    """:func:`nms` run separately for each label; returns kept indices sorted by score (desc)."""
    b = check_boxes(boxes, "boxes", "nms_per_class")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    lab = np.asarray(labels).reshape(-1)
    if not (len(s) == len(lab) == len(b)):
        raise ValueError(
            f"nms_per_class: boxes, scores and labels need the same length, "
            f"got {len(b)}, {len(s)}, {len(lab)}"
        )
    keep = [np.flatnonzero(lab == c)[nms(b[lab == c], s[lab == c], threshold)]
            for c in np.unique(lab)]
    keep = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
    return keep[np.argsort(-s[keep], kind="stable")]


def _centres_sizes(boxes, name: str, func: str):
    b = check_boxes(boxes, name, func)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    bad = (w <= 0) | (h <= 0)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{func}: {name} row {r} has zero width or height: {b[r].tolist()}")
    return b[:, 0] + 0.5 * w, b[:, 1] + 0.5 * h, w, h


def encode(proposals, targets) -> np.ndarray:
    """R-CNN box-regression targets of ``targets`` relative to ``proposals``.

    ``dx = (gx - px) / pw``, ``dy = (gy - py) / ph``, ``dw = log(gw / pw)``, ``dh = log(gh / ph)``
    with ``(px, py)`` the centre and ``(pw, ph)`` the size of a proposal.

    Parameters
    ----------
    proposals, targets : arrays of shape (K, 4), boxes of positive width and height

    Returns
    -------
    ndarray of shape (K, 4)
        ``[dx, dy, dw, dh]``.
    """
    px, py, pw, ph = _centres_sizes(proposals, "proposals", "encode")
    gx, gy, gw, gh = _centres_sizes(targets, "targets", "encode")
    if len(px) != len(gx):
        raise ValueError(f"encode: proposals and targets differ in length, {len(px)} vs {len(gx)}")
    return np.stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], axis=1)


# Fast R-CNN's clamp of the log-size deltas before exp: a box grows at most 1000/16 = 62.5x
MAX_LOG_SCALE = float(np.log(1000.0 / 16.0))


def decode(proposals, deltas, max_log_scale: float = MAX_LOG_SCALE) -> np.ndarray:
    """Inverse of :func:`encode`: apply ``deltas (K, 4)`` to ``proposals (K, 4)``; returns boxes.

    ``dw`` and ``dh`` are clamped to at most ``max_log_scale`` before ``exp`` (Fast R-CNN's
    ``log(1000/16)``), so a wild regression output gives a large but finite box instead of an
    overflow; below the clamp ``decode`` inverts :func:`encode` exactly. Non-finite deltas are a
    ``ValueError``.

    Examples
    --------
    >>> box = decode(np.array([[0, 0, 10, 10]]), np.array([[0.0, 0.0, 1e6, 0.0]]))
    >>> [round(float(v), 6) for v in box[0]]             # width 10 * 62.5, not inf
    [-307.5, 0.0, 317.5, 10.0]
    """
    px, py, pw, ph = _centres_sizes(proposals, "proposals", "decode")
    d = np.asarray(deltas, dtype=np.float64)
    if d.shape != (len(px), 4):
        raise ValueError(f"decode: deltas must have shape ({len(px)}, 4), got {d.shape}")
    if not np.isfinite(d).all():
        r = int(np.flatnonzero(~np.isfinite(d).all(axis=1))[0])
        raise ValueError(f"decode: deltas row {r} is not finite: {d[r].tolist()}")
    cx, cy = px + d[:, 0] * pw, py + d[:, 1] * ph
    w = pw * np.exp(np.minimum(d[:, 2], max_log_scale))
    h = ph * np.exp(np.minimum(d[:, 3], max_log_scale))
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1)


def clip_boxes(boxes, image_shape) -> np.ndarray:
    """Clip ``(K, 4)`` boxes into an image of shape ``(H, W)``."""
    b = check_boxes(boxes, "boxes", "clip_boxes")
    H, W = image_shape[:2]
    return np.clip(b, 0, [W, H, W, H])
