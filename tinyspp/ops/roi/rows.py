"""The RoIs of region pooling: validation, de-duplication and their bins.

``check_rois`` (from ``tinyspp.validate``, the library's one RoI validator) turns the caller's
``(R, 5)`` rows into int64 on the host; ``check_roi_bins`` names the first RoI a ``paper`` or
``caffe`` level cannot bin; ``unique_rows`` finds identical RoIs so they are pooled once;
``sum_duplicates`` adds their gradients; ``level_bins`` lists every bin of every RoI.

>>> import numpy as np
>>> rois = np.array([[0, 1, 1, 2, 3], [0, 0, 0, 0, 0], [0, 1, 1, 2, 3]])
>>> uniq, inverse = unique_rows(rois, (1, 4, 4))
>>> uniq.tolist(), inverse.tolist()
([[0, 0, 0, 0, 0], [0, 1, 1, 2, 3]], [1, 0, 1])
"""

from __future__ import annotations

import numpy as np

from ...backend import get_array_module
from ...bins import bin_edges, many_bin_divisors, many_bin_edges
from ...validate import check_rois

__all__ = ["check_rois", "check_roi_bins", "unique_rows", "sum_duplicates", "rowmap",
           "level_bins"]


def check_roi_bins(rois, levels, mode, func):
    """For ``paper``/``caffe`` modes, every RoI must be poolable; name the first row that is not."""
    if mode == "adaptive":
        return
    for axis, (lo, hi) in (("height", (2, 4)), ("width", (1, 3))):
        sizes = rois[:, hi] - rois[:, lo] + 1
        for size in np.unique(sizes):
            for n in levels:
                try:
                    bin_edges(int(size), n, mode)
                except ValueError as err:
                    r = int(np.flatnonzero(sizes == size)[0])
                    raise ValueError(f"{func}: rois row {r} = {rois[r].tolist()} ({axis} "
                                     f"{size}) cannot be pooled: {err}") from None


def unique_rows(rois, shape):
    """``np.unique(rois, axis=0, return_inverse=True)`` for valid RoIs of an ``(N, H, W)`` map,
    faster: each row is packed into one int64 (mixed radix ``N, W, H, W, H``), so the sort is
    over integers instead of rows (~0.2 instead of ~3 ms for 2000 RoIs). Same order (rows
    sorted lexicographically) and same result; falls back to ``axis=0`` if the product of the
    radices does not fit in an int64."""
    N, H, W = shape
    if N * (W * H) ** 2 >= 2**62:
        uniq, inverse = np.unique(rois, axis=0, return_inverse=True)
        return uniq, inverse.reshape(-1)
    b, x0, y0, x1, y1 = rois.T
    key = (((b * W + x0) * H + y0) * W + x1) * H + y1
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return rois[first], inverse.reshape(-1)


def rowmap(inverse, U):
    """The distinct RoI of every output row, int64 (R,): ``inverse``, or ``0..U-1`` when None."""
    if inverse is None:
        return np.arange(U, dtype=np.int64)
    return np.ascontiguousarray(inverse, dtype=np.int64)


def sum_duplicates(dout, inverse, U):
    """``dsum[u] = sum of dout[r] over rows r with inverse[r] == u``, shape (U, D).

    Without ``np.add.at`` (slow): the k-th occurrences of all RoIs have distinct targets, so
    one fancy-index update per occurrence number k does it (few passes: duplicates are few).
    """
    xp = get_array_module(dout)
    R = len(inverse)
    order = np.argsort(inverse, kind="stable")
    first = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0])  # group starts (sorted)
    occurrence = np.empty(R, dtype=np.int64)
    occurrence[order] = np.arange(R) - np.repeat(first, np.diff(np.r_[first, R]))
    dsum = xp.empty((U, dout.shape[1]), dtype=dout.dtype)
    target = xp.asarray(inverse)
    rows = xp.asarray(np.flatnonzero(occurrence == 0))
    dsum[target[rows]] = dout[rows]  # every RoI occurs once with k = 0
    for k in range(1, int(occurrence.max()) + 1):
        rows = xp.asarray(np.flatnonzero(occurrence == k))
        dsum[target[rows]] += dout[rows]
    return dsum


def level_bins(rois, n, mode):
    """Bins of level ``n`` of every RoI as flat ``(U*n*n,)`` int64 arrays in ``(u, by, bx)``
    order: ``b, ys, ye, xs, xe`` (absolute half-open edges) and ``divisor``, what average
    pooling divides by (the area; Caffe's padded window in caffe mode, ``bins.bin_divisor``)."""
    b, x0, y0, x1, y1 = rois.T
    h, w = y1 - y0 + 1, x1 - x0 + 1
    ys, ye = many_bin_edges(h, n, mode)
    xs, xe = many_bin_edges(w, n, mode)
    dy, dx = many_bin_divisors(h, n, mode), many_bin_divisors(w, n, mode)
    shape = (len(rois), n, n)
    grid = lambda v, axis: np.broadcast_to(np.expand_dims(v, axis), shape).reshape(-1)
    return (np.repeat(b, n * n), grid(y0[:, None] + ys, 2), grid(y0[:, None] + ye, 2),
            grid(x0[:, None] + xs, 1), grid(x0[:, None] + xe, 1), grid(dy, 2) * grid(dx, 1))
