"""Spatial pyramid pooling of whole maps (He et al. 2014, Sec. 2.3 and Appendix).

``spp_forward`` pools an ``(N, C, H, W)`` map into a fixed-length ``(N, C * sum(n*n))`` vector,
whatever ``H`` and ``W`` are: the property that lets SPP-net take images of any size. Bins come
from ``tinyspp.bins.bin_table`` (modes ``adaptive``, ``paper``, ``caffe``). Layout of the output:
levels in the order given, each level's ``(N, C, n, n)`` result flattened channel-major (x fastest)
and concatenated.

Max semantics: the argmax is the absolute flat index ``h*W + w`` in the (H, W) plane; ties go to
the first maximal element in row-major order inside the bin; NaN propagates (the first NaN in
row-major order wins). Average pooling divides the bin's sum by ``BinTable.area``: the bin's
area (the mean over its cells) in ``adaptive`` and ``paper`` mode, and in ``caffe`` mode Caffe's
``pool_size``, the window clipped to the *padded* map, so the zeros of Caffe's padding count
(``tinyspp.bins.bin_divisor``; a 5-row axis in 2 bins pads to 6 and divides both bins by 3).

How the NumPy path works (``impl="xp"``): the map is moved channel-last, ``(H, W, N*C)``, so every
gather moves contiguous ``N*C`` vectors. Per level it reduces over the WIDTH of every column bin
first (first maximal column of each row), then over the HEIGHT of every row bin (first row holding
the maximum, i.e. the smallest flat index among the row maxima equal to it): that order yields
exactly the row-major-first tie rule. Bins are gathered with an index array padded to the longest
bin by repeating the bin's start, which never changes the first maximum. An adaptive level that
divides a finer one (3 and 2 of (6, 3, 2, 1)) is merged from that level's bins
(``tinyspp.bins.level_plan``) instead of scanning the map again, and the channels are split over
threads (``tinyspp.ops.dispatch``). Backward scatters ``dout`` through the argmax with one
scatter-add.

Examples
--------
>>> import numpy as np
>>> x = np.arange(16.0).reshape(1, 1, 4, 4)
>>> out, cache = spp_forward(x, levels=(2, 1))
>>> out                       # level 2: the 4 quadrant maxima; level 1: the global maximum
array([[ 5.,  7., 13., 15., 15.]])
>>> cache.argmax.tolist()     # flat h*W + w of each maximum
[[5, 7, 13, 15, 15]]
>>> spp_backward(np.ones((1, 5)), cache)[0, 0]
array([[0., 0., 0., 0.],
       [0., 1., 0., 1.],
       [0., 0., 0., 0.],
       [0., 1., 0., 2.]])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..backend import get_array_module, is_gpu_array
from ..bins import DEFAULT_LEVELS, MODES, BinTable, bin_table, level_plan
from ..validate import check_array, check_choice, check_impl, check_levels, check_nchw
from .argmax import scatter_max_grad
from .dispatch import parallel_slices, split_copyto

POOLS = ("max", "avg")
IMPLS = ("auto", "xp", "cpu", "cuda", "emulate")  # what each runs: tinyspp.validate.IMPLS


class SPPCache(NamedTuple):
    """What ``spp_backward`` needs from ``spp_forward``."""

    x_shape: tuple  # (N, C, H, W)
    levels: tuple  # bins per side, e.g. (6, 3, 2, 1)
    mode: str  # "adaptive" | "paper" | "caffe"
    pool: str  # "max" | "avg"
    impl: str  # the path actually taken: "xp", "cuda" or "emulate"
    argmax: object  # (N, D) int32 flat h*W + w of each maximum (any int dtype from kernels)
    #                 None for avg
    table: BinTable  # every bin, in output order (channels=C offsets)
    dtype: object  # dtype of x (the gradient is returned in it)


def check_spp_args(levels, mode, pool, impl, func, impls=IMPLS):
    """Validate the hyper-parameters shared by image and region SPP; return ``levels``."""
    levels = check_levels(levels, func)
    check_choice(mode, "mode", func, MODES)
    check_choice(pool, "pool", func, POOLS)
    if impl != "kernel":  # the deprecated name is resolved (with its warning) by check_impl
        check_choice(impl, "impl", func, impls)
    return levels


def pyramid_table(height, width, levels, mode, channels, func):
    """``bin_table`` whose errors (e.g. paper mode on a map smaller than a level) name ``func``."""
    try:
        return bin_table(height, width, levels, mode, channels=channels)
    except ValueError as err:
        raise ValueError(f"{func}: for an (H, W) = ({height}, {width}) map, {err}") from None


def spp_forward(x, levels=DEFAULT_LEVELS, mode="adaptive", pool="max", impl="auto"):
    r"""Spatial pyramid pooling: any ``(N, C, H, W)`` map to a fixed ``(N, C * sum(n*n))`` vector.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), floating (NumPy or CuPy)
    levels : sequence of int
        Bins per side of each pyramid level, in output order (default ``(6, 3, 2, 1)``).
    mode : {"adaptive", "paper", "caffe"}
        Bin rule (see ``tinyspp.bins``). ``paper`` and ``caffe`` raise a ValueError for sizes
        where they cannot make ``n`` non-empty bins.
    pool : {"max", "avg"}
    impl : {"auto", "xp", "cpu", "cuda", "emulate"}
        ``auto``: the CUDA kernel for float32/float64 CuPy inputs, the compiled CPU kernel for
        NumPy float32/float64 max pooling in ``adaptive`` mode (where it builds), the
        array-module path otherwise; ``xp``: always the array-module path; ``cpu``: the
        region-pooling kernel ``tinyspp/kernels/region_max.cpp`` with one region per image,
        the whole map (its adaptive bins are the image's: the same numbers, bit for bit, as
        ``xp``; max, adaptive, NumPy float32/float64 only); ``cuda``: the CUDA kernel (CuPy);
        ``emulate``: the same kernel run serially on the CPU (NumPy; a slow test harness). The
        old ``"kernel"`` (cuda or emulate, by array type) warns and still works.

    Returns
    -------
    out : ndarray of shape (N, D), D = C * sum(n*n), dtype of x
        Level by level; within a level ``out[:, off + (c*n + by)*n + bx]``.
    cache : SPPCache
        ``cache.argmax`` is an int32 array of shape (N, D): flat ``h*W + w`` of each maximum.

    Notes
    -----
    A level of :math:`n` bins per side gives :math:`n^2` bins per channel, whatever :math:`H` and
    :math:`W` are, so the output length is fixed by the levels alone (Sec. 2.3):

    .. math::

        D = C \sum_{\ell} n_\ell^2

    (:math:`C = 256` channels and levels 6, 3, 2, 1: :math:`D = 256 \cdot 50 = 12800`).

    With ``mode="adaptive"`` bin :math:`i` of an axis of length :math:`a` is the half-open range
    :math:`[\lfloor i a / n \rfloor, \lceil (i + 1) a / n \rceil)` (the paper's Appendix).
    """
    func = "spp_forward"
    N, C, H, W = check_nchw(x, "x", func)
    levels = check_spp_args(levels, mode, pool, impl, func)
    table = pyramid_table(H, W, levels, mode, C, func)
    xp = get_array_module(x)
    path = check_impl(impl, func, IMPLS, xp)
    if path == "auto":
        path = "cuda" if is_gpu_array(x) and x.dtype in (np.float32, np.float64) else (
            "cpu" if _cpu_refusal(x, mode, pool, func) is None else "xp")
    if path == "cpu":
        out, argmax = _cpu_forward(x, levels, mode, pool, func)
    elif path in ("cuda", "emulate"):
        from .. import kernels

        out, argmax = kernels.spp_forward(xp.ascontiguousarray(x), table, pool)
    elif pool == "max":
        out, argmax = _max_forward(x, table, mode)
    else:
        out, argmax = _avg_forward(x, table), None
    return out, SPPCache((N, C, H, W), levels, mode, pool, path, argmax, table, x.dtype)


def spp_backward(dout, cache):
    """Gradient of ``spp_forward``.

    Parameters
    ----------
    dout : ndarray of shape (N, D)
        Upstream gradient, D = C * sum(n*n).
    cache : SPPCache

    Returns
    -------
    dx : ndarray of shape (N, C, H, W), dtype of the forward input
        Max: each ``dout`` entry added at its bin's argmax (overlapping bins accumulate).
        Avg: each ``dout`` entry spread evenly over its bin's cells.
    """
    func = "spp_backward"
    N, C, H, W = cache.x_shape
    D = C * sum(n * n for n in cache.levels)
    check_array(dout, "dout", func, ndim=2, layout="(N, D)")
    if tuple(dout.shape) != (N, D):
        raise ValueError(f"{func}: dout must have shape {(N, D)}, got {tuple(dout.shape)}")
    xp = get_array_module(dout)
    if cache.impl in ("cuda", "emulate"):
        from .. import kernels

        dx = kernels.spp_backward(xp.ascontiguousarray(dout), cache.argmax, cache.x_shape,
                                  cache.table, cache.pool)
    elif cache.pool == "max":
        dx = scatter_max_grad(dout, cache.argmax, channel_of_column(cache.levels, C, xp),
                              (N, C, H, W))
    else:
        dx = _avg_backward(dout, cache.table, (N, C, H, W))
    return dx.astype(cache.dtype, copy=False)


def _cpu_refusal(x, mode, pool, func):
    """Why the compiled region kernel cannot pool these whole maps, as an exception to raise
    for ``impl="cpu"``; None when it can (then ``impl="auto"`` takes it)."""
    from ..kernels import cpu

    if pool != "max" or mode != "adaptive":
        return ValueError(f"{func}: impl='cpu' pools with pool='max' and mode='adaptive', got "
                          f"pool={pool!r}, mode={mode!r}; use impl='xp' or 'auto'")
    if not (isinstance(x, np.ndarray) and x.dtype in cpu.VALUE_DTYPES):
        return TypeError(f"{func}: impl='cpu' takes NumPy float32 or float64 x, got "
                         f"{type(x).__name__} {getattr(x, 'dtype', '')}; use impl='xp' or "
                         f"'auto'")
    if x.shape[2] * x.shape[3] > 2**31:
        return ValueError(f"{func}: impl='cpu' needs maps of at most 2**31 cells (int32 "
                          f"argmax), got {x.shape[2]}x{x.shape[3]}; use impl='xp' or 'auto'")
    if not cpu.available():
        return RuntimeError(f"{func}: impl='cpu' needs the compiled kernel, which is "
                            f"unavailable here ({cpu.why_unavailable()}); use impl='xp'")
    return None


def _whole_maps(N, H, W):
    """One region per image covering its whole map: rows ``[n, 0, 0, W - 1, H - 1]``."""
    rois = np.zeros((N, 5), dtype=np.int64)
    rois[:, 0], rois[:, 3], rois[:, 4] = np.arange(N), W - 1, H - 1
    return rois


def _cpu_forward(x, levels, mode, pool, func):
    """Max SPP of whole maps by ``tinyspp/kernels/region_max.cpp``: each image is one region
    (adaptive bins of a region are the bins of the map: ``tinyspp.bins``)."""
    from ..kernels import cpu

    refusal = _cpu_refusal(x, mode, pool, func)
    if refusal is not None:
        raise refusal
    N, _, H, W = x.shape
    out, argmax = cpu.pool_max(x, _whole_maps(N, H, W), np.arange(N), levels, mode)
    return out, argmax.astype(np.int32)  # the documented dtype (the kernel's: uint16 or int32)


# --- helpers shared with region pooling ------------------------------------------------------

def channel_of_column(levels, C, xp=np):
    """Channel index of every output column, shape (D,) int64 (the channel-major layout)."""
    chans = [np.repeat(np.arange(C, dtype=np.int64), n * n) for n in levels]
    return xp.asarray(np.concatenate(chans))


def first_max(candidates):
    """Elementwise max over a list of same-shape arrays and the index of the first maximum.

    NaN-sticky: a NaN candidate is the maximum and the first NaN wins. Returns ``(m, k)``: ``m``
    the maximum, ``k`` (uint8, or int32 for 256+ candidates) the index of the first candidate
    equal to it. No data-dependent branches per element: ``k`` counts the leading misses.
    """
    xp = get_array_module(candidates[0])
    kdtype = np.uint8 if len(candidates) < 256 else np.int32
    if len(candidates) == 1:
        return candidates[0].copy(), xp.zeros(candidates[0].shape, dtype=kdtype)
    m = xp.maximum(candidates[0], candidates[1])  # propagates NaN
    for v in candidates[2:]:
        xp.maximum(m, v, out=m)
    # NumPy: a NaN-free maximum (the usual case) skips one pass per candidate; CuPy always takes
    # the NaN-aware pass, since asking the device whether m has a NaN would stall the host
    has_nan = xp is not np or bool(xp.isnan(m).any())

    def miss(v):  # v is not the bin's value: differs from m, or (NaN bin) is not NaN itself
        out = v != m
        if has_nan:
            out &= v == v
        return out

    # k = number of leading misses: the first candidate equal to the maximum
    not_found = miss(candidates[0])
    k = not_found.astype(kdtype)
    for v in candidates[1:-1]:
        not_found &= miss(v)
        k += not_found
    return m, k


def padded_index(starts, ends):
    """``(n, L)`` int64: row ``i`` lists ``starts[i] .. ends[i]-1``, padded with ``starts[i]``."""
    starts, ends = np.asarray(starts), np.asarray(ends)
    L = int((ends - starts).max())
    k = np.arange(L)[None, :]
    return np.where(k < (ends - starts)[:, None], starts[:, None] + k, starts[:, None])


def gather(a, index, axis):
    """``a`` indexed with the int vector ``index`` along ``axis`` (0 or 1): a strided view when
    ``index`` is an arithmetic progression (common for pyramid bins), a gathered copy otherwise."""
    xp = get_array_module(a)
    index = np.asarray(index)
    step = int(index[1] - index[0]) if index.size > 1 else 1
    if step > 0 and np.array_equal(np.diff(index), np.full(index.size - 1, step)):
        sl = slice(int(index[0]), int(index[-1]) + 1, step)
    else:
        sl = xp.asarray(index)
    return a[sl] if axis == 0 else a[:, sl]


def level_edges(table):
    """Per level ``(n, ys, ye, xs, xe)``: the row and column bin edges as (n,) int64 arrays."""
    m0 = 0
    for n in table.levels:
        ys = table.y0[m0:m0 + n * n:n]
        ye = table.y1[m0:m0 + n * n:n]
        xs, xe = table.x0[m0:m0 + n], table.x1[m0:m0 + n]
        yield n, ys, ye, xs, xe
        m0 += n * n


def _channel_last(x):
    """(N, C, H, W) -> contiguous (H, W, N*C) (one transposing copy; NumPy: split over H)."""
    N, C, H, W = x.shape
    xp = get_array_module(x)
    xt = xp.empty((H, W, N, C), dtype=x.dtype)
    if xp is np:
        split_copyto(xt, x.transpose(2, 3, 0, 1), axis=0)
    else:
        xp.copyto(xt, x.transpose(2, 3, 0, 1))
    return xt.reshape(H, W, N * C)


def _to_output(levels_out, N, C):
    """List of per-level channel-last ``(n, n, N*C)`` arrays -> ``(N, C * sum n*n)``."""
    xp = get_array_module(levels_out[0])
    sizes = [v.shape[0] * v.shape[1] for v in levels_out]
    out = xp.empty((N, C * sum(sizes)), dtype=levels_out[0].dtype)
    parts, off = [], 0
    for v, m in zip(levels_out, sizes):  # level block out[:, off:off+C*m] as (N, C, m)
        parts.append((out[:, off:off + C * m].reshape(N, C, m), v.reshape(m, N, C)))
        off += C * m

    def copy(n0, n1):
        for block, v in parts:
            xp.copyto(block[n0:n1], v[:, n0:n1].transpose(1, 2, 0))

    if xp is np:
        parallel_slices(copy, N, out.size)
    else:
        copy(0, N)
    return out


def _from_output(dout, table, N, C):
    """Inverse of ``_to_output``: per level ``(n, n, N*C)`` arrays of ``dout (N, D)``."""
    xp = get_array_module(dout)
    parts, off = [], 0
    for n in table.levels:
        d = dout[:, off:off + C * n * n].reshape(N * C, n * n)
        parts.append(xp.ascontiguousarray(d.T).reshape(n, n, N * C))
        off += C * n * n
    return parts


NEST = True  # merge nested adaptive levels from a finer one (tests set False: the plain twin)


def _max_forward(x, table, mode="adaptive"):
    xp = get_array_module(x)
    N, C, H, W = x.shape
    NC = N * C
    xt = _channel_last(x)  # (H, W, NC)
    edges = {n: (ys, ye, xs, xe) for n, ys, ye, xs, xe in level_edges(table)}
    # finest first; a level whose bins are unions of a computed level's bins merges those
    # (adaptive (6, 3, 2, 1): 3 and 2 from 6, 1 from 2) instead of scanning the map again
    plan = level_plan(table.levels, mode) if NEST else [(n, None) for n in edges]
    values = {n: xp.empty((n, n, NC), dtype=x.dtype) for n in edges}
    argmax = {n: xp.empty((n, n, NC), dtype=np.int32) for n in edges}

    def pool(c0, c1):  # channels c0..c1-1 of the (H, W, N*C) map (NumPy: on threads)
        for n, parent in plan:
            v, a = values[n][:, :, c0:c1], argmax[n][:, :, c0:c1]
            if parent is None:
                ys, ye, xs, xe = edges[n]
                _level_max(xt[:, :, c0:c1], n, ys, xs, padded_index(xs, xe),
                           padded_index(ys, ye), v, a)
            else:
                _merge_level(values[parent][:, :, c0:c1], argmax[parent][:, :, c0:c1], v, a)

    if xp is np:
        parallel_slices(pool, NC, H * W * NC)  # the elements scanned
    else:
        pool(0, NC)
    levels = table.levels
    return (_to_output([values[n] for n in levels], N, C),
            _to_output([argmax[n] for n in levels], N, C))


def _merge_level(vp, ap, v_out, a_out):
    """Level ``n`` from a finer level ``m`` (``m % n == 0``) whose ``r x r`` bins (r = m / n)
    tile each of its bins: values ``vp (m, m, nc)`` and flat argmax ``ap``.

    A bin's first maximum in row-major order is, among its sub-bins' first maxima, the one of
    largest value and, on ties, of smallest flat index ``h*W + w`` (row-major order inside a
    rectangle is the map's); NaN beats every number and the first NaN is the smallest index.
    """
    n, nc = v_out.shape[0], v_out.shape[2]
    r = vp.shape[0] // n
    v6, a6 = vp.reshape(n, r, n, r, nc), ap.reshape(n, r, n, r, nc)
    _select_first([v6[:, i, :, j] for i in range(r) for j in range(r)],
                  [a6[:, i, :, j] for i in range(r) for j in range(r)], v_out, a_out)


def _select_first(values, indices, v_out, a_out):
    """``v_out`` = the elementwise max of ``values`` (NaN-sticky), ``a_out`` = the smallest of
    ``indices`` among the candidates holding it (NaN: among the NaN candidates)."""
    xp = get_array_module(v_out)
    xp.copyto(v_out, values[0])
    for v in values[1:]:
        xp.maximum(v_out, v, out=v_out)
    nan = xp.isnan(v_out) if xp is not np or bool(np.isnan(v_out).any()) else None
    big = np.int32(1 << 30)  # above every flat index h*W + w this op produces
    a_out[...] = big
    miss = xp.empty(v_out.shape, dtype=bool)
    cand = xp.empty(v_out.shape, dtype=np.int32)
    for v, a in zip(values, indices):
        xp.not_equal(v, v_out, out=miss)
        if nan is not None:
            miss &= ~(nan & xp.isnan(v))
        xp.multiply(miss, big, out=cand)
        cand += a
        xp.minimum(a_out, cand, out=a_out)


def _level_max(xt, n, ys, xs, cols, rows, v_out, a_out):
    """One level on channel-last ``xt (H, W, nc)``: bin maxima into ``v_out (n, n, nc)`` and
    their flat ``h*W + w`` into ``a_out``."""
    xp = get_array_module(xt)
    H, W = xt.shape[:2]
    # width first: the first maximal column of every row inside each column bin
    vw, kw = first_max([gather(xt, cols[:, k], 1) for k in range(cols.shape[1])])
    # as a flat index h*W + w of the map: (H, n, nc) int32
    fw = kw.astype(np.int32)
    fw += xp.asarray((np.arange(H)[:, None] * W + xs[None, :]).astype(np.int32))[:, :, None]
    # then height: of the row maxima holding the bin's maximum, the first row (the smallest
    # flat index: rows come in order, and the padding repeats the first row)
    _select_first([gather(vw, rows[:, k], 0) for k in range(rows.shape[1])],
                  [gather(fw, rows[:, k], 0) for k in range(rows.shape[1])], v_out, a_out)


def level_divisors(table):
    """Per level the ``(n, n, 1)`` divisors of average pooling (``table.area``: the bin's area,
    or in ``caffe`` mode Caffe's ``pool_size``, the window clipped to the padded extent)."""
    m0 = 0
    for n in table.levels:
        if table.area is None:  # a table built without divisors: the bins' areas
            ys, ye = table.y0[m0:m0 + n * n], table.y1[m0:m0 + n * n]
            xs, xe = table.x0[m0:m0 + n * n], table.x1[m0:m0 + n * n]
            area = (ye - ys) * (xe - xs)
        else:
            area = table.area[m0:m0 + n * n]
        yield np.asarray(area).reshape(n, n, 1)
        m0 += n * n


def _avg_forward(x, table):
    xp = get_array_module(x)
    N, C, H, W = x.shape
    xt = _channel_last(x)
    values = []
    for (_n, ys, ye, xs, xe), area in zip(level_edges(table), level_divisors(table)):
        vw = xp.stack([xt[:, s:e].sum(axis=1) for s, e in zip(xs, xe)], axis=1)  # (H, n, NC)
        v = xp.stack([vw[s:e].sum(axis=0) for s, e in zip(ys, ye)], axis=0)  # (n, n, NC)
        values.append(v / xp.asarray(area, dtype=x.dtype))
    return _to_output(values, N, C)


def _avg_backward(dout, table, shape):
    xp = get_array_module(dout)
    N, C, H, W = shape
    dxt = xp.zeros((H, W, N * C), dtype=dout.dtype)
    for (n, ys, ye, xs, xe), area, g in zip(level_edges(table), level_divisors(table),
                                             _from_output(dout, table, N, C)):
        g = g / xp.asarray(area, dtype=dout.dtype)
        dvw = xp.zeros((H, n, N * C), dtype=dout.dtype)
        for i, (s, e) in enumerate(zip(ys, ye)):
            dvw[s:e] += g[i]
        for j, (s, e) in enumerate(zip(xs, xe)):
            dxt[:, s:e] += dvw[:, j:j + 1]
    return xp.ascontiguousarray(dxt.reshape(H, W, N, C).transpose(2, 3, 0, 1))
