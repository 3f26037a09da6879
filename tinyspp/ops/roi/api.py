"""``roi_spp_forward`` / ``roi_spp_backward``: validation once, the implementation choice, and
the hand-off to the room that does the work (see the package docstring for the contract)."""

from __future__ import annotations

import functools
import os
import warnings
from typing import NamedTuple

import numpy as np

from ...backend import get_array_module, is_gpu_array
from ...bins import DEFAULT_LEVELS
from ...validate import check_array, check_impl, check_nchw
from ..argmax import scatter_max_grad
from ..spp import channel_of_column, check_spp_args
from .integral import avg_backward, avg_forward
from .rows import check_roi_bins, check_rois, rowmap, sum_duplicates, unique_rows
from .sparse_table import max_forward

IMPLS = ("auto", "xp", "cpu", "cuda", "emulate")
VALUE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # what the compiled kernels take


class RoISPPCache(NamedTuple):
    """What ``roi_spp_backward`` needs from ``roi_spp_forward``."""

    features_shape: tuple  # (N, C, H, W)
    levels: tuple
    mode: str
    pool: str
    impl: str  # the path taken: "xp", "cpu", "cuda" or "emulate"
    rois: object  # (U, 5) int64 distinct RoIs actually pooled (host array)
    inverse: object  # (R,) int64 row of ``rois`` for each input RoI; None when all were distinct
    distinct_argmax: object  # (U, D) the argmax format (package docstring); None for avg
    dtype: object

    @property
    def argmax(self):
        """(R, D) flat ``h*W + w`` of each maximum within its image's plane; None for avg."""
        arg = self.distinct_argmax
        if arg is None or self.inverse is None:
            return arg
        return arg[get_array_module(arg).asarray(self.inverse)]


def roi_spp_forward(features, rois, levels=DEFAULT_LEVELS, mode="adaptive", pool="max",
                    impl="auto"):
    """Spatial pyramid pooling of every region of interest.

    Parameters
    ----------
    features : ndarray of shape (N, C, H, W), floating (NumPy or CuPy)
    rois : integer ndarray of shape (R, 5)
        Rows ``[batch_index, x0, y0, x1, y1]``: inclusive cells ``0 <= x0 <= x1 < W``,
        ``0 <= y0 <= y1 < H`` of image ``batch_index`` in ``[0, N)``. ``R`` may differ from ``N``
        and may be 0. With CuPy features, NumPy rois are fine (checked on the host, copied to
        the device once).
    levels, mode, pool
        As in ``spp_forward``.
    impl : {"auto", "xp", "cpu", "cuda", "emulate"}
        What runs (table in the package docstring, ``tinyspp.ops.roi``). ``"auto"``: ``"cuda"``
        for float32/float64 CuPy features in adaptive mode, ``"cpu"`` for float32/float64 NumPy
        max pooling when the compiled kernel is available (a one-time warning says when it is
        not), else ``"xp"``. The old ``"kernel"`` warns and means ``"cuda"``/``"emulate"``.

    Returns
    -------
    out : ndarray of shape (R, D), D = C * sum(n*n), dtype of features
        Row ``r`` equals ``spp_forward`` of RoI ``r``'s crop (bitwise for max pooling).
    cache : RoISPPCache
    """
    func = "roi_spp_forward"
    N, C, H, W = check_nchw(features, "features", func)
    levels = check_spp_args(levels, mode, pool, impl, func, IMPLS)
    xp = get_array_module(features)
    if is_gpu_array(rois) and xp is np:
        raise TypeError(f"{func}: rois are a CuPy array but features are NumPy; move them to "
                        "one device first (tinyspp.backend.to_device)")
    impl = check_impl(impl, func, IMPLS, xp)
    rois = check_rois(rois, (N, C, H, W), func)  # int64, host
    D = C * sum(n * n for n in levels)
    path = choose_impl(impl, xp, mode, pool, H * W, features.dtype, func)
    if len(rois) == 0:
        empty = xp.zeros((0, D), dtype=features.dtype)
        arg = None if pool == "avg" else xp.zeros((0, D), dtype=np.int64)
        return empty, RoISPPCache((N, C, H, W), levels, mode, pool, "xp", rois, None, arg,
                                  features.dtype)
    check_roi_bins(rois, levels, mode, func)
    uniq, inverse = unique_rows(rois, (N, H, W))
    if len(uniq) == len(rois):
        uniq, inverse = rois, None  # nothing to share: keep the caller's order
    argmax = None
    if path == "cpu":  # the compiled kernel writes every row itself, duplicates included
        from ...kernels import cpu

        out, argmax = cpu.pool_max(features, uniq, rowmap(inverse, len(uniq)), levels, mode)
    elif path in ("cuda", "emulate"):
        from ... import kernels

        out, argmax = kernels.roi_spp_forward(xp.ascontiguousarray(features), uniq, levels,
                                              pool)
        if inverse is not None:
            out = out[xp.asarray(inverse)]
    elif pool == "max":  # max keys found once per distinct RoI, values read for every row
        out, argmax = max_forward(features, uniq, inverse, levels, mode)
    else:
        out = avg_forward(features, uniq, levels, mode)
        if inverse is not None:
            out = out[xp.asarray(inverse)]
    cache = RoISPPCache((N, C, H, W), levels, mode, pool, path, uniq, inverse, argmax,
                        features.dtype)
    return out, cache


def choose_impl(impl, xp, mode, pool, HW, dtype, func):
    """The implementation that runs for a checked ``impl`` (package docstring's table)."""
    if impl in ("cuda", "emulate") and mode != "adaptive":
        raise ValueError(f"{func}: impl={impl!r} supports mode='adaptive' only, got "
                         f"mode={mode!r}; use impl='xp' (or 'auto') for other bin rules")
    if impl in ("cuda", "emulate") and dtype not in VALUE_DTYPES:
        raise ValueError(f"{func}: impl={impl!r} needs float32 or float64 features, got "
                         f"{dtype}; use impl='xp' (or 'auto')")
    if impl == "cpu":
        if pool != "max":
            raise ValueError(f"{func}: impl='cpu' supports pool='max' only, got pool={pool!r}; "
                             "use impl='xp' (or 'auto')")
        if HW > 2**31:
            raise ValueError(f"{func}: impl='cpu' needs H*W <= 2**31 (int32 argmax), got {HW}")
        if dtype not in VALUE_DTYPES:
            raise ValueError(f"{func}: impl='cpu' needs float32 or float64 features, got {dtype}; "
                             "use impl='xp' (or 'auto')")
        return "cpu"
    if impl != "auto":
        return impl
    if xp is not np:  # CuPy: the kernel where it applies, like NumPy falls back to "xp"
        return "cuda" if mode == "adaptive" and dtype in VALUE_DTYPES else "xp"
    if (pool == "max" and HW <= 2**31 and dtype in VALUE_DTYPES
            and os.environ.get("TINYSPP_CPU_KERNEL", "1") != "0"):
        from ...kernels import cpu

        if cpu.available():
            return "cpu"
        _warn_no_cpu_kernel(cpu.why_unavailable())
    return "xp"


@functools.cache
def _warn_no_cpu_kernel(reason=""):
    warnings.warn("tinyspp: no C++ compiler or no loadable compiled CPU kernel"
                  + (f" ({reason})" if reason else "") + ", so region max pooling uses the "
                  "NumPy path (several times slower than the compiled CPU kernel); install g++ "
                  "or set CXX to speed it up (TINYSPP_CPU_KERNEL=0 silences this)",
                  UserWarning, stacklevel=4)


def roi_spp_backward(dout, cache):
    """Gradient of ``roi_spp_forward`` with respect to ``features``.

    Parameters
    ----------
    dout : ndarray of shape (R, D)
    cache : RoISPPCache

    Returns
    -------
    dfeatures : ndarray of shape (N, C, H, W), dtype of the forward's features
        Zeros when there are no RoIs. Gradients of identical RoIs add up.
    """
    func = "roi_spp_backward"
    N, C, H, W = cache.features_shape
    D = C * sum(n * n for n in cache.levels)
    R = len(cache.rois) if cache.inverse is None else len(cache.inverse)
    check_array(dout, "dout", func, ndim=2, layout="(R, D)")
    if tuple(dout.shape) != (R, D):
        raise ValueError(f"{func}: dout must have shape {(R, D)}, got {tuple(dout.shape)}")
    xp = get_array_module(dout)
    if R == 0:
        return xp.zeros((N, C, H, W), dtype=cache.dtype)
    U = len(cache.rois)
    if cache.impl == "cpu":  # one loop; identical RoIs share an argmax row, gradients add up
        from ...kernels import cpu

        dx = cpu.pool_max_backward(dout, cache.distinct_argmax, cache.rois,
                                   rowmap(cache.inverse, U), cache.features_shape, cache.levels,
                                   cache.mode)
    elif cache.impl == "xp" and cache.pool == "max":  # one scatter, duplicates included
        dx = scatter_max_grad(dout, cache.distinct_argmax, channel_of_column(cache.levels, C),
                              cache.features_shape, images=cache.rois[:, 0],
                              rowmap=cache.inverse)
    else:
        if cache.inverse is not None:  # identical RoIs: sum their gradients, scatter once
            dout = sum_duplicates(dout, cache.inverse, U)
        if cache.impl in ("cuda", "emulate"):
            from ... import kernels

            dx = kernels.roi_spp_backward(xp.ascontiguousarray(dout), cache.distinct_argmax,
                                          cache.rois, cache.features_shape, cache.levels,
                                          cache.pool)
        else:
            dx = avg_backward(dout, cache.rois, cache.features_shape, cache.levels, cache.mode)
    return dx.astype(cache.dtype, copy=False)
