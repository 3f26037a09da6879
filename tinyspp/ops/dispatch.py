"""``array_module``: pick NumPy or CuPy for an op, naming the arguments when they disagree.

``tinyspp.backend.get_array_module`` refuses a mix of NumPy and CuPy arrays; this wrapper adds
which argument lives where, so the error says what to move.

>>> import numpy as np
>>> array_module("linear_forward", x=np.ones(2), w=np.ones(2)) is np
True
"""

from __future__ import annotations

from ..backend import get_array_module, is_gpu_array


def array_module(func: str, **arrays):
    """``numpy`` or ``cupy`` for the keyword ``arrays``; TypeError naming each one's module."""
    try:
        return get_array_module(*arrays.values())
    except TypeError:
        where = ", ".join(
            f"{name} is {'cupy' if is_gpu_array(a) else 'numpy'}"
            for name, a in arrays.items() if a is not None and hasattr(a, "shape")
        )
        raise TypeError(
            f"{func}: arrays must all be NumPy or all CuPy, got {where}; move them to one "
            "device first (tinyspp.backend.to_device, or layer/net .to(device))"
        ) from None
