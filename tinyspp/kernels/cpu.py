"""The CPU kernel for region pyramid max pooling: ``region_max.cpp``, compiled once, via ctypes.

``tinyspp.ops.roi_spp_forward`` uses it for NumPy arrays and ``pool="max"`` (``impl="auto"``
when a C++ compiler is available, or ``impl="cpu"``); the file explains the algorithm. This
module only compiles and loads the library (:mod:`tinyspp.kernels.build`: once per machine,
cached on disk), checks every array before its pointer reaches C++, and calls the two entry
points. The bins come from the caller (``tinyspp.ops.roi`` computes them with the library's bin
rule), so the kernel is bin-mode agnostic.

The library is built with ``-O3``, never ``-ffast-math`` (NaN must propagate), and with
``-mavx2`` when this x86-64 CPU has AVX2 (as NumPy reports it): eight float32 channels per
instruction instead of four, about 1.3x faster. The flags are part of the cached file's name, so
machines with different CPUs sharing a cache folder each get their own build.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.resources

import numpy as np

from .build import cache_dir, find_compiler, shared_library

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


def source() -> str:
    """The text of ``region_max.cpp`` (package data next to this module)."""
    return importlib.resources.files(__package__).joinpath(SOURCE_NAME).read_text()


def flags() -> tuple[str, ...]:
    """Compiler flags for this machine: ``FLAGS``, plus ``-mavx2`` where the CPU has AVX2."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        try:  # NumPy 1.x
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:  # a build without the table: stay portable
            features = {}
    return FLAGS + (("-mavx2",) if features.get("AVX2") else ())


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The compiled kernel (RuntimeError without a C++ compiler); built once per machine."""
    lib = shared_library("region_max", source(), flags(), cache_dir(),
                         find=lambda: find_compiler(),  # looked up when called (patchable)
                         who="tinyspp.kernels.cpu",
                         why="the CPU region-pooling kernel is C++ compiled on first use")
    ctype = {"p": ctypes.c_void_p, "q": ctypes.c_longlong}
    for value in ("f32", "f64"):
        for name, signature in SIGNATURES.items():
            for arg in ("u16", "i32"):
                fn = getattr(lib, f"{name}_{value}_{arg}")
                fn.restype = None
                fn.argtypes = [ctype[k] for k in signature]
    return lib


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether the kernel can run here (compiles it on the first call; cached)."""
    try:
        library()
    except (RuntimeError, OSError):
        return False
    return True


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
    """Fill ``out (R, D)`` and ``argmax (U, D)`` of ``argmax_dtype(H*W)`` (layouts:
    ``region_max.cpp``).

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
    """``dx (N, C, H, W) += dout (R, D)`` at every output's maximum, in place.

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


def argmax_layout(levels, C):
    """Where each output column's argmax is: ``at (D,)`` int64, the entry of an argmax row
    (each level bins-major, ``bin * C + c``) holding column ``j``'s (each level channel-major,
    ``c * n*n + bin``). ``argmax[:, at]`` is the argmax in the output's layout."""
    at, off = [], 0
    for n in levels:
        c, k = np.divmod(np.arange(C * n * n, dtype=np.int64), n * n)  # column j = c * n*n + k
        at.append(off + k * C + c)
        off += C * n * n
    return np.concatenate(at)
