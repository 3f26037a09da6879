"""The channel-blocked direct convolution of deeper layers: ``blocked.cpp`` and its glue.

``tinyspp.ops.conv2d_forward`` runs a stride-1 convolution with at least
``tinyspp.ops.conv.BLOCKED_MIN_CHANNELS`` input channels and filters here (NumPy float32 or
float64, a square kernel with ``pad <= k - 1``) when the library builds with AVX-512
(:func:`fast`), and ``conv2d_backward`` its weight and input gradients. The ``.cpp`` file says
how and why; im2col + one GEMM stays the readable algorithm, and the tests compare the two.

The steps, each over tinyspp's threads (ctypes releases the GIL; every output element is
computed by one task, so no result depends on the number of threads):

1. :func:`pack_input`: ``x (N, C, H, W)`` to ``xb (N, Cb, H + 2*pad, W + 2*pad, B)``, zero
   padded, ``B`` channels (64 bytes) innermost;
2. :func:`pack_weights`: ``w (F, C, kh, kw)`` to ``(Fb, Cb, kh, kw, B, B)``, and
   :func:`turn_weights` from those to the blocks of the input gradient's filters;
3. :func:`forward`: the convolution, blocked in and out;
4. :func:`unpack_output` back to NCHW; :func:`weight_grad` and :func:`unpack_weights` for dw.

Where the CPU lacks AVX-512 the file still compiles (its 64-byte vectors then run as several
narrower ones), the tests run it there, but ``conv2d_forward`` keeps im2col + GEMM (``fast()``
is False).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .build import CppKernels, array_pointer

SOURCE_NAME = "blocked.cpp"
VECTOR_BYTES = 64  # one channel block: B = 16 float32 or 8 float64 channels (VBYTES in .cpp)
FILTER_TILE = 2  # filter blocks per register tile (G in the .cpp): the forward's task size
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
# pointer, then 64-bit integers, in the order of the C signatures
_ARGS = {
    "blocked_forward": "pqqqqpqqqppqq",
    "blocked_dw": "pqqqqpqqqqqqpqqqqp",
    "blocked_pack_input": "pqqqqqpqq",
    "blocked_unpack_output": "pqqqqpqq",
    "blocked_pack_weights": "pqqqqpqq",
    "blocked_turn_weights": "pqqqqpqq",
    "blocked_unpack_weights": "pqqqqpqq",
}

_KERNELS = CppKernels("blocked", SOURCE_NAME, _ARGS, who="tinyspp.kernels.blocked",
                      why="the CPU blocked convolution is C++ compiled on first use",
                      features=("AVX512F", "FMA3"))
# entry_points(); library() (RuntimeError without a C++ compiler); available() (builds on
# the first call); why_unavailable() (why it answered False)
entry_points, library, available, why_unavailable = _KERNELS.api()
flags = _KERNELS.flags


@functools.cache
def fast() -> bool:
    """Whether the build uses AVX-512 (``-mavx512f``: this CPU has it), the only case where
    ``conv2d_forward`` picks this kernel by itself."""
    return "-mavx512f" in flags()


def empty(shape, dtype):
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary, so that
    every block of it is one aligned vector (NumPy aligns to 16 bytes: a vector load at 16 or
    48 bytes past a cache line spans two lines, and the kernels slow down by about a tenth).

    >>> empty((3, 16), np.float32).ctypes.data % 64
    0
    """
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    raw = np.empty(size + VECTOR_BYTES // dtype.itemsize, dtype=dtype)
    start = (-raw.__array_interface__["data"][0] % VECTOR_BYTES) // dtype.itemsize
    return raw[start:start + size].reshape(shape)


def block(dtype) -> int:
    """Channels per block for ``dtype``: 16 for float32, 8 for float64."""
    return VECTOR_BYTES // np.dtype(dtype).itemsize


def blocks(channels: int, dtype) -> int:
    """Blocks holding ``channels`` channels (the last one padded with zeros)."""
    return -(-channels // block(dtype))


def _fn(name: str, dtype):
    return getattr(library(), f"{name}_{_SUFFIX[np.dtype(dtype)]}")


def _checked(a, name: str, dtype, shape) -> int:
    return array_pointer(a, "tinyspp.kernels.blocked", name, dtype, shape)


def _dtype_of(a, name: str):
    if not (isinstance(a, np.ndarray) and a.dtype in _SUFFIX):
        raise TypeError(f"tinyspp.kernels.blocked: {name} must be a float32 or float64 NumPy "
                        f"array, got {type(a).__name__} {getattr(a, 'dtype', '')}")
    return a.dtype


def pack_input(x, pad: int, out, r0: int = 0, r1: int | None = None) -> None:
    """``out (N, Cb, H + 2*pad, W + 2*pad, B)`` = ``x (N, C, H, W)`` blocked and zero padded:
    rows ``r0..r1-1`` of the padded images (row ``n * (H + 2*pad) + y``), every block."""
    t = _dtype_of(x, "x")
    N, C, H, W = x.shape
    shape = (N, blocks(C, t), H + 2 * pad, W + 2 * pad, block(t))
    _fn("blocked_pack_input", t)(_checked(x, "x", t, x.shape), C, H, W, pad, shape[1],
                                 _checked(out, "out", t, shape), r0,
                                 N * shape[2] if r1 is None else r1)


def unpack_output(ob, channels: int, out, r0: int = 0, r1: int | None = None) -> None:
    """``out (N, channels, oh, ow)`` = the first ``channels`` channels of ``ob (N, Fb, oh, ow,
    B)``: output rows ``r0..r1-1`` (row ``n * oh + y``)."""
    t = _dtype_of(ob, "ob")
    N, Fb, oh, ow, _ = ob.shape
    if not 0 < channels <= Fb * block(t):
        raise ValueError(f"tinyspp.kernels.blocked: channels must be in 1..{Fb * block(t)}, "
                         f"got {channels}")
    _fn("blocked_unpack_output", t)(_checked(ob, "ob", t, ob.shape), channels, Fb, oh, ow,
                                    _checked(out, "out", t, (N, channels, oh, ow)), r0,
                                    N * oh if r1 is None else r1)


def weight_shape(F: int, C: int, kh: int, kw: int, dtype) -> tuple:
    """The shape of the blocks of filters ``(F, C, kh, kw)``: ``(Fb, Cb, kh, kw, B, B)``."""
    return (blocks(F, dtype), blocks(C, dtype), kh, kw, block(dtype), block(dtype))


def pack_weights(w, out, fb0: int = 0, fb1: int | None = None) -> None:
    """``out (Fb, Cb, kh, kw, B, B)`` = the blocks of the filters ``w (F, C, kh, kw)`` (filter
    blocks ``fb0..fb1-1``)."""
    t = _dtype_of(w, "w")
    shape = weight_shape(*w.shape, t)
    _fn("blocked_pack_weights", t)(_checked(w, "w", t, w.shape), *w.shape,
                                   _checked(out, "out", t, shape), fb0,
                                   shape[0] if fb1 is None else fb1)


def turn_weights(wb, out, cb0: int = 0, cb1: int | None = None) -> None:
    """``out (Cb, Fb, kh, kw, B, B)`` = the blocks of the input gradient's filters (turned by 180
    degrees, the channel axes swapped) from the blocks ``wb (Fb, Cb, kh, kw, B, B)`` of the
    forward's (blocks ``cb0..cb1-1`` of ``out``)."""
    t = _dtype_of(wb, "wb")
    Fb, Cb, kh, kw, B, _ = wb.shape
    _fn("blocked_turn_weights", t)(_checked(wb, "wb", t, wb.shape), Fb, Cb, kh, kw,
                                   _checked(out, "out", t, (Cb, Fb, kh, kw, B, B)), cb0,
                                   Cb if cb1 is None else cb1)


def unpack_weights(dwb, out, fb0: int = 0, fb1: int | None = None) -> None:
    """``out (F, C, kh, kw)`` = the filters held in the blocks ``dwb (Fb, Cb, kh, kw, B, B)``
    (filter blocks ``fb0..fb1-1``)."""
    t = _dtype_of(dwb, "dwb")
    shape = weight_shape(*out.shape, t)
    _fn("blocked_unpack_weights", t)(_checked(dwb, "dwb", t, shape), *out.shape,
                                     _checked(out, "out", t, out.shape), fb0,
                                     shape[0] if fb1 is None else fb1)


def forward_tasks(N: int, Fb: int, oh: int) -> int:
    """Tasks of :func:`forward`: one per image, tile of ``FILTER_TILE`` filter blocks and
    output row (task ``(n * tiles + tile) * oh + row``). Every output element is computed by
    one task, whole, so the result is the same however the tasks are split."""
    return N * -(-Fb // FILTER_TILE) * oh


def forward(xb, wb, bias, out, t0: int = 0, t1: int | None = None) -> None:
    """``out (N, Fb, oh, ow, B)`` = the stride-1 convolution of the padded blocks ``xb (N, Cb,
    Hp, Wp, B)`` with ``wb (Fb, Cb, kh, kw, B, B)``, plus ``bias (Fb*B,)``: tasks
    ``t0..t1-1`` of :func:`forward_tasks`."""
    t = _dtype_of(xb, "xb")
    N, Cb, Hp, Wp, B = xb.shape
    Fb, _, kh, kw, _, _ = wb.shape
    oh, ow = Hp - kh + 1, Wp - kw + 1
    if min(oh, ow) < 1:
        raise ValueError(f"tinyspp.kernels.blocked: the {kh}x{kw} kernel does not fit the "
                         f"padded {Hp}x{Wp} input")
    _fn("blocked_forward", t)(
        _checked(xb, "xb", t, xb.shape), N, Cb, Hp, Wp,
        _checked(wb, "wb", t, (Fb, Cb, kh, kw, B, B)), Fb, kh, kw,
        _checked(bias, "bias", t, (Fb * B,)), _checked(out, "out", t, (N, Fb, oh, ow, B)),
        t0, forward_tasks(N, Fb, oh) if t1 is None else t1)


def weight_grad_tasks(Fb: int, Cb: int) -> int:
    """Tasks of :func:`weight_grad`: one per tile of ``FILTER_TILE`` filter blocks and input
    block."""
    return -(-Fb // FILTER_TILE) * Cb


def weight_grad(xb, db, kh: int, kw: int, off: int, dwb, t0: int = 0,
                t1: int | None = None, out=None) -> None:
    """``dwb (Fb, Cb, kh, kw, B, B)`` = the weight gradient of the convolution of ``xb`` for
    the blocked ``dout`` held in ``db (N, Fb, oh + 2*off, ow + 2*off, B)`` at offset ``off``
    (tasks ``t0..t1-1`` of :func:`weight_grad_tasks`; each task overwrites its own blocks);
    ``out (F, C, kh, kw)``: each task also writes its blocks there, as :func:`unpack_weights`
    would."""
    t = _dtype_of(xb, "xb")
    N, Cb, Hp, Wp, B = xb.shape
    _, Fb, Hd, Wd, _ = db.shape
    oh, ow = Hp - kh + 1, Wp - kw + 1
    if (Hd, Wd) != (oh + 2 * off, ow + 2 * off) or min(oh, ow) < 1:
        raise ValueError(f"tinyspp.kernels.blocked: db must hold a {oh}x{ow} dout padded by "
                         f"{off}, got {Hd}x{Wd}")
    F = C = 0
    out_ptr = None
    if out is not None:
        F, C = out.shape[:2]
        if weight_shape(F, C, kh, kw, t) != (Fb, Cb, kh, kw, B, B):
            raise ValueError(f"tinyspp.kernels.blocked: out of shape {out.shape} does not fit "
                             f"blocks {(Fb, Cb, kh, kw, B, B)}")
        out_ptr = _checked(out, "out", t, (F, C, kh, kw))
    _fn("blocked_dw", t)(
        _checked(xb, "xb", t, xb.shape), N, Cb, Hp, Wp, _checked(db, "db", t, db.shape), Fb,
        Hd, Wd, off, kh, kw, _checked(dwb, "dwb", t, (Fb, Cb, kh, kw, B, B)), t0,
        weight_grad_tasks(Fb, Cb) if t1 is None else t1, F, C,
        out_ptr)
