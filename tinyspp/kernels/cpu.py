"""The CPU kernel of region pyramid max pooling: ``region_max.cpp`` and its glue.

``tinyspp.ops.roi_spp_forward`` calls :func:`pool_max` for NumPy arrays and ``pool="max"``
(``impl="cpu"``, or ``impl="auto"`` when this kernel is available) and :func:`pool_max_backward`
from ``roi_spp_backward``; the ``.cpp`` file explains the algorithm. This module computes what the
kernel is given (bin edges with the library's one bin rule, ``tinyspp.bins.many_bin_edges``; the
order of levels, ``tinyspp.bins.level_plan``), compiles and loads the library
(:mod:`tinyspp.kernels.build`: once per machine, cached on disk, healed when broken), checks
every array before its pointer reaches C++, and calls the two entry points. The argmax it writes
is the region-pooling argmax format of ``tinyspp.ops.roi``, in ``argmax_dtype(H * W)``.

The library is built with ``-O3``, never ``-ffast-math`` (NaN must propagate), and with
``-mavx2`` when this x86-64 CPU has AVX2 (as NumPy reports it): eight float32 channels per
instruction instead of four, about 1.3x faster. The flags are part of the cached file's name, so
machines with different CPUs sharing a cache folder each get their own build.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from ..bins import level_plan, many_bin_edges
from .build import Availability, bind, cache_dir, find_compiler, shared_library
from .common import kernel_source

SOURCE_NAME = "region_max.cpp"
FLAGS = ("-O3", "-std=c++14", "-shared", "-fPIC")
PLAN_COLUMNS = 5  # n, col_off, edge_off, bin_off, parent (see region_max.cpp)

# the parameters of each entry point in region_max.cpp: p a pointer, q a 64-bit integer
SIGNATURES = {"roi_max_forward": "pqqqppqqpqpqppq", "roi_max_backward": "ppppqqqpqp"}

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64",
           np.dtype(np.uint16): "u16", np.dtype(np.int32): "i32"}
VALUE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def argmax_dtype(HW: int):
    """The argmax element type for maps of ``HW`` cells: uint16 up to 65536 cells (the usual
    conv5 maps; half the memory of int32), else int32."""
    if HW > 2**31:
        raise ValueError(f"tinyspp.kernels.cpu: maps of at most 2**31 cells, got {HW}")
    return np.dtype(np.uint16) if HW <= 2**16 else np.dtype(np.int32)


OPTIONAL_FLAGS = {"AVX2": "-mavx2", "FMA3": "-mfma", "AVX512F": "-mavx512f"}  # a CPU feature ->
# the flag that uses it


def flags(features: tuple[str, ...] = ("AVX2",)) -> tuple[str, ...]:
    """Compiler flags for this machine: ``FLAGS``, plus the flag of each of ``features``
    (``OPTIONAL_FLAGS``: ``-mavx2``, ``-mfma``, ``-mavx512f``) that this CPU has, as NumPy
    reports it.

    ``-mfma`` lets the compiler fuse a multiply and an add into one instruction (one rounding
    instead of two): the convolution kernels ask for it, the pooling kernels, which never
    multiply, do not."""
    unknown = sorted(set(features) - set(OPTIONAL_FLAGS))
    if unknown:
        raise ValueError(f"tinyspp.kernels.cpu.flags: features must be among "
                         f"{sorted(OPTIONAL_FLAGS)}, got {unknown}")
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as have
    except ImportError:
        try:  # NumPy 1.x
            from numpy.core._multiarray_umath import __cpu_features__ as have
        except ImportError:  # a build without the table: stay portable
            have = {}
    return FLAGS + tuple(OPTIONAL_FLAGS[name] for name in features if have.get(name))


def entry_points() -> dict[str, str]:
    """Every entry point a good build exports, with its ctypes signature."""
    return {f"{name}_{value}_{arg}": signature for value in ("f32", "f64")
            for name, signature in SIGNATURES.items() for arg in ("u16", "i32")}


def symbols() -> list[str]:
    """The entry points a good build exports."""
    return list(entry_points())


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The compiled kernel (RuntimeError without a C++ compiler); built once per machine."""
    lib = shared_library("region_max", kernel_source(SOURCE_NAME), flags(), cache_dir(),
                         find=lambda: find_compiler(),  # looked up when called (patchable)
                         who="tinyspp.kernels.cpu",
                         why="the CPU region-pooling kernel is C++ compiled on first use",
                         symbols=symbols())
    return bind(lib, entry_points())


_STATE = Availability(lambda: library())  # looked up when called (tests patch library)
available = _STATE.available  # () -> bool: builds on the first call; False: use NumPy
why_unavailable = _STATE.why_unavailable  # () -> str: why available() answered False
_UNAVAILABLE = _STATE.reasons


def _pointer(a, name, dtype, shape):
    if not (isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous
            and a.shape == tuple(shape)):
        got = f"{type(a).__name__} {getattr(a, 'dtype', '')} {getattr(a, 'shape', '')}"
        raise TypeError(f"tinyspp.kernels.cpu: {name} must be a C-contiguous NumPy "
                        f"{np.dtype(dtype)} array of shape {tuple(shape)}, got {got}")
    return ctypes.c_void_p(a.ctypes.data)


def _call(entry, dtype, arg_dtype, args):
    fn = getattr(library(), f"{entry}_{_SUFFIX[np.dtype(dtype)]}_{_SUFFIX[np.dtype(arg_dtype)]}")
    fn(*(a if isinstance(a, ctypes.c_void_p) else int(a) for a in args))


def roi_max_forward(xt, batch, edges, rowmap, plan, out, argmax):
    """The raw call: fill ``out (R, D)`` and ``argmax (U, D)`` of ``argmax_dtype(H*W)``
    (layouts: ``region_max.cpp``).

    ``xt (N, H, W, C)`` float32/float64 channel-last features; ``batch (U,)``, ``edges (U, E)``,
    ``rowmap (R,)`` and ``plan (L, 5)`` int64. Rows of ``rowmap`` must lie in ``[0, U)``, batch
    indices in ``[0, N)`` and the edges inside the map (the caller validated the RoIs).
    """
    N, H, W, C = xt.shape
    dtype = xt.dtype
    if dtype not in VALUE_DTYPES:
        raise TypeError(f"tinyspp.kernels.cpu: xt must be float32 or float64, got {dtype}")
    arg_dtype = argmax_dtype(H * W)
    U, R, L = len(batch), len(rowmap), len(plan)
    D = C * int((plan[:, 0] ** 2).sum())
    i64 = np.int64
    args = [_pointer(xt, "xt", dtype, (N, H, W, C)), H, W, C,
            _pointer(batch, "batch", i64, (U,)), _pointer(edges, "edges", i64, (U, edges.shape[1])),
            U, edges.shape[1], _pointer(rowmap, "rowmap", i64, (R,)),
            R, _pointer(plan, "plan", i64, (L, PLAN_COLUMNS)), L,
            _pointer(out, "out", dtype, (R, D)), _pointer(argmax, "argmax", arg_dtype, (U, D)),
            int(bool(np.isnan(xt).any()))]  # NaN-free maps take the one-comparison loops
    _call("roi_max_forward", dtype, arg_dtype, args)


def roi_max_backward(dout, argmax, rowmap, batch, plan, dx):
    """The raw call: ``dx (N, C, H, W) += dout (R, D)`` at every output's maximum, in place.

    ``argmax (U, D)``, ``batch (U,)``, ``rowmap (R,)`` and ``plan (L, 5)`` as given to (and
    filled by) ``roi_max_forward``.
    """
    R, D = dout.shape
    U, L = len(batch), len(plan)
    N, C, H, W = dx.shape
    dtype = dout.dtype
    if dtype not in VALUE_DTYPES:
        raise TypeError(f"tinyspp.kernels.cpu: dout must be float32 or float64, got {dtype}")
    arg_dtype = argmax_dtype(H * W)
    i64 = np.int64
    args = [_pointer(dout, "dout", dtype, (R, D)), _pointer(argmax, "argmax", arg_dtype, (U, D)),
            _pointer(rowmap, "rowmap", i64, (R,)), _pointer(batch, "batch", i64, (U,)), R, C,
            H * W, _pointer(plan, "plan", i64, (L, PLAN_COLUMNS)), L,
            _pointer(dx, "dx", dtype, (N, C, H, W))]
    _call("roi_max_backward", dtype, arg_dtype, args)


def kernel_plan(levels, mode, C):
    """``(plan (L, 5), scan)`` for ``region_max.cpp``: one row per entry of ``levels`` in
    evaluation order (``tinyspp.bins.level_plan``'s, finest first),
    ``[n, col_off, edge_off, bin_off, source]`` with ``source`` the plan row it merges (a finer
    level it nests in, or the first copy of a repeated level) or -1 to scan cells; and the
    levels whose bins are scanned."""
    col_off = np.cumsum([0] + [C * n * n for n in levels])[:-1]
    rows, row_of, scan, edge_off, bin_off = [], {}, [], 0, 0
    for n, parent in level_plan(levels, mode):
        for k in [k for k, m in enumerate(levels) if m == n]:
            source = row_of.get(n, -1 if parent is None else row_of[parent])
            rows.append([n, col_off[k], edge_off if source < 0 else 0, bin_off, source])
            if source < 0:
                scan.append(n)
                edge_off += 4 * n
            row_of.setdefault(n, len(rows) - 1)
            bin_off += n * n
    return np.array(rows, dtype=np.int64).reshape(-1, 5), scan


def pool_max(features, rois, rowmap, levels, mode):
    """Region max pooling of the distinct ``rois (U, 5)`` (validated, int64); output row ``r`` is
    RoI ``rowmap[r]`` (identical RoIs are pooled once and their row copied).

    Returns ``out (R, D)`` in the dtype of ``features`` (float32/float64) and ``argmax (U, D)``
    in ``argmax_dtype(H * W)``: the region-pooling argmax format.
    """
    N, C, H, W = features.shape
    U = len(rois)
    plan, scan = kernel_plan(levels, mode, C)
    b, x0, y0, x1, y1 = rois.T
    edges = []  # per scanned level: ys, ye, xs, xe (U, n) each, absolute
    for n in scan:
        ys, ye = many_bin_edges(y1 - y0 + 1, n, mode)
        xs, xe = many_bin_edges(x1 - x0 + 1, n, mode)
        edges += [y0[:, None] + ys, y0[:, None] + ye, x0[:, None] + xs, x0[:, None] + xe]
    edges = np.ascontiguousarray(np.concatenate(edges, axis=1), dtype=np.int64)
    D = C * sum(n * n for n in levels)
    out = np.empty((len(rowmap), D), dtype=features.dtype)
    argmax = np.empty((U, D), dtype=argmax_dtype(H * W))
    xt = np.ascontiguousarray(features.transpose(0, 2, 3, 1))  # channel-last (N, H, W, C)
    roi_max_forward(xt, np.ascontiguousarray(b), edges, rowmap, plan, out, argmax)
    return out, argmax


def pool_max_backward(dout, argmax, rois, rowmap, features_shape, levels, mode):
    """``dfeatures (N, C, H, W)``: every ``dout (R, D)`` entry added at its maximum, one loop.
    Accumulates in ``dout``'s precision (float32/float64; others in float64)."""
    N, C, H, W = features_shape
    dtype = dout.dtype if dout.dtype in VALUE_DTYPES else np.dtype(np.float64)
    dout = np.ascontiguousarray(dout, dtype=dtype)
    dx = np.zeros((N, C, H, W), dtype=dtype)
    roi_max_backward(dout, argmax, rowmap, np.ascontiguousarray(rois[:, 0]),
                     kernel_plan(levels, mode, C)[0], dx)
    return dx
