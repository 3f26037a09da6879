"""Region pyramid pooling: SPP of every region of interest of a feature map (He et al., Sec. 4).

``roi_spp_forward(features, rois)`` pools each RoI ``[b, x0, y0, x1, y1]`` (inclusive feature-map
cells of image ``b``) into a fixed-length vector. By definition (a tested contract) row ``r`` is

    spp_forward(features[b:b+1, :, y0:y1+1, x0:x1+1], levels, mode, pool)[0][0]

bitwise for max pooling, to rounding for average pooling. Identical RoIs are pooled once and
their gradients summed.

**The argmax format** (``tinyspp.ops.argmax``), the one thing every max implementation writes
and every backward reads: ``cache.distinct_argmax (U, D)``, one row per distinct RoI
``cache.rois[u]``, column ``j`` in the output's layout (levels in order, each channel-major),
holding the flat index ``h*W + w`` of the maximum inside the (H, W) plane of the RoI's image, in
an integer dtype wide enough for ``H*W - 1`` (uint16 for maps of up to 65536 cells from the
``"cpu"`` and ``"xp"`` paths, int64 from the CUDA kernel). ``cache.inverse (R,)`` names the
distinct RoI of every input row (None when all were distinct); ``cache.argmax`` is the per-row
``(R, D)`` view of the same numbers.

**The implementations** (``impl``; all give bitwise the same max pooling):

* ``"cpu"``: the compiled C++ kernel ``tinyspp/kernels/region_max.cpp`` (a SIMD scan of the
  finest level, coarser levels merged). NumPy float32/float64, max pooling, every mode: the fast
  CPU path.
* ``"xp"``: array operations, NumPy or CuPy: sparse tables of integer keys for max
  (``sparse_table.py``), integral images for avg (``integral.py``). Max and avg, every mode,
  every float dtype.
* ``"cuda"``: the CUDA kernel ``tinyspp/kernels/pyramid_pool.cu`` (one thread per output, an
  atomicAdd scatter backward). CuPy float32/float64, max and avg, adaptive mode.
* ``"emulate"``: the SAME ``.cu`` compiled as C++ and run thread by thread on the CPU, a test
  harness for the GPU code. NumPy float32/float64, adaptive mode; far slower than ``"cpu"`` and
  never picked by ``"auto"``.
* ``"auto"``: ``"cuda"`` for CuPy where it applies; ``"cpu"`` for NumPy max pooling when the
  compiled kernel is available (else a one-time warning and ``"xp"``); ``"xp"`` otherwise.
  ``TINYSPP_CPU_KERNEL=0`` makes it skip ``"cpu"``.

The old name ``"kernel"`` (``"cuda"`` on CuPy, ``"emulate"`` on NumPy) still works and warns.

**The rooms of this package**, one job each: ``api.py`` (the two public functions, validation
and the choice above), ``rows.py`` (RoI validation, de-duplication, the bins of every RoI),
``sparse_table.py`` (the ``"xp"`` max path), ``integral.py`` (the ``"xp"`` average path). The
C++ glue lives beside the C++ kernel (``tinyspp/kernels/cpu.py``), the bin rule in
``tinyspp/bins.py``, the argmax format's gather and scatter in ``tinyspp/ops/argmax.py``.

Examples
--------
>>> import numpy as np
>>> features = np.arange(32.0).reshape(1, 2, 4, 4)
>>> rois = np.array([[0, 1, 1, 2, 3]])         # x 1..2, y 1..3 of image 0
>>> out, cache = roi_spp_forward(features, rois, levels=(1,))
>>> out                                        # the maximum of each channel inside the RoI
array([[14., 30.]])
>>> cache.argmax.tolist()                      # flat h*W + w of (3, 2)
[[14, 14]]
"""

from .api import IMPLS, RoISPPCache, choose_impl, roi_spp_backward, roi_spp_forward
from .rows import check_roi_bins, check_rois, sum_duplicates, unique_rows

__all__ = [
    "IMPLS", "RoISPPCache", "choose_impl", "roi_spp_backward", "roi_spp_forward",
    "check_roi_bins", "check_rois", "sum_duplicates", "unique_rows",
]
