"""Region average pooling from integral images (``impl="xp"``, NumPy or CuPy).

Forward: per image, float64 prefix sums over rows and columns; a bin's sum is four corner
look-ups of ``C``-vectors, divided by the bin's divisor (its area, or in ``caffe`` mode Caffe's
padded window, ``tinyspp.bins.bin_divisor``). Non-finite cells are counted in their own integral
images, so a NaN or inf only affects the bins that contain it. Equal to ``spp_forward`` up to
rounding, not bitwise. Backward: each bin's ``dout / divisor`` added over its cells with the
corners of a 2-D difference array (four scatter-adds), then two cumulative sums.
"""

from __future__ import annotations

import numpy as np

from ...backend import get_array_module, scatter_add
from .rows import level_bins


def _accumulate(acc, index, weights):
    """``acc[index] += weights`` with repeats: ``bincount`` on NumPy (faster than ``add.at``);
    on CuPy ``scatter_add``, whose atomic adds need no host sync (CuPy's ``bincount`` reads
    the index range back to the host on every call)."""
    if get_array_module(acc) is np:
        acc += np.bincount(index, weights=weights, minlength=acc.size)
    else:
        scatter_add(acc, index, weights)


def avg_forward(features, rois, levels, mode):
    """Bin means of the distinct ``rois (U, 5)``: ``out (U, D)`` in the dtype of ``features``."""
    xp = get_array_module(features)
    N, C, H, W = features.shape
    U = len(rois)
    ft = features.transpose(0, 2, 3, 1).astype(np.float64)  # (N, H, W, C)
    finite = xp.isfinite(ft)
    integral = lambda v: xp.pad(v.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0), (0, 0)))
    sums = [integral(xp.where(finite, ft, 0.0))]
    special = (xp.nan, xp.inf, -xp.inf)
    has_special = not bool(finite.all())
    if has_special:
        sums += [integral((ft != ft) if v != v else (ft == v)) for v in special]
    parts = []
    for n in levels:
        b, ys, ye, xs, xe, divisor = level_bins(rois, n, mode)
        box = lambda S, b=b, ys=ys, ye=ye, xs=xs, xe=xe: box_sums(S, b, ys, ye, xs, xe)
        mean = box(sums[0]) / xp.asarray(divisor.astype(np.float64))[:, None]  # (U*n*n, C)
        if has_special:
            n_nan, n_pinf, n_ninf = (box(S) > 0.5 for S in sums[1:])
            mean = xp.where(n_pinf, xp.inf, mean)
            mean = xp.where(n_ninf, -xp.inf, mean)
            mean = xp.where(n_nan | (n_pinf & n_ninf), xp.nan, mean)
        parts.append(mean.reshape(U, n * n, C).transpose(0, 2, 1).reshape(U, -1))
    return xp.concatenate(parts, axis=1).astype(features.dtype)


def box_sums(S, b, ys, ye, xs, xe):
    """Sums over ``[ys, ye) x [xs, xe)`` of image ``b`` from an integral image
    ``S (N, H+1, W+1, C)``: four corner look-ups of C-vectors, shape (Q, C)."""
    xp = get_array_module(S)
    N, H1, W1, C = S.shape
    flat = S.reshape(-1, C)
    corner = lambda y, x: flat[xp.asarray((b * H1 + y) * W1 + x)]
    return corner(ye, xe) - corner(ys, xe) - corner(ye, xs) + corner(ys, xs)


def avg_backward(dout, rois, features_shape, levels, mode):
    """Gradient of :func:`avg_forward` for ``dout (U, D)`` (identical RoIs summed already).

    The prefix sums leave ~1e-16 residues where contributions cancel, so cells no bin covers (an
    exact integer count) are set to 0. Returns float64 ``(N, C, H, W)``.
    """
    xp = get_array_module(dout)
    N, C, H, W = features_shape
    U = len(rois)
    acc = xp.zeros((N * (H + 1) * (W + 1) * C,), dtype=np.float64)
    cover = xp.zeros((N * (H + 1) * (W + 1),), dtype=np.float64)  # exact small counts
    off = 0
    for n in levels:
        b, ys, ye, xs, xe, divisor = level_bins(rois, n, mode)
        g = dout[:, off:off + C * n * n].reshape(U, C, n * n).transpose(0, 2, 1).reshape(-1, C)
        g = g / xp.asarray(divisor.astype(np.float64))[:, None]
        for y, x, sign in ((ys, xs, 1), (ys, xe, -1), (ye, xs, -1), (ye, xe, 1)):
            cell = xp.asarray((b * (H + 1) + y) * (W + 1) + x)
            idx = (cell[:, None] * C + xp.arange(C)[None, :]).ravel()
            _accumulate(acc, idx, (sign * g).ravel())
            _accumulate(cover, cell, xp.full(cell.shape, float(sign)))
        off += C * n * n
    dx = acc.reshape(N, H + 1, W + 1, C).cumsum(1).cumsum(2)[:, :H, :W]
    covered = cover.reshape(N, H + 1, W + 1).cumsum(1).cumsum(2)[:, :H, :W] > 0.5
    dx = xp.where(covered[..., None], dx, 0.0)
    return xp.ascontiguousarray(dx.transpose(0, 3, 1, 2))
