"""Region pyramid pooling: SPP of every region of interest of a feature map (He et al., Sec. 4).

``roi_spp_forward(features, rois)`` pools each RoI ``[b, x0, y0, x1, y1]`` (inclusive feature-map
cells of image ``b``) into a fixed-length vector. By definition (a tested contract) row ``r`` is

    spp_forward(features[b:b+1, :, y0:y1+1, x0:x1+1], levels, mode, pool)[0][0]

and the argmax is absolute within image ``b``'s (H, W) plane.

Three implementations, picked by ``impl``; all give bitwise the same max pooling:

* ``"cpu"``: a compiled C++ kernel (``tinyspp/kernels/region_max.cpp``, built on first use with
  the machine's C++ compiler and cached, see ``tinyspp.kernels.cpu``): the map channel-last, each
  level-6 bin scanned once with SIMD compare-and-select over the channels, coarser levels merged
  from finer ones (step 3 below), backward one loop of ``dx[argmax] += dout``. Max pooling of
  NumPy arrays; what ``"auto"`` takes there when a compiler is available (set the environment
  variable ``TINYSPP_CPU_KERNEL=0`` to make ``"auto"`` use the NumPy path instead).
* ``"xp"``: array operations only, NumPy or CuPy, described below; also average pooling.
* ``"kernel"``: the CUDA kernel (``"auto"`` for CuPy arrays), or its CPU emulation for NumPy.

How the ``"xp"`` path pools two thousand regions without a Python loop over them (steps 1 and 2
live in ``tinyspp.ops.rectmax``):

1. Keys. Every cell gets an integer key ``rank << bits | (2**bits - 1 - h*W - w)`` where ``rank``
   is the dense rank of its value within its (image, channel) plane (NaN ranks highest). The
   largest key of a rectangle is its maximum, ties going to the smallest flat index, i.e. the first
   maximum in row-major order, and NaN is sticky: exactly the SPP rule, as one integer ``max``.
2. Sparse table. ``T[a, b][y, x]`` is the max key of the ``2**a x 2**b`` block at ``(y, x)``, built
   on demand by doubling, laid out channel-last ``(N, H', W', C)``. Any bin of height ``h`` and
   width ``w`` is covered by four (possibly overlapping) blocks with ``2**a <= h < 2**(a+1)``: its
   max key is the max of four look-ups, each moving one contiguous ``C``-vector. Overlap is
   harmless: the keys already carry the tie rule.
3. Nesting. With adaptive bins, bin ``i`` of level ``n`` is exactly the union of bins
   ``i*m/n .. (i+1)*m/n - 1`` of level ``m`` when ``n`` divides ``m``; so of (6, 3, 2, 1) only
   level 6 needs look-ups, the coarser levels take the max of their sub-bins' keys.
4. Decode. The low bits of the winning key give the flat index of the maximum; the value is read
   from ``features`` there, so it is bitwise the element ``spp_forward`` returns.

Identical RoIs are pooled once (``unique_rows``) and scattered back (on the max path
only when at least a quarter of the rows are duplicates: below that, scattering shared keys back
costs more than it saves, and rows are looked up directly, with identical results). Backward is one
scatter-add (``np.add.at``) over the flat (image, channel, h, w) index of every output, which
also sums the gradients of identical RoIs (the kernel and average paths sum them explicitly
first). Average pooling uses an integral image in float64 (equal to ``spp_forward`` up to
rounding, not bitwise).

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

from __future__ import annotations

import functools
import os
import warnings
from typing import NamedTuple

import numpy as np

from ..backend import asnumpy, get_array_module
from ..bins import DEFAULT_LEVELS, bin_edges
from ..validate import check_array, check_nchw
from .rectmax import key_dtypes, plane_keys, window_max
from .spp import channel_of_column, check_spp_args


class RoISPPCache(NamedTuple):
    """What ``roi_spp_backward`` needs from ``roi_spp_forward``."""

    features_shape: tuple  # (N, C, H, W)
    levels: tuple
    mode: str
    pool: str
    impl: str  # the path taken: "xp", "kernel" or "cpu"
    rois: object  # (U, 5) int64 distinct RoIs actually pooled (host array)
    inverse: object  # (R,) int64 row of ``rois`` for each input RoI; None when all were distinct
    index: object  # (R, D) int64 flat index into ``features`` of each maximum (max, xp path)
    kernel_argmax: object  # (U, D) argmax of the kernel paths (CUDA int64; cpu uint16/int32)
    dtype: object

    @property
    def argmax(self):
        """(R, D) flat ``h*W + w`` of each maximum within its image's plane; None for avg."""
        N, C, H, W = self.features_shape
        if self.index is not None:
            return (self.index % (H * W)).astype(np.int32 if H * W < 2**31 else np.int64)
        arg = self.kernel_argmax
        if self.impl == "cpu":  # the cpu kernel's compact form: bins-major levels, uint16
            from ..kernels import cpu

            arg = arg[:, cpu.argmax_layout(self.levels, C)].astype(np.int32)
        if arg is None or self.inverse is None:
            return arg
        return arg[get_array_module(arg).asarray(self.inverse)]


def roi_spp_forward(features, rois, levels=DEFAULT_LEVELS, mode="adaptive", pool="max",
                    impl="auto"):
    """Spatial pyramid pooling of every region of interest.

    Parameters
    ----------
    features : ndarray of shape (N, C, H, W), floating
    rois : integer ndarray of shape (R, 5)
        Rows ``[batch_index, x0, y0, x1, y1]``: inclusive cells ``0 <= x0 <= x1 < W``,
        ``0 <= y0 <= y1 < H`` of image ``batch_index`` in ``[0, N)``. ``R`` may differ from ``N``
        and may be 0.
    levels, mode, pool
        As in ``spp_forward``.
    impl : {"auto", "xp", "kernel", "cpu"}
        ``"cpu"``: the compiled CPU kernel (NumPy, ``pool="max"``); ``"kernel"``: the CUDA
        kernel (its CPU emulation for NumPy; ``mode="adaptive"`` only); ``"xp"``: array
        operations. ``"auto"``: the CUDA kernel for CuPy inputs in adaptive mode, the CPU kernel
        for NumPy max pooling when a C++ compiler is available (a one-time warning says when it
        is not), else ``"xp"``.

    Returns
    -------
    out : ndarray of shape (R, D), D = C * sum(n*n), dtype of features
        Row ``r`` equals ``spp_forward`` of RoI ``r``'s crop (bitwise for max pooling).
    cache : RoISPPCache
    """
    func = "roi_spp_forward"
    N, C, H, W = check_nchw(features, "features", func)
    levels = check_spp_args(levels, mode, pool, impl, func, ROI_IMPLS)
    xp = get_array_module(features, rois)
    rois = check_rois(rois, (N, C, H, W), func)
    D = C * sum(n * n for n in levels)
    path = _choose_path(impl, xp, mode, pool, H * W, features.dtype, func)
    if len(rois) == 0:
        empty = xp.zeros((0, D), dtype=features.dtype)
        index = None if pool == "avg" else xp.zeros((0, D), dtype=np.int64)
        return empty, RoISPPCache((N, C, H, W), levels, mode, pool, "xp", rois, None, index,
                                  None, features.dtype)
    check_roi_bins(rois, levels, mode, func)
    uniq, inverse = unique_rows(rois, (N, H, W))
    if len(uniq) == len(rois):
        uniq, inverse = rois, None  # nothing to share: keep the caller's order, skip the scatter
    index = kernel_argmax = None
    if path == "cpu":  # the compiled CPU kernel writes every row itself, duplicates included
        out, kernel_argmax = _cpu_max_forward(features, uniq, inverse, levels, mode)
    elif path == "kernel":
        from .. import kernels

        out, kernel_argmax = kernels.roi_spp_forward(xp.ascontiguousarray(features),
                                                     xp.asarray(uniq), levels, pool)
    elif pool == "max" and inverse is not None and 4 * (len(rois) - len(uniq)) < len(rois):
        # few duplicates: sharing their keys costs a pass over every output (the scatter back)
        # and saves less than that, so every row is looked up directly
        out, index = _max_forward(features, rois, None, levels, mode)
    elif pool == "max":  # max keys found once per distinct RoI, decoded for every row
        out, index = _max_forward(features, uniq, inverse, levels, mode)
    else:
        out = _avg_forward(features, uniq, levels, mode)
    if inverse is not None and index is None and path != "cpu":  # one row per distinct RoI
        out = out[xp.asarray(inverse)]
    cache = RoISPPCache((N, C, H, W), levels, mode, pool, path, uniq, inverse, index,
                        kernel_argmax, features.dtype)
    return out, cache


ROI_IMPLS = ("auto", "xp", "kernel", "cpu")


def _choose_path(impl, xp, mode, pool, HW, dtype, func):
    """The implementation that runs: "kernel" (CUDA, or its CPU emulation for NumPy), "cpu"
    (the compiled CPU kernel, max pooling of NumPy arrays) or "xp" (array operations)."""
    if impl == "kernel" and mode != "adaptive":
        raise ValueError(f"{func}: impl='kernel' supports mode='adaptive' only, got mode={mode!r}; "
                         "use impl='xp' (or 'auto') for other bin rules")
    if impl == "cpu":
        if xp is not np:
            raise ValueError(f"{func}: impl='cpu' runs on NumPy arrays, got CuPy features; use "
                             "impl='kernel' (or 'auto') on the GPU")
        if pool != "max":
            raise ValueError(f"{func}: impl='cpu' supports pool='max' only, got pool={pool!r}; "
                             "use impl='xp' (or 'auto')")
        if HW > 2**31:
            raise ValueError(f"{func}: impl='cpu' needs H*W <= 2**31 (int32 argmax), got {HW}")
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"{func}: impl='cpu' needs float32 or float64 features, got {dtype}; "
                             "use impl='xp' (or 'auto')")
        return "cpu"
    if impl == "auto":
        if xp is not np:
            return "kernel" if mode == "adaptive" else "xp"
        if (pool == "max" and HW <= 2**31 and dtype in (np.float32, np.float64)
                and os.environ.get("TINYSPP_CPU_KERNEL", "1") != "0"):
            from ..kernels import cpu

            if cpu.available():
                return "cpu"
            _warn_no_cpu_kernel()
        return "xp"
    return impl


@functools.cache
def _warn_no_cpu_kernel():
    warnings.warn("tinyspp: no C++ compiler, so region max pooling uses the NumPy path (several "
                  "times slower than the compiled CPU kernel); install g++ or set CXX to speed "
                  "it up (TINYSPP_CPU_KERNEL=0 silences this)", UserWarning, stacklevel=4)


def roi_spp_backward(dout, cache):
    """Gradient of ``roi_spp_forward`` with respect to ``features``.

    Parameters
    ----------
    dout : ndarray of shape (R, D)
    cache : RoISPPCache

    Returns
    -------
    dfeatures : ndarray of shape (N, C, H, W), dtype of the forward's features
        Zeros when there are no RoIs. Gradients of identical RoIs are summed before scattering.
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
    if cache.index is not None:  # xp max path: one scatter; it also sums identical RoIs
        dx = scatter_max_grad(dout, cache)
        return dx.astype(cache.dtype, copy=False)
    if cache.impl == "cpu":  # one loop; identical RoIs share an argmax row, gradients add up
        return _cpu_max_backward(dout, cache)
    if cache.inverse is not None:  # identical RoIs: sum their gradients, scatter once
        dout = sum_duplicates(dout, cache.inverse, len(cache.rois))
    if cache.impl == "kernel":
        from .. import kernels

        dx = kernels.roi_spp_backward(xp.ascontiguousarray(dout), cache.kernel_argmax,
                                      xp.asarray(cache.rois), cache.features_shape,
                                      cache.levels, cache.pool)
    else:
        dx = _avg_backward(dout, cache)
    return dx.astype(cache.dtype, copy=False)


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
    rows = xp.asarray(np.flatnonzero(occurrence == 0))
    dsum[xp.asarray(inverse)[rows]] = dout[rows]  # every RoI occurs once with k = 0
    for k in range(1, int(occurrence.max()) + 1):
        rows = xp.asarray(np.flatnonzero(occurrence == k))
        dsum[xp.asarray(inverse)[rows]] += dout[rows]
    return dsum


# --- validation ------------------------------------------------------------------------------

def check_rois(rois, features_shape, func):
    """Validate ``rois (R, 5)`` against ``features (N, C, H, W)``; return it as int64 on the host.

    Raises ValueError naming the first offending row and what is wrong with it.
    """
    N, C, H, W = features_shape
    xp = get_array_module(rois)
    if not isinstance(rois, xp.ndarray):
        raise TypeError(f"{func}: rois must be a numpy or cupy ndarray, got {type(rois).__name__}")
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"{func}: rois must have shape (R, 5) with rows [batch_index, x0, y0, "
                         f"x1, y1], got shape {tuple(rois.shape)}")
    host = asnumpy(rois)
    if not np.issubdtype(host.dtype, np.integer):
        frac = np.flatnonzero(np.any(host != np.round(host), axis=1)) if host.size else []
        where = f"; row {frac[0]} is {host[frac[0]].tolist()}" if len(frac) else ""
        raise ValueError(f"{func}: rois must have an integer dtype (feature-map cells), got "
                         f"{host.dtype}{where}; map boxes to cells first (tinyspp.detect)")
    host = host.astype(np.int64, copy=False)
    b, x0, y0, x1, y1 = host.T
    problems = [
        ((b < 0) | (b >= N), f"batch_index outside [0, {N})"),
        (x1 < x0, "x1 < x0 (inverted)"),
        (y1 < y0, "y1 < y0 (inverted)"),
        ((x0 < 0) | (x1 >= W), f"x0..x1 outside the map's columns [0, {W - 1}]"),
        ((y0 < 0) | (y1 >= H), f"y0..y1 outside the map's rows [0, {H - 1}]"),
    ]
    bad = np.zeros(len(host), dtype=bool)
    for mask, _ in problems:
        bad |= mask
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        what = "; ".join(msg for mask, msg in problems if mask[r])
        raise ValueError(f"{func}: rois row {r} = {host[r].tolist()} is invalid: {what} "
                         f"(features have shape {tuple(features_shape)}, rows are [batch_index, "
                         "x0, y0, x1, y1], inclusive cells)")
    return host


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


# --- bins of many RoIs at once ---------------------------------------------------------------

def roi_bin_edges(start, size, n, mode):
    """Absolute ``(starts, ends)`` of the n bins of each RoI along one axis, shape (U, n) each.

    Same integer formulas as ``tinyspp.bins.bin_edges``, vectorised over RoIs.
    """
    i = np.arange(n)[None, :]
    a = size[:, None]
    if mode == "adaptive":
        s, e = (i * a) // n, ((i + 1) * a + n - 1) // n
    elif mode == "paper":
        win, stride = -(-a // n), a // n
        s, e = i * stride, i * stride + win
    else:  # caffe
        k = -(-a // n)
        pad = (k * n - a + 1) // 2
        s, e = np.maximum(i * k - pad, 0), np.minimum(i * k - pad + k, a)
    return start[:, None] + s, start[:, None] + e


def _level_bins(rois, n, mode):
    """Bins of level n for every RoI as flat (U*n*n,) arrays in (u, by, bx) order."""
    b, x0, y0, x1, y1 = rois.T
    ys, ye = roi_bin_edges(y0, y1 - y0 + 1, n, mode)
    xs, xe = roi_bin_edges(x0, x1 - x0 + 1, n, mode)
    shape = (len(rois), n, n)
    grid = lambda v, axis: np.broadcast_to(np.expand_dims(v, axis), shape).reshape(-1)
    return (np.repeat(b, n * n), grid(ys, 2), grid(ye, 2), grid(xs, 1), grid(xe, 1))


def _plan(levels, mode):
    """Order of evaluation: for each level, the finer computed level it nests in (or None)."""
    plan, done = [], []
    for n in sorted(set(levels), reverse=True):
        parents = [m for m in done if m % n == 0] if mode == "adaptive" else []
        plan.append((n, min(parents) if parents else None))
        done.append(n)
    return plan


# --- max pooling -----------------------------------------------------------------------------

def _max_forward(features, rois, inverse, levels, mode):
    """Max keys of the distinct ``rois`` (U, 5); decoded for every row ``inverse`` (R,) names
    (``None``: the rows are ``rois`` themselves). Returns ``out (R, D)`` and ``index (R, D)``.

    Memory: the two results are allocated first and double as scratch. The keys of every bin,
    (U, n*n, C) per level, are exactly as many 32-bit words as ``out`` and live in it until the
    values overwrite them; the window tables are built in ``index`` before it is decoded into.
    Fresh buffers of a few hundred MB cost page faults on every call, so this saves a sizeable
    part of the run time.
    """
    xp = get_array_module(features)
    N, C, H, W = features.shape
    HW = H * W
    U, R = len(rois), len(rois) if inverse is None else len(inverse)
    D = C * sum(n * n for n in levels)
    cell_keys = plane_keys(features)
    kdtype, half = key_dtypes(HW)
    out = xp.empty((R, D), dtype=features.dtype)
    index = xp.empty((R, D), dtype=np.int64)  # intp: the scatter's own index type
    share = inverse is None and np.dtype(kdtype).itemsize == out.itemsize
    store = out.view(kdtype).reshape(-1) if share else None
    offsets = dict(zip(levels, np.cumsum([0] + [U * n * n * C for n in levels]).tolist()))

    def slot(n):  # where the (U, n, n, C) keys of level n go (None: a new array)
        return None if store is None else store[offsets[n]:offsets[n] + U * n * n * C]

    keys = {}  # level n -> (U, n, n, C) max keys
    for n, parent in _plan(levels, mode):
        where = slot(n)
        if parent is None:
            scratch = index.view(kdtype).reshape(-1)
            got = window_max(cell_keys, *_level_bins(rois, n, mode), scratch=scratch,
                             out=None if where is None else where.reshape(U * n * n, C))
            keys[n] = got.reshape(U, n, n, C)
        else:
            f = parent // n
            parts = keys[parent].reshape(U, n, f, n, f, C)
            keys[n] = parts.max(axis=(2, 4), out=None if where is None else
                                where.reshape(U, n, n, C))
    if inverse is not None:  # identical RoIs share their keys
        keys = {n: xp.take(k, xp.asarray(inverse), axis=0) for n, k in keys.items()}
        rois, U = rois[inverse], len(inverse)
    # decode, straight into the output layout (U, C, n*n) per level:
    # index = (b*C + c)*H*W + h*W + w  with  h*W + w = 2**bits - 1 - (low half of the key)
    low_at = 0 if np.little_endian else 1  # which half of a native key is the low one
    top = 2 ** (8 * np.dtype(half).itemsize) - 1
    column = channel_of_column(levels, C) * HW + top  # (D,) c*H*W + top
    images = rois[:, 0]
    single = bool((images == images[0]).all())  # one image (the usual case): one pass
    if single:
        column = column + int(images[0]) * C * HW
    off = 0
    for n in levels:
        low = keys[n].reshape(U, n * n, C).view(half)[:, :, low_at::2]  # (U, n*n, C) view
        view = index[:, off:off + C * n * n].reshape(U, C, n * n)
        xp.subtract(xp.asarray(column[off:off + C * n * n].reshape(C, n * n)),
                    low.transpose(0, 2, 1), out=view)
        off += C * n * n
    if not single:
        index += xp.asarray(images * C * HW)[:, None]
    del keys  # the values overwrite them
    flat = features.reshape(-1)
    if xp is np:  # every index is in range: "wrap" skips the bounds check (and its copy of out)
        np.take(flat, index, out=out, mode="wrap")
    else:
        xp.take(flat, index, out=out)
    return out, index


def _cpu_plan(levels, mode, C):
    """``(plan (L, 5), scan)`` for ``region_max.cpp``: one row per entry of ``levels`` in
    evaluation order (``_plan``'s, finest first), ``[n, col_off, edge_off, bin_off, source]``
    with ``source`` the plan row it merges (a finer level it nests in, or the first copy of a
    repeated level) or -1 to scan cells; and the levels whose bins are scanned."""
    col_off = np.cumsum([0] + [C * n * n for n in levels])[:-1]
    rows, row_of, scan, edge_off, bin_off = [], {}, [], 0, 0
    for n, parent in _plan(levels, mode):
        for k in [k for k, m in enumerate(levels) if m == n]:
            source = row_of.get(n, -1 if parent is None else row_of[parent])
            rows.append([n, col_off[k], edge_off if source < 0 else 0, bin_off, source])
            if source < 0:
                scan.append(n)
                edge_off += 4 * n
            row_of.setdefault(n, len(rows) - 1)
            bin_off += n * n
    return np.array(rows, dtype=np.int64).reshape(-1, 5), scan


def _rowmap(inverse, U):
    """The distinct RoI of every output row, int64 (R,): ``inverse``, or ``0..U-1`` when None."""
    if inverse is None:
        return np.arange(U, dtype=np.int64)
    return np.ascontiguousarray(inverse, dtype=np.int64)


def _cpu_max_forward(features, rois, inverse, levels, mode):
    """The compiled CPU kernel (``tinyspp/kernels/region_max.cpp``) on the distinct ``rois``;
    output rows follow ``inverse`` (identical RoIs are pooled once and their row copied).
    Returns ``out (R, D)`` and the ``argmax (U, D)`` of the distinct RoIs (uint16 for maps of
    up to 65536 cells, else int32: ``tinyspp.kernels.cpu.argmax_dtype``)."""
    from ..kernels import cpu

    N, C, H, W = features.shape
    U = len(rois)
    rowmap = _rowmap(inverse, U)
    plan, scan = _cpu_plan(levels, mode, C)
    b, x0, y0, x1, y1 = rois.T
    edges = []  # per scanned level: ys, ye, xs, xe (U, n) each
    for n in scan:
        edges += [*roi_bin_edges(y0, y1 - y0 + 1, n, mode),
                  *roi_bin_edges(x0, x1 - x0 + 1, n, mode)]
    edges = np.ascontiguousarray(np.concatenate(edges, axis=1), dtype=np.int64)
    D = C * sum(n * n for n in levels)
    out = np.empty((len(rowmap), D), dtype=features.dtype)
    argmax = np.empty((U, D), dtype=cpu.argmax_dtype(H * W))
    xt = np.ascontiguousarray(features.transpose(0, 2, 3, 1))  # channel-last (N, H, W, C)
    cpu.roi_max_forward(xt, np.ascontiguousarray(b), edges, rowmap, plan, out, argmax)
    return out, argmax


def _cpu_max_backward(dout, cache):
    """``roi_spp_backward`` of the CPU kernel path: one loop of ``dx[argmax] += dout``."""
    from ..kernels import cpu

    N, C, H, W = cache.features_shape
    dtype = dout.dtype if dout.dtype in (np.float32, np.float64) else np.float64
    dout = np.ascontiguousarray(dout, dtype=dtype)  # accumulate in dout's precision, like xp
    dx = np.zeros((N, C, H, W), dtype=dtype)
    cpu.roi_max_backward(dout, cache.kernel_argmax, _rowmap(cache.inverse, len(cache.rois)),
                         np.ascontiguousarray(cache.rois[:, 0]),
                         _cpu_plan(cache.levels, cache.mode, C)[0], dx)
    return dx.astype(cache.dtype, copy=False)


def scatter_max_grad(dout, cache):
    """Max backward: every ``dout`` entry added at its maximum's flat index, in one scatter.

    ``np.add.at`` with accumulator and weights of one dtype takes NumPy's fast path (about twice
    as fast as ``bincount``, which converts everything to float64); float32 gradients therefore
    accumulate in float32, as in the deep-learning frameworks.
    """
    xp = get_array_module(dout)
    N, C, H, W = cache.features_shape
    dx = xp.zeros(N * C * H * W, dtype=dout.dtype)
    xp.add.at(dx, cache.index.ravel(), dout.ravel())
    return dx.reshape(N, C, H, W)


# --- average pooling -------------------------------------------------------------------------

def _avg_forward(features, rois, levels, mode):
    """Bin means from float64 integral images; non-finite cells are counted separately so a NaN
    or inf only affects the bins that contain it."""
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
        b, ys, ye, xs, xe = _level_bins(rois, n, mode)
        box = lambda S, b=b, ys=ys, ye=ye, xs=xs, xe=xe: box_sums(S, b, ys, ye, xs, xe)
        area = xp.asarray(((ye - ys) * (xe - xs)).astype(np.float64))[:, None]
        mean = box(sums[0]) / area  # (U*n*n, C)
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


def _avg_backward(dout, cache):
    """Each bin's ``dout / area`` added over its cells: corners of a 2-D difference array
    (four bincounts), then two cumulative sums. The prefix sums leave ~1e-16 residues where
    contributions cancel, so cells no bin covers (an exact integer count) are set to 0."""
    xp = get_array_module(dout)
    N, C, H, W = cache.features_shape
    U = len(cache.rois)
    acc = xp.zeros((N * (H + 1) * (W + 1) * C,), dtype=np.float64)
    cover = xp.zeros((N * (H + 1) * (W + 1),), dtype=np.int64)
    off = 0
    for n in cache.levels:
        b, ys, ye, xs, xe = _level_bins(cache.rois, n, cache.mode)
        g = dout[:, off:off + C * n * n].reshape(U, C, n * n).transpose(0, 2, 1).reshape(-1, C)
        g = g / xp.asarray(((ye - ys) * (xe - xs)).astype(np.float64))[:, None]
        for y, x, sign in ((ys, xs, 1), (ys, xe, -1), (ye, xs, -1), (ye, xe, 1)):
            cell = xp.asarray((b * (H + 1) + y) * (W + 1) + x)
            idx = (cell[:, None] * C + xp.arange(C)[None, :]).ravel()
            acc += xp.bincount(idx, weights=(sign * g).ravel(), minlength=acc.size)
            cover += sign * xp.bincount(cell, minlength=cover.size)
        off += C * n * n
    dx = acc.reshape(N, H + 1, W + 1, C).cumsum(1).cumsum(2)[:, :H, :W]
    covered = cover.reshape(N, H + 1, W + 1).cumsum(1).cumsum(2)[:, :H, :W] > 0
    dx = xp.where(covered[..., None], dx, 0.0)
    return xp.ascontiguousarray(dx.transpose(0, 3, 1, 2))
