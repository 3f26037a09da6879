"""The compiled ReLU passes and max pooling: ``passes.cpp`` and its glue.

``tinyspp.ops.relu_forward`` / ``relu_backward`` and ``max_pool2d_forward`` / ``_backward``
call these for C-contiguous NumPy float32/float64 arrays when the library builds (the ops'
``PASSES_IMPL = "auto"``); the NumPy code of the ops is the readable twin, and the tests check
that both give the same numbers bit for bit (the pooling forward: the same winners, and the
value at the winner as output). The ``.cpp`` file says why one loop beats NumPy's several
passes.
Compiled once per machine and cached (:mod:`tinyspp.kernels.build`), with the flags of
``columns.cpp``. The calls release the GIL (ctypes does), so slices of a batch run on several
threads at once (``tinyspp.ops.dispatch.parallel_slices``): every function here takes a range
of elements or of image planes.
"""

from __future__ import annotations

import numpy as np

from .build import CppKernels

SOURCE_NAME = "passes.cpp"
VALUE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_ARGS = {"relu_forward": "pqpp", "relu_backward": "ppqp", "pool_forward": "pqqqqqqqpp",
         "pool_backward": "ppqqqqqqqp"}
MAX_WINDOW = 16  # the winner is a uint8 offset: windows up to 16 x 16


_KERNELS = CppKernels("passes", SOURCE_NAME, _ARGS, who="tinyspp.kernels.passes",
                      why="the CPU ReLU and pooling loops are C++ compiled on first use")
# entry_points(); library() (RuntimeError without a C++ compiler); available() (builds on
# the first call; False: use the NumPy twin); why_unavailable() (why it answered False)
entry_points, library, available, why_unavailable = _KERNELS.api()


def fits(*arrays) -> bool:
    """Whether the passes take these arrays: C-contiguous NumPy arrays, the first float32 or
    float64 (the others are its companions: same dtype or uint8 masks)."""
    return (all(isinstance(a, np.ndarray) and a.flags.c_contiguous for a in arrays)
            and arrays[0].dtype in VALUE_DTYPES)


def _check(a, name: str, dtype, size: int | None = None) -> None:
    if not (isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous
            and (size is None or a.size >= size)):
        want = f" of at least {size} elements" if size is not None else ""
        raise TypeError(f"tinyspp.kernels.passes: {name} must be a C-contiguous {np.dtype(dtype)}"
                        f" NumPy array{want}, got {type(a).__name__} {getattr(a, 'dtype', '')} "
                        f"{getattr(a, 'shape', '')}")


def _fn(name: str, dtype):
    return getattr(library(), f"{name}_{_SUFFIX[np.dtype(dtype)]}")


def _at(a, start: int) -> int:
    """The address of element ``start`` of the flat C-contiguous array ``a``."""
    return a.ctypes.data + start * a.itemsize


def relu_forward(x, out, mask, start: int, stop: int) -> None:
    """Elements ``start:stop`` of the flattened arrays: ``out = max(x, 0)``, ``mask = x > 0``
    (``mask`` a bool or uint8 array)."""
    _check(x, "x", x.dtype if fits(x) else np.float32)
    _check(out, "out", x.dtype, x.size)
    _check(mask.view(np.uint8), "mask", np.uint8, x.size)
    _fn("relu_forward", x.dtype)(_at(x, start), stop - start, _at(out, start),
                                 _at(mask, start))


def relu_backward(dout, mask, dx, start: int, stop: int) -> None:
    """Elements ``start:stop``: ``dx = mask ? dout : +0.0``."""
    _check(dout, "dout", dout.dtype if fits(dout) else np.float32)
    _check(mask.view(np.uint8), "mask", np.uint8, dout.size)
    _check(dx, "dx", dout.dtype, dout.size)
    _fn("relu_backward", dout.dtype)(_at(dout, start), _at(mask, start), stop - start,
                                     _at(dx, start))


def pool_forward(x, ksize: int, stride: int, out, winner, p0: int, p1: int) -> None:
    """Image planes ``p0:p1`` of ``x (N, C, H, W)``: ``out (N, C, oh, ow)`` = every window's
    maximum, ``winner`` (uint8) = the offset of its first maximum (of its first NaN, if any)."""
    _check(x, "x", x.dtype if fits(x) else np.float32)
    N, C, H, W = x.shape
    oh, ow = out.shape[2:]
    _check(out, "out", x.dtype, N * C * oh * ow)
    _check(winner, "winner", np.uint8, N * C * oh * ow)
    _check_windows(H, W, ksize, stride, oh, ow)
    _fn("pool_forward", x.dtype)(_at(x, p0 * H * W), p1 - p0, H, W, ksize, stride, oh, ow,
                                 _at(out, p0 * oh * ow), _at(winner, p0 * oh * ow))


def pool_backward(dout, winner, ksize: int, stride: int, dx, p0: int, p1: int) -> None:
    """Image planes ``p0:p1``: ``dx (N, C, H, W)`` = 0, plus every window's ``dout`` at its
    winner (windows in row-major order)."""
    N, C, H, W = dx.shape
    oh, ow = dout.shape[2:]
    _check(dout, "dout", dout.dtype if fits(dout) else np.float32)
    _check(winner, "winner", np.uint8, N * C * oh * ow)
    _check(dx, "dx", dout.dtype, N * C * H * W)
    _check_windows(H, W, ksize, stride, oh, ow)
    _fn("pool_backward", dout.dtype)(_at(dout, p0 * oh * ow), _at(winner, p0 * oh * ow),
                                     p1 - p0, H, W, ksize, stride, oh, ow, _at(dx, p0 * H * W))


def windows_inside(H: int, W: int, ksize: int, stride: int, oh: int, ow: int) -> bool:
    """Whether the pooling loops apply: every window inside the image, uint8 offsets."""
    return (1 <= ksize <= MAX_WINDOW and stride >= 1 and oh >= 1 and ow >= 1
            and (oh - 1) * stride + ksize <= H and (ow - 1) * stride + ksize <= W)


def _check_windows(H, W, ksize, stride, oh, ow) -> None:
    if not windows_inside(H, W, ksize, stride, oh, ow):
        raise ValueError(f"tinyspp.kernels.passes: {oh}x{ow} windows of {ksize}x{ksize}, "
                         f"stride {stride}, do not all lie inside a {H}x{W} image (or the "
                         f"window is larger than {MAX_WINDOW}x{MAX_WINDOW})")
