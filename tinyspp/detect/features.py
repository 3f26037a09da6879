"""SPP-net feature extraction for detection (He et al. 2014, Sec. 4): conv once, pool per window.

An *extractor* turns one image and its windows into one feature vector per window::

    extractor.pool(image (H, W, 3), boxes (R, 4)) -> (R, C * M) float32 NumPy       "pool5"

:class:`SPPFeatures` (this module) runs the conv trunk ONCE per image and scale and pools every
window's cells from that map with region SPP; :class:`tinyspp.detect.rcnn.RCNNFeatures` warps
each window and runs the trunk per window. Both hand the same kind of vector to the one shared
classifier, :class:`tinyspp.detect.head.DetectionHead`; :class:`tinyspp.detect.detector.Detector`
composes an extractor, a head and the proposals.

Per image, :class:`SPPFeatures` does::

    image -> shorter side resized to s, normalised      (1, 3, h, w)    once per scale s
          -> trunk                                       (1, C, h', w')  once per scale
    each window -> the single scale whose scaled area is closest to input_size ** 2 (Sec. 4)
                -> mapped to inclusive cells             (R, 5) int64 RoIs, on the host
                -> region SPP of its cells               (R, C * M)

The RoIs are computed and validated on the host and go to the device once, inside
:func:`tinyspp.ops.roi.roi_spp_forward`; the image goes to the device once per scale.
"""

from __future__ import annotations

import time

import numpy as np

from ..backend import asnumpy, check_device, synchronize, to_device
from ..validate import check_choice, check_int, check_levels
from .data import as_image
from .geometry import (
    check_boxes,
    image_to_feature_boxes,
    mapping_offset,
    receptive_field,
)

#: Window-to-feature mappings of :class:`SPPFeatures` (see :mod:`tinyspp.detect.geometry`):
#: the paper's formula as printed, the paper's formula with the offset of the real trunk's
#: padding (:func:`~tinyspp.detect.geometry.mapping_offset`), and receptive-field centres.
MAPPINGS = ("paper", "paper_offset", "center")


def normaliser(mean, std, func: str):
    """``(1, 3, 1, 1)`` float32 mean and std arrays, validated (std > 0)."""
    m = np.asarray(mean, dtype=np.float32).reshape(-1)
    s = np.asarray(std, dtype=np.float32).reshape(-1)
    if m.shape != (3,) or s.shape != (3,) or not (s > 0).all() or not np.isfinite(m).all():
        raise ValueError(f"{func}: mean and std must be 3 finite numbers (std > 0), "
                         f"got {m.tolist()} and {s.tolist()}")
    return m.reshape(1, 3, 1, 1), s.reshape(1, 3, 1, 1)


class SPPFeatures:
    """Region-SPP features of image windows: the trunk once per image and scale.

    Parameters
    ----------
    trunk : layers with ``forward(x (N, 3, H, W)) -> (N, C, h, w)``
        The convolutional part of a classification network (e.g. from
        :func:`tinyspp.nn.models.split_trunk_head`). Iterating over it gives its layers, so that
        :func:`~tinyspp.detect.geometry.receptive_field` finds the stride ``S``.
    levels : sequence of int
        Region SPP pyramid (default the paper's ``(6, 3, 2, 1)``).
    mode : {"adaptive", "paper", "caffe"}
        Bin rule of region SPP (:mod:`tinyspp.bins`).
    scales : sequence of int
        Shorter image side at each scale; one value = single-scale detection.
    input_size : int
        Side the trunk was trained on; each window is pooled at the scale where its area is
        closest to ``input_size ** 2``.
    mapping : {"paper", "paper_offset", "center"}
        Window-to-cells rule (:data:`MAPPINGS`).
    mean, std : 3 floats
        Per-channel normalisation the trunk was trained with (images in [0, 1]).
    device : {"cpu", "gpu"}
        Where the trunk runs (its parameters must already be there).

    Examples
    --------
    >>> from tinyspp.nn import small_spp_net
    >>> from tinyspp.nn.models import split_trunk_head
    >>> trunk, _ = split_trunk_head(small_spp_net(3, widths=(4, 4, 8), hidden=8, seed=0))
    >>> ext = SPPFeatures(trunk, levels=(2, 1), scales=(32,), input_size=24)
    >>> ext.pool(np.zeros((40, 48, 3)), np.array([[0, 0, 20, 20], [8, 4, 40, 36]])).shape
    (2, 40)
    """

    def __init__(self, trunk, *, levels=(6, 3, 2, 1), mode: str = "adaptive", scales=(128,),
                 input_size: int = 64, mapping: str = "paper", mean=(0.5, 0.5, 0.5),
                 std=(0.25, 0.25, 0.25), device: str = "cpu"):
        func = "SPPFeatures"
        self.trunk = trunk
        self.levels = check_levels(levels, func)
        self.mode = mode
        self.scales = tuple(check_int(s, "scales", func, minimum=8) for s in np.atleast_1d(scales))
        if not self.scales:
            raise ValueError(f"{func}: scales must not be empty")
        self.input_size = check_int(input_size, "input_size", func)
        self.mapping = check_choice(mapping, "mapping", func, MAPPINGS)
        self.mean, self.std = normaliser(mean, std, func)
        self.device = check_device(device, func)
        self.stride, self.centre, _ = receptive_field(trunk)
        self.offset = mapping_offset(trunk) if mapping == "paper_offset" else 0.0
        self.timings = {"trunk": [], "pool": []}     # seconds per pool() call

    def to_input(self, image, side: int):
        """The image resized so its shorter side is ``side``, normalised, on the device.

        Returns ``x (1, 3, h, w)`` float32 and the factors ``(fx, fy) = (w / W, h / H)``.
        """
        from skimage.transform import resize

        image = as_image(image, "image", "SPPFeatures.to_input")
        H, W = image.shape[:2]
        f = side / min(H, W)
        h, w = max(1, round(H * f)), max(1, round(W * f))
        img = resize(image, (h, w), order=1, anti_aliasing=f < 1, preserve_range=True)
        x = (img.transpose(2, 0, 1)[None].astype(np.float32) - self.mean) / self.std
        return to_device(np.ascontiguousarray(x), self.device), (w / W, h / H)

    def choose_scales(self, boxes, factors) -> np.ndarray:
        """Index ``(R,)`` of the scale whose scaled window area is closest to ``input_size ** 2``.

        ``boxes (R, 4)`` in image pixels, ``factors`` a list of ``(fx, fy)`` per scale.
        """
        b = check_boxes(boxes, "boxes", "SPPFeatures.choose_scales")
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])                      # (R,)
        scaled = area[:, None] * np.array([fx * fy for fx, fy in factors])   # (R, scales)
        return np.argmin(np.abs(scaled - self.input_size ** 2), axis=1)

    def feature_rois(self, boxes, factor, feature_shape) -> np.ndarray:
        """Host ``(R, 5)`` int64 RoIs ``[0, x0', y0', x1', y1']`` of windows on one scale's map."""
        fx, fy = factor
        scaled = check_boxes(boxes, "boxes", "SPPFeatures.feature_rois") * [fx, fy, fx, fy]
        method = "center" if self.mapping == "center" else "paper"
        cells = image_to_feature_boxes(scaled, self.stride, feature_shape, method=method,
                                       centre=self.centre, offset=self.offset)
        return np.concatenate([np.zeros((len(cells), 1), dtype=np.int64), cells], axis=1)

    def pool(self, image, boxes) -> np.ndarray:
        """Region SPP features ``(R, C*M)`` float32 (NumPy) of windows ``boxes (R, 4)``.

        Runs the trunk once per scale that some window picks. ``R = 0`` gives ``(0, 0)``.
        Appends the seconds spent (resize + trunk, pooling) to :attr:`timings`.
        """
        from ..ops.roi import roi_spp_forward

        func = "SPPFeatures.pool"
        image = as_image(image, "image", func)
        boxes = check_boxes(boxes, "boxes", func)
        if len(boxes) == 0:
            return np.zeros((0, 0), dtype=np.float32)
        t0 = time.perf_counter()
        inputs = [self.to_input(image, s) for s in self.scales]
        pick = self.choose_scales(boxes, [f for _, f in inputs])
        maps = {int(k): self.trunk.forward(inputs[int(k)][0]) for k in np.unique(pick)}
        synchronize(self.device)
        t1 = time.perf_counter()
        out = None
        for k, fmap in maps.items():
            rows = np.flatnonzero(pick == k)
            rois = self.feature_rois(boxes[rows], inputs[k][1], fmap.shape[2:])   # host
            pooled, _ = roi_spp_forward(fmap, rois, levels=self.levels, mode=self.mode)
            pooled = asnumpy(pooled).astype(np.float32, copy=False)
            if len(maps) == 1:  # one scale took every window, in order: no copy
                out = pooled
                continue
            if out is None:
                out = np.empty((len(boxes), pooled.shape[1]), dtype=np.float32)
            out[rows] = pooled
        self.timings["trunk"].append(t1 - t0)
        self.timings["pool"].append(time.perf_counter() - t1)
        return out
