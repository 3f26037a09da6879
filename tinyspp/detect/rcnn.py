"""The R-CNN baseline (Girshick et al. 2014) that SPP-net is measured against.

R-CNN and SPP-net share the proposals, the trunk, the pyramid, the SVMs, box regression and NMS
(:class:`~tinyspp.detect.head.DetectionHead`); they differ in the extractor only.
:class:`RCNNFeatures` crops every window from the image, warps it to ``input_size x input_size``
(:func:`skimage.transform.resize`) and runs the whole trunk on each crop: the conv cost is
``O(R * input_size^2)`` for ``R`` windows instead of SPP-net's ``O(image area)`` once per scale.
The warped crop's conv map is then pooled with the image pyramid (``spp_forward``), so both
extractors hand identical ``(R, C * M)`` features to the same head. There are no scales and no
window-to-feature mapping here: every window is its own input.
"""

from __future__ import annotations

import time

import numpy as np

from ..backend import asnumpy, check_device, synchronize, to_device
from ..validate import check_int, check_levels
from .data import as_image
from .detector import Detector
from .features import normaliser
from .geometry import check_boxes
from .head import DetectionHead


class RCNNFeatures:
    """R-CNN features: warp each window to ``input_size``, run the trunk, image SPP of its map.

    Parameters
    ----------
    trunk : conv layers ``forward(x (N, 3, s, s)) -> (N, C, h, w)``
    levels, mode : the pyramid applied to each warped window's map (as :class:`SPPFeatures`)
    input_size : int
        Side ``s`` of the warped window.
    context : int
        Pixels of image context added around each window before warping (R-CNN uses 16 at 227).
    batch_size : int
        Warped crops per trunk call.
    mean, std : per-channel normalisation of the trunk.
    device : {"cpu", "gpu"}
    """

    def __init__(self, trunk, *, levels=(6, 3, 2, 1), mode: str = "adaptive",
                 input_size: int = 64, context: int = 0, batch_size: int = 128,
                 mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), device: str = "cpu"):
        func = "RCNNFeatures"
        self.trunk = trunk
        self.levels, self.mode = check_levels(levels, func), mode
        self.input_size = check_int(input_size, "input_size", func)
        self.context = check_int(context, "context", func, minimum=0)
        self.batch_size = check_int(batch_size, "batch_size", func)
        self.mean, self.std = normaliser(mean, std, func)
        self.device = check_device(device, func)
        self.timings = {"trunk": [], "pool": []}

    def warp(self, image, boxes) -> np.ndarray:
        """Normalised float32 warped crops ``(R, 3, s, s)`` of ``boxes (R, 4)``, s = input_size."""
        from skimage.transform import resize

        image = as_image(image, "image", "RCNNFeatures.warp")
        boxes = check_boxes(boxes, "boxes", "RCNNFeatures.warp")
        H, W = image.shape[:2]
        s, c = self.input_size, self.context
        out = np.empty((len(boxes), 3, s, s), dtype=np.float32)
        for r, (x0, y0, x1, y1) in enumerate(boxes):
            xa = int(np.clip(np.floor(x0) - c, 0, W - 1))
            ya = int(np.clip(np.floor(y0) - c, 0, H - 1))
            xb = int(np.clip(np.ceil(x1) + c, xa + 1, W))
            yb = int(np.clip(np.ceil(y1) + c, ya + 1, H))
            crop = resize(image[ya:yb, xa:xb], (s, s), order=1, anti_aliasing=False,
                          preserve_range=True)
            out[r] = crop.transpose(2, 0, 1)
        return (out - self.mean) / self.std

    def pool(self, image, boxes) -> np.ndarray:
        """Features ``(R, C*M)`` float32: trunk on each warped window, then image SPP of its map.

        ``R = 0`` gives ``(0, 0)``. Appends the seconds spent to :attr:`timings`.
        """
        from ..ops.spp import spp_forward

        func = "RCNNFeatures.pool"
        image = as_image(image, "image", func)
        boxes = check_boxes(boxes, "boxes", func)
        t_trunk = t_pool = 0.0
        parts = []
        for start in range(0, len(boxes), self.batch_size):
            t0 = time.perf_counter()
            x = to_device(self.warp(image, boxes[start:start + self.batch_size]), self.device)
            fmap = self.trunk.forward(x)                      # (B, C, h, w)
            synchronize(self.device)
            t1 = time.perf_counter()
            pooled, _ = spp_forward(fmap, levels=self.levels, mode=self.mode)
            parts.append(asnumpy(pooled).astype(np.float32))
            t_trunk += t1 - t0
            t_pool += time.perf_counter() - t1
        self.timings["trunk"].append(t_trunk)
        self.timings["pool"].append(t_pool)
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


class RCNNDetector(Detector):
    """``Detector(RCNNFeatures(trunk, **options), DetectionHead(n_classes, ...))``.

    The same arguments as :class:`~tinyspp.detect.detector.SPPDetector`, with
    :class:`RCNNFeatures` options (levels, mode, input_size, context, batch_size, mean, std)
    instead of SPP-net's (there are no ``scales`` or ``mapping`` to pass).
    """

    def __init__(self, trunk, n_classes: int, *, fc=None, device: str = "cpu",
                 proposal_options=None, head_options=None, **options):
        super().__init__(RCNNFeatures(trunk, device=device, **options),
                         DetectionHead(n_classes, fc=fc, device=device, **(head_options or {})),
                         proposal_options=proposal_options)
