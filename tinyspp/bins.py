"""Pyramid bin math as plain integers (He et al. 2014, Sec. 2.3 and Appendix).

A pyramid level with ``n`` bins per side splits a feature-map axis of length ``a`` into ``n``
half-open ranges ``[start, end)``. Height and width are binned independently. Three conventions:

``adaptive`` (default; the paper's Appendix rule)
    ``start_i = floor(i*a/n)``, ``end_i = ceil((i+1)*a/n)``. Exactly ``n`` non-empty bins for any
    ``a >= 1``; they cover ``[0, a)``, neighbours may overlap, and for ``a < n`` bins repeat rows.
``paper`` (Sec. 2.3's fixed-size rule)
    window ``win = ceil(a/n)``, stride ``floor(a/n)``, ``n`` windows ``[i*stride, i*stride+win)``.
    Exact only when ``a mod n`` is 0 or 1, otherwise ``a mod n - 1`` trailing rows are uncovered;
    undefined (stride 0) for ``a < n``.
``caffe`` (Caffe's SPPLayer)
    ``k = ceil(a/n)``, ``pad = (k*n - a + 1) // 2``, stride ``k``; window ``i`` is
    ``[i*k - pad, i*k - pad + k)`` clipped to ``[0, a)``. Invalid where ``pad >= k`` (Caffe aborts)
    or a clipped window is empty. Average pooling divides by Caffe's ``pool_size``, the window
    clipped to the padded extent (``bin_divisor``), not by the clipped bin's area.

Everything uses integer arithmetic only: float division can round to the wrong side.

Examples
--------
>>> bin_edges(13, 3, "paper")          # the paper's Fig. 4: window 5, stride 4
((0, 5), (4, 9), (8, 13))
>>> paper_window_stride(13, 2)
(7, 6)
>>> bin_edges(10, 3)                  # adaptive
((0, 4), (3, 7), (6, 10))
>>> spp_output_length(256, (6, 3, 2, 1))
12800
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .validate import check_choice, check_int, check_levels

MODES = ("adaptive", "paper", "caffe")
DEFAULT_LEVELS = (6, 3, 2, 1)


def caffe_kernel_pad(size, n):
    """Caffe's SPP window ``k = ceil(size/n)`` (also the stride) and padding
    ``(k*n - size + 1) // 2`` (ints or integer arrays)."""
    k = -(-size // n)
    return k, (k * n - size + 1) // 2


def bin_rule(size, n, i, mode):
    """``(start, end)`` of bin ``i`` of ``n`` along an axis of length ``size``: THE bin rule.

    Integer arithmetic only, on Python ints or integer NumPy arrays alike (``size`` and ``i``
    broadcast), so :func:`bin_edges` (one axis) and :func:`many_bin_edges` (many RoIs at once)
    share one copy; ``pyramid_pool.cu`` repeats the adaptive line in C. No validation.
    """
    if mode == "adaptive":
        return (i * size) // n, ((i + 1) * size + n - 1) // n
    if mode == "paper":
        win, stride = -(-size // n), size // n
        return i * stride, i * stride + win
    k, pad = caffe_kernel_pad(size, n)  # caffe: stride k, padding on both sides
    return np.maximum(i * k - pad, 0), np.minimum(i * k - pad + k, size)


def bin_divisor(size, n, i, mode):
    """What average pooling divides bin ``i``'s sum by, per axis (multiply the two axes).

    ``adaptive``/``paper``: the bin's length. ``caffe``: Caffe's ``PoolingLayer`` AVE rule,
    ``pool_size`` taken BEFORE clipping to the map, from the window clipped to the padded extent
    ``[-pad, size + pad)``: ``min(s + k, size + pad) - s`` with ``s = i*k - pad`` unclipped, so
    the zeros of the padding count (with SPP's padding this is always ``k``).
    """
    if mode != "caffe":
        start, end = bin_rule(size, n, i, mode)
        return end - start
    k, pad = caffe_kernel_pad(size, n)
    s = i * k - pad
    return np.minimum(s + k, size + pad) - s


def paper_window_stride(size: int, n: int, func: str = "paper_window_stride"):
    """Window ``ceil(size/n)`` and stride ``floor(size/n)`` of the paper's Sec. 2.3 rule.

    Raises ValueError for ``size < n`` (stride would be 0) and points to the adaptive rule.

    >>> paper_window_stride(10, 6)     # the paper's 180-pixel network, level 6
    (2, 1)
    """
    size = check_int(size, "size", func)
    n = check_int(n, "n", func)
    if size < n:
        raise ValueError(
            f"{func}: mode='paper' cannot pool size={size} into n={n} bins (stride "
            f"floor({size}/{n}) = 0); use mode='adaptive', which works for every size"
        )
    return -(-size // n), size // n


def _check_poolable(a: int, n: int, mode: str, func: str):
    """Raise the ValueError of a (size, n) pair the mode cannot bin (paper: a < n; caffe: pad
    >= kernel or an empty clipped window)."""
    if mode == "paper":
        paper_window_stride(a, n, func)
    elif mode == "caffe":
        k, pad = caffe_kernel_pad(a, n)
        empty = any(int(s) >= int(e) for s, e in (bin_rule(a, n, i, mode) for i in range(n)))
        if pad >= k or empty:
            raise ValueError(
                f"{func}: mode='caffe' cannot pool size={a} into n={n} bins (kernel {k}, pad "
                f"{pad}: Caffe aborts when pad >= kernel, and a window would be empty); "
                "use mode='adaptive', which works for every size"
            )


def bin_edges(size: int, n: int, mode: str = "adaptive"):
    """The ``n`` half-open ``(start, end)`` ranges of one pyramid level along one axis.

    Parameters
    ----------
    size : int
        Length ``a`` of the feature-map axis (>= 1).
    n : int
        Bins per side at this level (>= 1).
    mode : {"adaptive", "paper", "caffe"}

    Returns
    -------
    tuple of n (start, end) int pairs, ``0 <= start < end <= size``.

    >>> bin_edges(5, 4, "adaptive")
    ((0, 2), (1, 3), (2, 4), (3, 5))
    """
    func = "bin_edges"
    size = check_int(size, "size", func)
    n = check_int(n, "n", func)
    check_choice(mode, "mode", func, MODES)
    _check_poolable(size, n, mode, func)
    return tuple((int(s), int(e)) for s, e in (bin_rule(size, n, i, mode) for i in range(n)))


def bin_divisors(size: int, n: int, mode: str = "adaptive"):
    """The ``n`` per-axis divisors of average pooling (see :func:`bin_divisor`).

    >>> bin_divisors(5, 2, "caffe"), bin_edges(5, 2, "caffe")   # Caffe counts the padding
    ((3, 3), ((0, 2), (2, 5)))
    >>> bin_divisors(5, 2, "adaptive")
    (3, 3)
    """
    func = "bin_divisors"
    size = check_int(size, "size", func)
    n = check_int(n, "n", func)
    check_choice(mode, "mode", func, MODES)
    _check_poolable(size, n, mode, func)
    return tuple(int(bin_divisor(size, n, i, mode)) for i in range(n))


def many_bin_edges(sizes, n: int, mode: str):
    """``(starts, ends)`` of the ``n`` bins of each length in ``sizes (U,)``, int64 (U, n) each,
    relative to the start of each span; :func:`bin_rule` vectorised. The caller has checked that
    the mode can bin every size (:func:`bin_edges` raises the error that names it).

    >>> starts, ends = many_bin_edges(np.array([5, 3]), 2, "adaptive")
    >>> starts.tolist(), ends.tolist()
    ([[0, 2], [0, 1]], [[3, 5], [2, 3]])
    """
    i = np.arange(n, dtype=np.int64)[None, :]
    starts, ends = bin_rule(np.asarray(sizes, dtype=np.int64)[:, None], n, i, mode)
    return np.broadcast_to(starts, (len(sizes), n)), np.broadcast_to(ends, (len(sizes), n))


def many_bin_divisors(sizes, n: int, mode: str):
    """Per-axis average-pooling divisors of each length in ``sizes (U,)``: int64 (U, n)."""
    i = np.arange(n, dtype=np.int64)[None, :]
    return np.broadcast_to(bin_divisor(np.asarray(sizes, dtype=np.int64)[:, None], n, i, mode),
                           (len(sizes), n))


def level_plan(levels, mode: str = "adaptive"):
    """Order to compute a pyramid's levels in: ``[(n, parent), ...]``, finest first.

    With adaptive bins, bin ``i`` of level ``n`` is exactly the union of bins
    ``i*m/n .. (i+1)*m/n - 1`` of a level ``m`` that ``n`` divides, so level ``n`` can be merged
    from ``parent = m`` (the smallest such level computed before it) instead of scanning cells;
    ``parent`` is None where no level nests (always, for ``paper``/``caffe``). Repeated levels
    appear once.

    >>> level_plan((6, 3, 2, 1))
    [(6, None), (3, 6), (2, 6), (1, 2)]
    >>> level_plan((4, 3), "adaptive"), level_plan((6, 3), "paper")
    ([(4, None), (3, None)], [(6, None), (3, None)])
    """
    plan, done = [], []
    for n in sorted(set(levels), reverse=True):
        parents = [m for m in done if m % n == 0] if mode == "adaptive" else []
        plan.append((n, min(parents) if parents else None))
        done.append(n)
    return plan


def spp_output_length(channels: int, levels=DEFAULT_LEVELS) -> int:
    """Length ``C * sum(n*n)`` of the SPP feature vector.

    >>> spp_output_length(1, (4, 2, 1))
    21
    """
    channels = check_int(channels, "channels", "spp_output_length")
    return channels * sum(n * n for n in check_levels(levels, "spp_output_length"))


def pooling_layer_windows(size: int, n: int) -> int:
    """How many windows an ordinary (Caffe-style, ceil-mode, unpadded) pooling layer with the
    paper's window/stride would produce: ``ceil((size - win) / stride) + 1``, which is
    ``n + ceil((r - 1) / stride)`` for ``r = size mod n >= 1``. Equals ``n`` exactly when ``r`` is
    0 or 1; otherwise keeping only ``n`` windows leaves ``r - 1`` trailing rows uncovered.

    >>> pooling_layer_windows(10, 6), pooling_layer_windows(5, 3), pooling_layer_windows(11, 4)
    (9, 4, 5)
    """
    win, stride = paper_window_stride(size, n, "pooling_layer_windows")
    return -(-(size - win) // stride) + 1


class Coverage(NamedTuple):
    """How one level's bins cover an axis.

    ``uncovered`` rows in no bin; ``overlapping`` rows in more than one bin; ``empty_bins``
    count of bins with no row (always 0 for bins this module returns).
    """

    size: int
    n: int
    mode: str
    uncovered: tuple
    overlapping: tuple
    empty_bins: int


def coverage(size: int, n: int, mode: str = "adaptive") -> Coverage:
    """Report which rows of a length-``size`` axis the level's bins miss or share.

    >>> c = coverage(10, 6, "paper")      # 9 windows would be needed; keeping 6 drops 3 rows
    >>> c.uncovered
    (7, 8, 9)
    >>> coverage(13, 6, "paper").uncovered
    ()
    """
    edges = bin_edges(size, n, mode)
    hits = np.zeros(size, dtype=np.int64)
    for s, e in edges:
        hits[s:e] += 1
    return Coverage(
        size=size,
        n=n,
        mode=mode,
        uncovered=tuple(int(i) for i in np.flatnonzero(hits == 0)),
        overlapping=tuple(int(i) for i in np.flatnonzero(hits > 1)),
        empty_bins=sum(1 for s, e in edges if e <= s),
    )


class BinTable(NamedTuple):
    """Every bin of every level of an (H, W) map, in the SPP output order.

    Row ``m`` of each array describes bin ``m`` of a channel: levels in the given order, then
    ``by`` (row of bins), then ``bx``. ``offsets[l]`` is where level ``l`` starts in the flat
    ``(N, C * sum n*n)`` output (channel-major within a level), ``sizes[l] = n_l * n_l``.
    """

    levels: tuple
    y0: np.ndarray  # (M,) int64 first row of the bin
    y1: np.ndarray  # (M,) int64 one past the last row
    x0: np.ndarray
    x1: np.ndarray
    offsets: tuple  # per level: start column in the output for C channels
    area: np.ndarray | None = None  # (M,) int64 divisor of average pooling (bin_divisor, both
    #                                 axes); None: the bin's area (y1 - y0) * (x1 - x0)


def bin_table(height: int, width: int, levels=DEFAULT_LEVELS, mode: str = "adaptive",
              channels: int = 1) -> BinTable:
    """All bins of a pyramid over an ``height x width`` map as int64 arrays.

    >>> t = bin_table(13, 13, (2, 1))
    >>> t.y0.tolist(), t.y1.tolist()
    ([0, 0, 6, 6, 0], [7, 7, 13, 13, 13])
    >>> t.offsets
    (0, 4)
    """
    levels = check_levels(levels, "bin_table")
    y0, y1, x0, x1, area, offsets = [], [], [], [], [], []
    offset = 0
    for n in levels:
        rows, cols = bin_edges(height, n, mode), bin_edges(width, n, mode)
        dy, dx = bin_divisors(height, n, mode), bin_divisors(width, n, mode)
        for (ys, ye), hy in zip(rows, dy):
            for (xs, xe), wx in zip(cols, dx):
                y0.append(ys)
                y1.append(ye)
                x0.append(xs)
                x1.append(xe)
                area.append(hy * wx)
        offsets.append(offset)
        offset += channels * n * n
    as64 = lambda v: np.asarray(v, dtype=np.int64)
    return BinTable(levels, as64(y0), as64(y1), as64(x0), as64(x1), tuple(offsets), as64(area))
