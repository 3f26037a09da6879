"""Input validation shared by the public entry points.

Every check raises ``TypeError`` or ``ValueError`` whose message names the function, the argument,
what was expected and what was given, e.g.
``spp_forward: x must be 4-D (N, C, H, W), got shape (3, 32)``.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from .backend import asnumpy, get_array_module


def check_array(x, name: str, func: str, ndim: int | None = None, layout: str = "",
                floating: bool = True):
    """Check that ``x`` is a NumPy/CuPy array of the right ndim (and floating dtype).

    Returns ``x.shape``.
    """
    xp = get_array_module(x)
    if not isinstance(x, xp.ndarray):
        raise TypeError(f"{func}: {name} must be a numpy or cupy ndarray, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        what = f"{ndim}-D {layout}".rstrip()
        raise ValueError(f"{func}: {name} must be {what}, got shape {tuple(x.shape)}")
    if floating and not np.issubdtype(x.dtype, np.floating):
        raise TypeError(
            f"{func}: {name} must have a floating dtype (float32 or float64), got {x.dtype}"
        )
    return tuple(x.shape)


def check_nchw(x, name: str, func: str):
    """Check a floating (N, C, H, W) array with no zero-length axis; return ``N, C, H, W``."""
    shape = check_array(x, name, func, ndim=4, layout="(N, C, H, W)")
    if min(shape) < 1:
        raise ValueError(f"{func}: {name} must have no empty axis, got shape {shape}")
    return shape


def check_int(v, name: str, func: str, minimum: int = 1) -> int:
    """Check an integer argument (Python or NumPy int, not bool) that is ``>= minimum``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{func}: {name} must be an integer, got {v!r}")
    if v < minimum:
        raise ValueError(f"{func}: {name} must be >= {minimum}, got {v}")
    return int(v)


def check_levels(levels, func: str, name: str = "levels") -> tuple[int, ...]:
    """Check a non-empty sequence of positive bin counts per side; return it as a tuple."""
    if isinstance(levels, numbers.Integral) and not isinstance(levels, bool):
        levels = (levels,)
    try:
        levels = tuple(levels)
    except TypeError:
        raise TypeError(
            f"{func}: {name} must be a sequence of positive ints, got {levels!r}"
        ) from None
    if not levels:
        raise ValueError(f"{func}: {name} must not be empty (e.g. (6, 3, 2, 1))")
    return tuple(check_int(n, f"{name}[{i}]", func) for i, n in enumerate(levels))


def check_choice(value, name: str, func: str, choices) -> str:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{func}: {name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_rois(rois, features_shape, func: str):
    """Validate ``rois (R, 5)`` against ``features (N, C, H, W)``; return it as int64 on the host.

    Rows are ``[batch_index, x0, y0, x1, y1]``, inclusive feature-map cells. NumPy or CuPy input
    (a CuPy array is copied to the host once, here). The one RoI validator of the library, used
    by ``tinyspp.ops.roi_spp_forward`` and the kernel wrappers alike. Raises TypeError/ValueError
    naming ``func``, the first offending row and what is wrong with it.

    >>> check_rois(np.array([[0, 1, 1, 2, 3]], dtype=np.int32), (1, 8, 4, 4), "f").dtype
    dtype('int64')
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
    host = np.ascontiguousarray(host, dtype=np.int64)
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


# What each implementation name runs (the ops' ``impl`` argument; see tinyspp.ops.roi):
IMPLS = {
    "auto": "pick for the input (see each op)",
    "xp": "array operations: NumPy, or CuPy on the GPU",
    "cpu": "the compiled C++ kernel tinyspp/kernels/region_max.cpp (max pooling of regions, or "
           "of whole maps in adaptive mode; NumPy float32/float64)",
    "cuda": "the CUDA kernels tinyspp/kernels/pyramid_pool.cu on the GPU (CuPy arrays)",
    "emulate": "pyramid_pool.cu compiled as C++ and run thread by thread on the CPU (NumPy "
               "arrays): a test harness, about 1000x slower than 'cpu'",
}


def check_impl(impl, func: str, choices, xp=np) -> str:
    """Check an ``impl`` argument against ``choices`` for arrays of module ``xp``; return it.

    The old name ``"kernel"`` still works with a DeprecationWarning: it means ``"cuda"`` for CuPy
    arrays and ``"emulate"`` for NumPy arrays. ``"cuda"`` needs CuPy arrays and ``"emulate"``
    NumPy arrays (a ValueError says which to use instead).

    >>> check_impl("xp", "f", ("auto", "xp"))
    'xp'
    """
    if impl == "kernel":
        impl = "emulate" if xp is np else "cuda"
        warnings.warn(f"{func}: impl='kernel' is deprecated; on these arrays it means "
                      f"impl={impl!r} ({IMPLS[impl]})", DeprecationWarning, stacklevel=3)
    check_choice(impl, "impl", func, choices)
    if impl == "cuda" and xp is np:
        raise ValueError(f"{func}: impl='cuda' runs on CuPy arrays, got NumPy arrays; use "
                         "impl='emulate' to run the same kernel on the CPU (a slow test "
                         "harness), or impl='auto'")
    if impl in ("emulate", "cpu") and xp is not np:
        raise ValueError(f"{func}: impl={impl!r} runs on NumPy arrays, got CuPy arrays; use "
                         "impl='cuda' (or 'auto') on the GPU")
    return impl
