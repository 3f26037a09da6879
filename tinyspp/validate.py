"""Input validation shared by the public entry points.

Every check raises ``TypeError`` or ``ValueError`` whose message names the function, the argument,
what was expected and what was given, e.g.
``spp_forward: x must be 4-D (N, C, H, W), got shape (3, 32)``.
"""

from __future__ import annotations

import numbers

import numpy as np

from .backend import get_array_module


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
