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
    or a clipped window is empty.

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


def _adaptive(a: int, n: int):
    return tuple(((i * a) // n, ((i + 1) * a + n - 1) // n) for i in range(n))


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


def _paper(a: int, n: int, func: str):
    win, stride = paper_window_stride(a, n, func)
    return tuple((i * stride, i * stride + win) for i in range(n))


def _caffe(a: int, n: int, func: str):
    k = -(-a // n)
    pad = (k * n - a + 1) // 2
    edges = tuple((max(i * k - pad, 0), min(i * k - pad + k, a)) for i in range(n))
    if pad >= k or any(s >= e for s, e in edges):
        raise ValueError(
            f"{func}: mode='caffe' cannot pool size={a} into n={n} bins (kernel {k}, pad {pad}: "
            f"Caffe aborts when pad >= kernel, and a window would be empty); "
            "use mode='adaptive', which works for every size"
        )
    return edges


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
    if mode == "adaptive":
        return _adaptive(size, n)
    if mode == "paper":
        return _paper(size, n, func)
    return _caffe(size, n, func)


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
    y0, y1, x0, x1, offsets = [], [], [], [], []
    offset = 0
    for n in levels:
        rows = bin_edges(height, n, mode)
        cols = bin_edges(width, n, mode)
        for ys, ye in rows:
            for xs, xe in cols:
                y0.append(ys)
                y1.append(ye)
                x0.append(xs)
                x1.append(xe)
        offsets.append(offset)
        offset += channels * n * n
    as64 = lambda v: np.asarray(v, dtype=np.int64)
    return BinTable(levels, as64(y0), as64(y1), as64(x0), as64(x1), tuple(offsets))
