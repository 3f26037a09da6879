"""The compiled direct convolution of layers with few input channels: ``direct.cpp`` and its glue.

``tinyspp.ops.conv2d_forward`` calls :func:`forward` here for NumPy float32/float64
convolutions with stride 1, at most ``tinyspp.ops.conv.DIRECT_MAX_CHANNELS`` input channels and
kernels at most ``MAX_KERNEL`` wide (:func:`takes`), when the library builds, and
``conv2d_backward`` calls :func:`weight_grad` for those with at most
``DIRECT_DW_MAX_CHANNELS`` (a network's first layer, whose im2col + GEMM is mostly memory
traffic: the ``.cpp`` file says why). im2col + one GEMM stays the readable
algorithm; the tests compare the two. The library is compiled once per machine and cached
(:mod:`tinyspp.kernels.build`) with ``-mfma`` where the CPU has FMA3. The calls release the GIL
(ctypes does), so the image blocks of a convolution run on several threads at once.
"""

from __future__ import annotations

import numpy as np

from .build import CppKernels, array_pointer

SOURCE_NAME = "direct.cpp"
MAX_KERNEL = 7  # widest kernel the weight-gradient loop is compiled for (a template argument)
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
# pointer, then 64-bit integers, in the order of the C signatures
_ARGS = {"conv_direct_forward": "pqqqqpqqqqpp", "conv_direct_dw": "pqqqqpqqqqp"}

_KERNELS = CppKernels("direct", SOURCE_NAME, _ARGS, who="tinyspp.kernels.direct",
                      why="the CPU direct convolution is C++ compiled on first use",
                      features=("AVX2", "FMA3"))
# entry_points(); library() (RuntimeError without a C++ compiler); available() (builds on
# the first call; False: use im2col + GEMM); why_unavailable() (why it answered False)
entry_points, library, available, why_unavailable = _KERNELS.api()
flags = _KERNELS.flags
_UNAVAILABLE = _KERNELS.state.reasons


def takes(x, w, stride: int) -> bool:
    """Whether the kernels compute this convolution: NumPy ``x`` and ``w`` of one dtype
    (float32 or float64), stride 1, a kernel at most ``MAX_KERNEL`` wide."""
    return (isinstance(x, np.ndarray) and isinstance(w, np.ndarray) and x.dtype in _SUFFIX
            and w.dtype == x.dtype and stride == 1 and w.ndim == 4 and w.shape[3] <= MAX_KERNEL)


def _checked(a, name: str, dtype, shape) -> int:
    return array_pointer(a, "tinyspp.kernels.direct", name, dtype, shape)


def _geometry(x, F: int, kh: int, kw: int, pad: int):
    if not (isinstance(x, np.ndarray) and x.dtype in _SUFFIX and x.ndim == 4):
        raise TypeError(f"tinyspp.kernels.direct: x must be a float32 or float64 NumPy array "
                        f"(N, C, H, W), got {type(x).__name__} {getattr(x, 'dtype', '')}")
    N, C, H, W = x.shape
    if kw > MAX_KERNEL:
        raise ValueError(f"tinyspp.kernels.direct: kernels at most {MAX_KERNEL} wide, got {kw}")
    oh, ow = H + 2 * pad - kh + 1, W + 2 * pad - kw + 1
    if min(oh, ow) < 1:
        raise ValueError(f"tinyspp.kernels.direct: the {kh}x{kw} kernel does not fit "
                         f"{H}x{W} with pad={pad}")
    return N, C, H, W, F, kh, kw, oh, ow


def forward(x, w, b, pad: int, out) -> None:
    """``out (N, F, oh, ow) = conv(x, w, stride 1, pad) + b``, all C-contiguous, one dtype."""
    F, _, kh, kw = w.shape
    N, C, H, W, F, kh, kw, oh, ow = _geometry(x, F, kh, kw, pad)
    t = x.dtype
    getattr(library(), f"conv_direct_forward_{_SUFFIX[t]}")(
        _checked(x, "x", t, (N, C, H, W)), N, C, H, W, _checked(w, "w", t, (F, C, kh, kw)),
        F, kh, kw, pad, _checked(b, "b", t, (F,)), _checked(out, "out", t, (N, F, oh, ow)))


def weight_grad(x, dout, kh: int, kw: int, pad: int, dw) -> None:
    """``dw (F, C, kh, kw) +=`` the weight gradient of the images of ``x`` for ``dout``, image
    after image (so the sum does not depend on how a batch is cut into calls)."""
    N, C, H, W, F, kh, kw, oh, ow = _geometry(x, dw.shape[0], kh, kw, pad)
    t = x.dtype
    getattr(library(), f"conv_direct_dw_{_SUFFIX[t]}")(
        _checked(x, "x", t, (N, C, H, W)), N, C, H, W,
        _checked(dout, "dout", t, (N, F, oh, ow)), F, kh, kw, pad,
        _checked(dw, "dw", t, (F, C, kh, kw)))
