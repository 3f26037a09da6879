"""The R-CNN baseline (Girshick et al. 2014) that SPP-net is measured against.

Same trunk, same pyramid, same fc layers, SVMs, box regression and NMS as
:class:`~tinyspp.detect.detector.SPPDetector`; the one difference is feature extraction. R-CNN
crops every window from the image, warps it to ``input_size x input_size``
(:func:`skimage.transform.resize`) and runs the whole trunk on each crop: the conv cost is
``O(R * input_size^2)`` for ``R`` windows instead of SPP-net's ``O(image area)`` once per scale.
The warped crop's conv map is then pooled with the image pyramid (``spp_forward``) so both
detectors hand identical ``(R, C * M)`` features to the same classifiers.
"""

from __future__ import annotations

import time

import numpy as np

from ..backend import asnumpy, to_device
from .detector import SPPDetector, _sync
from .geometry import check_boxes


class RCNNDetector(SPPDetector):
    """R-CNN: crop, warp and run the trunk on every window (see :class:`SPPDetector`).

    Extra parameters
    ----------------
    context : int
        Pixels of image context added around each window before warping (R-CNN uses 16 at 227).
    batch_size : int
        Warped crops per trunk call.
    """

    def __init__(self, trunk, n_classes: int, *, context: int = 0, batch_size: int = 128,
                 **kwargs):
        super().__init__(trunk, n_classes, **kwargs)
        self.context, self.batch_size = int(context), int(batch_size)

    def warp(self, image, boxes) -> np.ndarray:
        """Normalised float32 warped crops ``(R, 3, s, s)`` of ``boxes (R, 4)``, s = input_size."""
        from skimage.transform import resize

        H, W = image.shape[:2]
        s = self.input_size
        out = np.empty((len(boxes), 3, s, s), dtype=np.float32)
        for r, (x0, y0, x1, y1) in enumerate(boxes):
            c = self.context
            xa = int(np.clip(np.floor(x0) - c, 0, W - 1))
            ya = int(np.clip(np.floor(y0) - c, 0, H - 1))
            xb = int(np.clip(np.ceil(x1) + c, xa + 1, W))
            yb = int(np.clip(np.ceil(y1) + c, ya + 1, H))
            crop = resize(image[ya:yb, xa:xb], (s, s), order=1, anti_aliasing=False,
                          preserve_range=True)
            out[r] = crop.transpose(2, 0, 1)
        return (out - self.mean) / self.std

    def pool(self, image, boxes) -> np.ndarray:
        """Features ``(R, C*M)``: trunk on each warped window, then image SPP of its map."""
        from ..ops.spp import spp_forward

        boxes = check_boxes(boxes, "boxes", "RCNNDetector.pool")
        t_trunk = t_pool = 0.0
        parts = []
        for start in range(0, len(boxes), self.batch_size):
            t0 = time.perf_counter()
            x = to_device(self.warp(image, boxes[start:start + self.batch_size]), self.device)
            fmap = self.trunk.forward(x)                      # (B, C, h, w)
            _sync(self.device)
            t1 = time.perf_counter()
            pooled, _ = spp_forward(fmap, levels=self.levels, mode=self.mode)
            parts.append(asnumpy(pooled).astype(np.float32))
            t_trunk += t1 - t0
            t_pool += time.perf_counter() - t1
        self.timings["trunk"].append(t_trunk)
        self.timings["pool"].append(t_pool)
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
