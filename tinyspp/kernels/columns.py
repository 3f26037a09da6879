"""The compiled im2col and col2im of ``tinyspp.ops.conv``: ``columns.cpp`` and its glue.

``tinyspp.ops.im2col`` and ``col2im`` call :func:`im2col` and :func:`col2im` here for NumPy
float32/float64 arrays when the library builds (``impl="auto"``, or ``impl="cpu"``); the NumPy
code in ``tinyspp/ops/conv.py`` is the readable twin, and the tests check that the two agree
bit for bit. The ``.cpp`` file says why the loops are faster. The library is compiled once per
machine and cached (:mod:`tinyspp.kernels.build`), with the same flags as ``region_max.cpp``.
The calls release the GIL (ctypes does), so the image blocks of a convolution gather and
scatter on several threads at once.
"""

from __future__ import annotations

import numpy as np

from .build import CppKernels

SOURCE_NAME = "columns.cpp"
VALUE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
# pointer, then 64-bit integers, in the order of the C signatures
_ARGS = {"im2col": "pqqqqqqqqqqpq", "col2im": "pqqqqqqqqqqqqp"}


_KERNELS = CppKernels("columns", SOURCE_NAME, _ARGS, who="tinyspp.kernels.columns",
                      why="the CPU im2col/col2im kernels are C++ compiled on first use")
# entry_points(); library() (RuntimeError without a C++ compiler); available() (builds on
# the first call; False: use the NumPy twin); why_unavailable() (why it answered False)
entry_points, library, available, why_unavailable = _KERNELS.api()
_UNAVAILABLE = _KERNELS.state.reasons


def fits(x) -> bool:
    """Whether the kernels take this array: NumPy, float32 or float64."""
    return isinstance(x, np.ndarray) and x.dtype in VALUE_DTYPES


def strided_ok(a, rows_major: bool = False) -> bool:
    """Whether the kernels can read (or, ``rows_major``, write) the 2-D NumPy array ``a``
    through its strides: all positive multiples of the element size, and for ``rows_major``
    unit-stride rows (a block of whole columns of a row-major matrix)."""
    if not (isinstance(a, np.ndarray) and a.ndim == 2
            and all(st > 0 and st % a.itemsize == 0 for st in a.strides)):
        return False
    rows, ncols = a.shape
    return not rows_major or ((a.strides[1] == a.itemsize or ncols <= 1)
                              and (a.strides[0] >= ncols * a.itemsize or rows <= 1))


def _block(cols, rows: int, ncols: int, dtype, name: str, rows_major: bool = True):
    """``(ld, cs)``: the element strides of ``cols``, a (rows, ncols) matrix of ``dtype`` whose
    element (r, q) is at ``r*ld + q*cs`` (:func:`strided_ok`); TypeError otherwise."""
    if not (isinstance(cols, np.ndarray) and cols.dtype == dtype
            and cols.shape == (rows, ncols) and strided_ok(cols, rows_major)):
        got = (f"{type(cols).__name__} {getattr(cols, 'dtype', '')} {getattr(cols, 'shape', '')}"
               f" strides {getattr(cols, 'strides', '')}")
        what = "block of whole columns, shape" if rows_major else "matrix of shape"
        raise TypeError(f"tinyspp.kernels.columns: {name} must be a {np.dtype(dtype)} {what} "
                        f"({rows}, {ncols}) with positive strides" + (
                            " of a row-major matrix" if rows_major else "") + f"; got {got}")
    if rows_major:
        return (cols.strides[0] // cols.itemsize if rows > 1 else ncols), 1
    return cols.strides[0] // cols.itemsize, cols.strides[1] // cols.itemsize


def _checked_image(a, name: str, dtype, shape=None):
    if not (isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous
            and a.ndim == 4 and (shape is None or a.shape == tuple(shape))):
        want = f" of shape {tuple(shape)}" if shape is not None else " (N, C, H, W)"
        raise TypeError(f"tinyspp.kernels.columns: {name} must be a C-contiguous "
                        f"{np.dtype(dtype)} NumPy array{want}, got "
                        f"{type(a).__name__} {getattr(a, 'dtype', '')} {getattr(a, 'shape', '')}")


def im2col(x, kh: int, kw: int, stride: int, pad: int, oh: int, ow: int, out) -> None:
    """Fill ``out (C*kh*kw, N*oh*ow)`` with the columns of ``x (N, C, H, W)`` (C-contiguous);
    ``out`` may be a block of whole columns of a larger row-major matrix."""
    _checked_image(x, "x", x.dtype if fits(x) else np.float64)
    N, C, H, W = x.shape
    ld, _ = _block(out, C * kh * kw, N * oh * ow, x.dtype, "out")
    getattr(library(), f"im2col_{_SUFFIX[x.dtype]}")(
        x.ctypes.data, N, C, H, W, kh, kw, stride, pad, oh, ow, out.ctypes.data, ld)


def col2im(cols, kh: int, kw: int, stride: int, pad: int, oh: int, ow: int, dx) -> None:
    """Overwrite ``dx (N, C, H, W)`` (C-contiguous) with the sums of ``cols (C*kh*kw, N*oh*ow)``
    (any matrix with positive strides: a block of whole columns, or a transposed array)."""
    _checked_image(dx, "dx", dx.dtype if fits(dx) else np.float64)
    N, C, H, W = dx.shape
    ld, cs = _block(cols, C * kh * kw, N * oh * ow, dx.dtype, "cols", rows_major=False)
    getattr(library(), f"col2im_{_SUFFIX[dx.dtype]}")(
        cols.ctypes.data, ld, cs, N, C, H, W, kh, kw, stride, pad, oh, ow, dx.ctypes.data)
