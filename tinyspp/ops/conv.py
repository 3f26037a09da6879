"""2-D convolution (cross-correlation, as in every deep-learning library) by im2col + one GEMM.

The forward pass gathers every receptive field into the columns of one matrix ``cols`` of shape
``(C*kh*kw, N*oh*ow)`` and multiplies it by the filters reshaped to ``(F, C*kh*kw)``: one
matrix product for the whole batch (CuPy runs exactly that). The gather is a strided *view* of
the padded input (``as_strided``, no Python loop over positions) copied once. Backward is two
more products (``dw = dout @ cols.T``, ``dcols = w.T @ dout``) and ``col2im``, which adds the
columns back into the image with one strided add per kernel offset (``kh*kw`` adds, never a loop
over positions).

How the NumPy path runs it fast (issue 14; ``docs/performance.md`` has the measurements), with
the same algorithm:

* ``im2col`` and ``col2im`` run a compiled loop (``tinyspp/kernels/columns.cpp``) where it
  builds, the same numbers bit for bit as the NumPy code below (``impl="xp"``), which stays the
  readable version;
* the batch is cut into at most ``BLOCKS`` image blocks, and each block into pieces whose
  columns stay in the cache (``image_blocks``); a piece is gathered and multiplied at once. The
  GEMM is one per image (a stacked ``matmul``), straight into that image's plane of ``out``, as
  Caffe does;
* big convolutions run their blocks on tinyspp's threads, with BLAS held at one thread
  (``tinyspp.ops.dispatch``): one thread pool, not two. The blocks do not depend on the number
  of threads, so neither does any result, bit for bit;
* a layer with few input channels (stride 1, at most ``DIRECT_MAX_CHANNELS``, kernels at most
  7 wide) runs a direct convolution forward instead (``tinyspp/kernels/direct.cpp``, no
  columns at all), and a first layer (at most ``DIRECT_DW_MAX_CHANNELS``) its weight gradient
  too: a first layer's GEMM is 75 numbers deep for 3 channels of 5x5 and millions of columns
  wide, so im2col + GEMM there is mostly memory traffic; a 16-channel layer's forward still
  gains (the small SPP-net's second conv), while its weight gradient is faster by im2col +
  GEMM, which gathers the columns from ``x``. The direct forward keeps ``x`` for the backward
  (``keep_cols`` does not apply). The input gradient of a stride-1 convolution with at most
  ``DIRECT_DX_MAX_FILTERS`` filters is the kernel's forward too (``dout`` convolved with the
  filters turned by 180 degrees, their channel axes swapped): no ``dcols`` GEMM, no
  ``col2im``;
* a deeper layer (stride 1, a square kernel with ``pad <= k - 1``, at least
  ``BLOCKED_MIN_CHANNELS`` input channels and filters) runs, on a CPU with AVX-512, the
  channel-blocked direct convolution of ``tinyspp/kernels/blocked.cpp`` instead: x, w and
  dout are copied into blocks of 16 float32 channels (8 float64), innermost, as Intel's oneDNN
  does, and one kernel computes the forward and, with the turned filters, dx, another dw, each
  input value loaded once for 32 filters, with no columns (``_blocked_forward``,
  ``_blocked_backward``). ``BLOCKED_IMPL = "off"`` turns it off, ``"always"`` on where the
  CPU lacks AVX-512 (the tests).

``DIRECT_IMPL = "off"`` turns both direct kernels off everywhere: im2col + GEMM for every layer
(the tests compare the two).

Memory: ``cols`` is ``kh*kw`` times the size of the input (25x for a 5x5 kernel). The forward can
keep it for the backward (``keep_cols=True``, the default of the op: the fastest) or keep only
``x`` and gather the columns again in the backward (``keep_cols=False``, what ``nn.Conv2d`` does
by default: one more copy per step, and a network's peak memory no longer holds every layer's
columns at once).

Output size along one axis: ``oh = (H + 2*pad - kh) // stride + 1``.

Examples
--------
>>> import numpy as np
>>> x = np.ones((1, 1, 4, 4))
>>> w = np.ones((2, 1, 3, 3))
>>> out, cache = conv2d_forward(x, w, np.zeros(2), pad=1)
>>> out.shape
(1, 2, 4, 4)
>>> out[0, 0]
array([[4., 6., 6., 4.],
       [6., 9., 9., 6.],
       [6., 9., 9., 6.],
       [4., 6., 6., 4.]])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..backend import get_array_module
from ..validate import check_array, check_int, check_nchw
from . import dispatch
from .dispatch import (
    array_module,
    num_threads,
    one_blas_thread,
    parallel_map,
    parallel_slices,
    scratch,
    split_copyto,
)


class Conv2dCache(NamedTuple):
    """What ``conv2d_backward`` needs from the forward pass."""

    x_shape: tuple  # (N, C, H, W)
    cols: object  # (C*kh*kw, N*oh*ow) the gathered receptive fields; None: gather again from x
    w: object  # (F, C, kh, kw)
    stride: int
    pad: int
    x: object = None  # (N, C, H, W) the input, kept when cols is not
    direct: bool = False  # the backward's dw runs the direct kernel: the forward ran it and x
    # has at most DIRECT_DW_MAX_CHANNELS channels (else the backward gathers columns from x)
    packed: object = None  # (xb, wb): x (N, Cb, H + 2*pad, W + 2*pad, B) and w (Fb, Cb, kh, kw,
    # B, B) in the blocks of the blocked kernel (tinyspp/kernels/blocked.cpp), which ran the
    # forward and runs the backward; x is then not kept


def conv_output_size(size: int, ksize: int, stride: int = 1, pad: int = 0) -> int:
    """Positions a ``ksize`` window with ``stride`` takes on an axis of ``size`` padded by ``pad``.

    >>> conv_output_size(13, 3, stride=1, pad=1)
    13
    >>> conv_output_size(224, 7, stride=2, pad=1)
    110
    """
    return (size + 2 * pad - ksize) // stride + 1


def _strided_view(x, shape, strides):
    """A read-only strided view of ``x`` (NumPy ``as_strided`` or CuPy's equivalent)."""
    xp = get_array_module(x)
    if xp.__name__ == "numpy":
        return xp.lib.stride_tricks.as_strided(x, shape=shape, strides=strides, writeable=False)
    return xp.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)


IMPLS = ("auto", "xp", "cpu")
COLUMNS_IMPL = "auto"  # what conv2d_forward/backward ask im2col and col2im for (tests patch it)
DIRECT_IMPL = "auto"  # "auto": the direct kernel where it applies (_use_direct); "off": never
DIRECT_MAX_CHANNELS = 16  # input channels of a convolution whose forward the direct kernel
# runs, at most (the small SPP-net's first two layers; conv3's 32 channels run faster by GEMM)
DIRECT_DW_MAX_CHANNELS = 4  # ... and whose weight gradient it runs too, at most (a first layer;
# above, im2col + GEMM computes dw faster; docs/performance.md, ideas table)


BLOCKED_IMPL = "auto"  # "auto": the blocked kernel where it applies (_use_blocked) and the CPU
# has AVX-512; "always": where it applies on any CPU (the tests); "off": never
BLOCKED_MIN_CHANNELS = 16  # input channels and filters of a convolution the blocked kernel
# runs, at least (below, a 16-wide channel block would be mostly zeros)
BLOCKED_MIN_POSITIONS = 1024  # ... and output positions (N*oh*ow), at least, when the direct
# kernel of few channels could run it instead (at most DIRECT_MAX_CHANNELS): on a small map
# of one image (the detector's) the blocks' copies cost more than the kernel saves


def _use_blocked(x, w, stride: int, pad: int) -> bool:
    """Whether ``conv2d_forward`` (and then the backward) runs the channel-blocked direct
    convolution (``tinyspp/kernels/blocked.cpp``): NumPy float32/float64 ``x`` and ``w`` of one
    dtype, stride 1, a square kernel with ``pad <= k - 1`` (so that the input gradient is a
    stride-1 convolution too), at least ``BLOCKED_MIN_CHANNELS`` input channels and filters,
    the library built, ``DIRECT_IMPL`` and ``BLOCKED_IMPL`` not ``"off"``, and, for ``"auto"``,
    a CPU with AVX-512 (elsewhere im2col + GEMM is faster) and, for a layer the direct kernel
    of few channels takes, at least ``BLOCKED_MIN_POSITIONS`` output positions."""
    if BLOCKED_IMPL not in ("auto", "always", "off"):
        raise ValueError(f"tinyspp.ops.conv.BLOCKED_IMPL must be 'auto', 'always' or 'off', "
                         f"got {BLOCKED_IMPL!r}")
    F, C, kh, kw = w.shape
    if (BLOCKED_IMPL == "off" or DIRECT_IMPL == "off" or stride != 1 or kh != kw
            or pad > kh - 1 or min(C, F) < BLOCKED_MIN_CHANNELS
            or not isinstance(x, np.ndarray) or not isinstance(w, np.ndarray)
            or x.dtype not in (np.float32, np.float64) or w.dtype != x.dtype):
        return False
    N, _, H, W = x.shape
    if (C <= DIRECT_MAX_CHANNELS and BLOCKED_IMPL == "auto"
            and N * (H + 2 * pad - kh + 1) * (W + 2 * pad - kw + 1) < BLOCKED_MIN_POSITIONS
            and _use_direct(x, w, stride)):
        return False
    from ..kernels import blocked

    return blocked.available() and (BLOCKED_IMPL == "always" or blocked.fast())


def _use_direct(x, w, stride: int) -> bool:
    """Whether ``conv2d_forward`` runs the direct kernel (``tinyspp/kernels/direct.cpp``):
    NumPy float32/float64 ``x`` and ``w`` of one dtype, stride 1, at most
    ``DIRECT_MAX_CHANNELS`` input channels, a kernel at most 7 wide, the library built, and
    ``DIRECT_IMPL`` left at ``"auto"``. Layers with few channels, whose GEMM is shallow
    (``C*kh*kw``) and very wide (``N*oh*ow``); the ideas table of ``docs/performance.md`` times
    both ways. (The backward's weight gradient runs the kernel only up to
    ``DIRECT_DW_MAX_CHANNELS``: see ``Conv2dCache.direct``.)"""
    if DIRECT_IMPL not in ("auto", "off"):
        raise ValueError(f"tinyspp.ops.conv.DIRECT_IMPL must be 'auto' or 'off', "
                         f"got {DIRECT_IMPL!r}")
    if DIRECT_IMPL == "off" or x.shape[1] > DIRECT_MAX_CHANNELS:
        return False
    from ..kernels import direct

    return direct.takes(x, w, stride) and direct.available()


def _use_kernel(impl: str, func: str, *arrays) -> bool:
    """Whether ``impl`` means the compiled kernel (``tinyspp/kernels/columns.cpp``) here.

    ``"xp"``: the NumPy/CuPy code of this module; ``"cpu"``: the compiled kernel (errors when it
    cannot run); ``"auto"``: the kernel for C-contiguous NumPy float32/float64 arrays when it
    builds, else the ``"xp"`` code.
    """
    if impl not in IMPLS:
        raise ValueError(f"{func}: impl must be one of {IMPLS}, got {impl!r}")
    if impl == "xp":
        return False
    from ..kernels import columns

    fits = all(columns.fits(a) and a.dtype == arrays[0].dtype for a in arrays)
    if impl == "auto":
        return fits and columns.available()
    if not fits:
        got = ", ".join(f"{type(a).__name__} {getattr(a, 'dtype', '')}" for a in arrays)
        raise TypeError(f"{func}: impl='cpu' takes NumPy float32 or float64 arrays of one "
                        f"dtype, got {got}")
    if not columns.available():
        raise RuntimeError(f"{func}: impl='cpu' needs the compiled kernel, which is unavailable "
                           f"here ({columns.why_unavailable()}); use impl='xp'")
    return True


def im2col(x, kh: int, kw: int, stride: int = 1, pad: int = 0, out=None, impl: str = "auto"):
    """Gather every ``kh x kw`` receptive field of ``x`` into one column.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    kh, kw : int
        Window height and width.
    stride, pad : int
        Step between windows and zero padding on every side.
    out : ndarray of shape (C*kh*kw, N*oh*ow), optional
        A buffer of ``x``'s dtype to gather into (it is overwritten and returned), e.g. a block
        of whole columns of a larger row-major matrix (some images' columns of the batch's;
        the compiled loop takes only such row-major blocks). A layer running batch after
        batch reuses its last ``cols`` instead of allocating (and page-faulting in) a fresh one.
    impl : {"auto", "xp", "cpu"}, default "auto"
        ``"xp"`` runs the code below (a strided view copied once, NumPy or CuPy); ``"cpu"`` the
        compiled loop of ``tinyspp/kernels/columns.cpp`` (NumPy float32/float64: no padded
        copy, the same numbers); ``"auto"`` the compiled loop where it runs, else ``"xp"``.

    Returns
    -------
    cols : ndarray of shape (C*kh*kw, N*oh*ow)
        Row ``(c*kh + i)*kw + j`` holds ``xpad[n, c, oy*stride + i, ox*stride + j]`` in column
        ``(n*oh + oy)*ow + ox``: the row order matches ``w.reshape(F, -1)``.

    >>> import numpy as np
    >>> im2col(np.arange(9.0).reshape(1, 1, 3, 3), 2, 2)
    array([[0., 1., 3., 4.],
           [1., 2., 4., 5.],
           [3., 4., 6., 7.],
           [4., 5., 7., 8.]])
    """
    xp = get_array_module(x)
    N, C, H, W = x.shape
    oh = conv_output_size(H, kh, stride, pad)
    ow = conv_output_size(W, kw, stride, pad)
    from ..kernels import columns

    # "auto" leaves a buffer the loop cannot write (column-major, say) to the code below
    if (impl != "auto" or out is None or columns.strided_ok(out, rows_major=True)) and \
            _use_kernel(impl, "im2col", x):
        if out is None:
            out = xp.empty((C * kh * kw, N * oh * ow), dtype=x.dtype)
        columns.im2col(xp.ascontiguousarray(x), kh, kw, stride, pad, oh, ow, out)
        return out
    xpad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else xp.ascontiguousarray(x)
    sN, sC, sH, sW = xpad.strides
    # view (C, kh, kw, N, oh, ow): element [c, i, j, n, oy, ox] = xpad[n, c, oy*s + i, ox*s + j]
    view = _strided_view(
        xpad, (C, kh, kw, N, oh, ow), (sC, sH, sW, sN, sH * stride, sW * stride)
    )
    if out is None:
        out = xp.empty((C * kh * kw, N * oh * ow), dtype=x.dtype)
    out6 = out.reshape(C, kh, kw, N, oh, ow)  # splits axes only: always a view of out
    if xp is np:  # the one copy, split over images between threads (bitwise the same)
        split_copyto(out6, view, axis=3)
    else:
        xp.copyto(out6, view)
    return out


def col2im(cols, x_shape, kh: int, kw: int, stride: int = 1, pad: int = 0, out=None,
           impl: str = "auto"):
    """The adjoint of ``im2col``: add every column back where it was gathered from.

    Parameters
    ----------
    cols : ndarray of shape (C*kh*kw, N*oh*ow)
    x_shape : tuple
        ``(N, C, H, W)`` of the image ``cols`` was gathered from.
    out : ndarray of shape (N, C, H, W), optional
        Where to write ``dx`` (e.g. a slice of a larger batch's gradient).
    impl : {"auto", "xp", "cpu"}, default "auto"
        As for :func:`im2col`. The compiled loop adds every pixel's contributions in the same
        order as the strided adds below, so the sums are the same bit for bit.

    Returns
    -------
    dx : ndarray of shape (N, C, H, W)
        Sums over every window that covers a pixel (``kh*kw`` strided adds, one per offset).

    >>> import numpy as np
    >>> col2im(np.ones((4, 4)), (1, 1, 3, 3), 2, 2)
    array([[[[1., 2., 1.],
             [2., 4., 2.],
             [1., 2., 1.]]]])
    """
    xp = get_array_module(cols)
    N, C, H, W = x_shape
    oh = conv_output_size(H, kh, stride, pad)
    ow = conv_output_size(W, kw, stride, pad)
    dx = xp.empty((N, C, H, W), dtype=cols.dtype) if out is None else out
    from ..kernels import columns

    readable = dx.flags.c_contiguous and columns.strided_ok(cols)
    if (impl != "auto" or readable) and _use_kernel(impl, "col2im", cols, dx):
        columns.col2im(cols, kh, kw, stride, pad, oh, ow, dx)
        return dx
    cols6 = cols.reshape(C, kh, kw, N, oh, ow)
    # accumulate as (C, N, Hp, Wp) so each offset's block cols6[:, i, j] adds without transposing
    dxpad = xp.zeros((C, N, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)

    def add_back(n0, n1):  # images n0..n1-1 (each thread owns its images' pixels)
        for i in range(kh):
            for j in range(kw):
                dxpad[:, n0:n1, i:i + stride * oh:stride, j:j + stride * ow:stride] += \
                    cols6[:, i, j, n0:n1]
        dx[n0:n1] = dxpad[:, n0:n1, pad:pad + H, pad:pad + W].transpose(1, 0, 2, 3)

    if xp is np:
        parallel_slices(add_back, N, cols.size)
    else:
        add_back(0, N)
    return dx


def conv2d_forward(x, w, b, stride: int = 1, pad: int = 0, workspace=None,
                   keep_cols: bool = True):
    """Convolve ``x`` with filters ``w`` (cross-correlation) and add the bias ``b``.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    w : ndarray of shape (F, C, kh, kw)
    b : ndarray of shape (F,)
    stride : int, default 1
    pad : int, default 0
        Zero padding added on every side.
    workspace : ndarray, optional
        A buffer for ``cols`` (normally the previous call's ``cache.cols``, which this call then
        overwrites): used when it has the needed shape ``(C*kh*kw, N*oh*ow)``, dtype and array
        module and is C-contiguous, ignored otherwise. Saves allocating and page-faulting in the
        largest array of the step (``tinyspp.nn.Conv2d(keep_cols=True)`` passes its last one).
        The result is the same either way.
    keep_cols : bool, default True
        Keep ``cols`` in the cache for the backward (fast); False keeps ``x`` instead and the
        backward gathers the columns again (``kh*kw`` times less memory held between the passes).

    Returns
    -------
    out : ndarray of shape (N, F, oh, ow)
        ``oh = (H + 2*pad - kh) // stride + 1`` (``ow`` likewise);
        ``out[n, f] = sum_c xpad[n, c] * w[f, c] + b[f]`` at every window position.
    cache : Conv2dCache
    """
    func = "conv2d_forward"
    xp = array_module(func, x=x, w=w, b=b)
    N, C, H, W = check_nchw(x, "x", func)
    F, Cw, kh, kw = check_array(w, "w", func, ndim=4, layout="(F, C, kh, kw)")
    check_array(b, "b", func, ndim=1, layout="(F,)")
    stride = check_int(stride, "stride", func, minimum=1)
    pad = check_int(pad, "pad", func, minimum=0)
    if min(F, kh, kw) < 1 or Cw != C:
        raise ValueError(
            f"{func}: w must have shape (F, C={C}, kh, kw) with F, kh, kw >= 1, "
            f"got {tuple(w.shape)}"
        )
    if b.shape != (F,):
        raise ValueError(f"{func}: b must have shape (F,) = ({F},), got {tuple(b.shape)}")
    oh = conv_output_size(H, kh, stride, pad)
    ow = conv_output_size(W, kw, stride, pad)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{func}: the {kh}x{kw} kernel does not fit x of size {H}x{W} with pad={pad}: "
            f"output would be {oh}x{ow}"
        )
    if xp is np and _use_blocked(x, w, stride, pad):
        return _blocked_forward(x, w, b, pad, (N, F, oh, ow))
    if xp is np and _use_direct(x, w, stride):
        return _direct_forward(x, w, b, pad, (N, F, oh, ow))
    shape = (C * kh * kw, N * oh * ow)
    reuse = (keep_cols and workspace is not None and get_array_module(workspace) is xp
             and tuple(workspace.shape) == shape and workspace.dtype == x.dtype
             and workspace.flags.c_contiguous)
    out = xp.empty((N, F, oh, ow), dtype=x.dtype)
    cols = None
    if keep_cols:
        cols = workspace if reuse else xp.empty(shape, dtype=x.dtype)
    w2, P, bias, K = w.reshape(F, -1), oh * ow, b.reshape(F, 1), C * kh * kw

    def convolve(block):  # im2col + GEMM (+ bias) for the images of one block
        for n0, n1 in block:  # pieces of the block (NumPy: small enough to stay in cache)
            c = im2col(x[n0:n1], kh, kw, stride, pad, impl=COLUMNS_IMPL,
                       out=cols[:, n0 * P:n1 * P] if keep_cols else _temp("cols", xp, (
                           C * kh * kw, (n1 - n0) * P), x.dtype))
            m = n1 - n0
            if xp is np and (m == 1 or K < ONE_GEMM_RATIO * P):
                # one GEMM per image, straight into its (F, oh*ow) plane of out: one stacked
                # matmul call (NumPy loops over the images in C), then the bias
                planes = out[n0:n1].reshape(m, F, P)
                np.matmul(w2, c.reshape(-1, m, P).transpose(1, 0, 2), out=planes)
                planes += bias
            elif xp is np:  # one GEMM for the piece, then one pass: transpose + bias
                prod = np.matmul(w2, c, out=_temp("prod", xp, (F, m * P), x.dtype))
                np.add(prod.reshape(F, m, P).transpose(1, 0, 2), bias, out=out[n0:n1].reshape(
                    m, F, P))
            else:  # one GEMM for the chunk, then one transposing pass
                _gemm_bias(w2, c, b, out[n0:n1])

    _over_blocks(convolve, xp, N, C * kh * kw * P, keep_cols, F, P)
    if keep_cols:
        return out, Conv2dCache((N, C, H, W), cols, w, stride, pad)
    return out, Conv2dCache((N, C, H, W), None, w, stride, pad, x)


def _direct_forward(x, w, b, pad: int, out_shape):
    """``conv2d_forward`` by the direct kernel, over the same image blocks and threads."""
    from ..kernels import direct

    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    b = np.ascontiguousarray(b, dtype=x.dtype)
    out = np.empty(out_shape, dtype=x.dtype)
    N, C, _, _ = x.shape
    F, _, kh, kw = w.shape
    P = out_shape[2] * out_shape[3]

    def convolve(block):
        for n0, n1 in block:
            direct.forward(x[n0:n1], w, b, pad, out[n0:n1])

    macs = F * C * kh * kw * P
    if N == 1 and num_threads() > 1 and F > DIRECT_FILTER_GROUP:
        # one image (the detector's case): its filters split over the threads instead, in
        # whole register groups of the kernel; each output is the same sum either way
        def filters(g0, g1):
            f0, f1 = g0 * DIRECT_FILTER_GROUP, min(g1 * DIRECT_FILTER_GROUP, F)
            direct.forward(x, w[f0:f1], b[f0:f1], pad, out[:, f0:f1])

        parallel_slices(filters, -(-F // DIRECT_FILTER_GROUP), macs // SPLIT_MACS)
    else:
        _over_blocks(convolve, np, N, C * kh * kw * P, False, F, P)
    return out, Conv2dCache(x.shape, None, w, 1, pad, x, direct=C <= DIRECT_DW_MAX_CHANNELS)


DIRECT_FILTER_GROUP = 4  # filters the direct kernel's forward computes at once (FG in the .cpp)


def _blocked_forward(x, w, b, pad: int, out_shape):
    """``conv2d_forward`` by the blocked kernel: x and w to blocks, the convolution, the output
    back to NCHW; the cache keeps the blocks of x and w for the backward."""
    from ..kernels import blocked

    t = x.dtype
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    F, C, kh, kw = w.shape
    wb = blocked.empty(blocked.weight_shape(F, C, kh, kw, t), t)
    parallel_slices(lambda f0, f1: blocked.pack_weights(w, wb, f0, f1), wb.shape[0], wb.size)
    bias = blocked.empty((wb.shape[0] * wb.shape[4],), t)
    bias[:F], bias[F:] = b, 0
    out, xb = _blocked_convolve(x, pad, wb, bias, out_shape[2:], F)
    return out, Conv2dCache(x.shape, None, w, 1, pad, packed=(xb, wb))


def _blocked_convolve(a, pad: int, wb, bias, size, channels: int):
    """``(out, ab)``: the blocked convolution of ``a (N, E, H, W)`` padded by ``pad`` with the
    blocks ``wb (Ob, Eb, kh, kw, B, B)`` plus ``bias (Ob*B,)``, as the NCHW array ``out`` of
    its first ``channels`` channels (the real ones: the layer's filters, or dx's input
    channels) and spatial ``size``, and ``ab``, the padded blocks of ``a``. One split over
    threads when the images divide evenly among them (each thread packs, convolves and
    unpacks its own images), else three (the tasks, output rows, split finely: a single
    image's rows too)."""
    from ..kernels import blocked

    N = a.shape[0]
    Ob, Eb, kh, kw, B, _ = wb.shape
    ab = blocked.empty((N, Eb, a.shape[2] + 2 * pad, a.shape[3] + 2 * pad, B), a.dtype)
    ob = blocked.empty((N, Ob, *size, B), a.dtype)
    out = np.empty((N, channels, *size), dtype=a.dtype)
    rows = blocked.forward_tasks(1, Ob, size[0])  # the tasks of one image
    macs = N * Ob * Eb * B * B * kh * kw * size[0] * size[1]
    Hp = ab.shape[2]

    def pack(r0, r1):  # rows r0..r1-1 of the padded images
        blocked.pack_input(a, pad, ab, r0, r1)

    def convolve(t0, t1):  # tasks: output rows of a filter tile
        blocked.forward(ab, wb, bias, ob, t0, t1)

    def unpack(r0, r1):  # output rows
        blocked.unpack_output(ob, channels, out, r0, r1)

    def images(n0, n1):  # all three for images n0..n1-1
        pack(n0 * Hp, n1 * Hp)
        convolve(n0 * rows, n1 * rows)
        unpack(n0 * size[0], n1 * size[0])

    if N % num_threads() == 0:
        parallel_slices(images, N, macs // SPLIT_MACS)
    else:
        parallel_slices(pack, N * Hp, ab.size)
        parallel_slices(convolve, N * rows, macs // SPLIT_MACS)
        parallel_slices(unpack, N * size[0], ob.size)
    return out, ab


def _blocked_backward(dout, cache: Conv2dCache, need_dx: bool):
    """``conv2d_backward`` by the blocked kernel: dout to blocks (padded by ``k - 1 - pad``
    when dx is needed) and dx, the convolution of those with the turned filters, by the
    forward's kernel; then dw from the blocks of x and dout.

    dw's tasks (filter tiles x input blocks) each sum over every image; a layer with fewer
    tasks than twice the machine's CPUs (few channels, many images) cuts its images into
    ``min(N, dispatch.cpu_count())`` groups instead, whose parts are summed in group order
    (so, as for ``image_blocks``, the result never depends on the number of threads)."""
    from ..kernels import blocked

    (xb, wb), w = cache.packed, cache.w
    F, C, k, _ = w.shape
    N, Cb, Hp, Wp, B = xb.shape
    Fb, t = wb.shape[0], xb.dtype
    dout = np.ascontiguousarray(dout)
    dx = None
    if need_dx:
        off = k - 1 - cache.pad
        turned = blocked.empty((Cb, Fb, k, k, B, B), t)
        parallel_slices(lambda c0, c1: blocked.turn_weights(wb, turned, c0, c1), Cb,
                        turned.size)
        zero = blocked.empty((Cb * B,), t)
        zero[:] = 0
        dx, db = _blocked_convolve(dout, off, turned, zero, cache.x_shape[2:], C)
    else:
        off = 0
        db = blocked.empty((N, Fb, *dout.shape[2:], B), t)
        parallel_slices(lambda r0, r1: blocked.pack_input(dout, 0, db, r0, r1),
                        N * db.shape[2], db.size)
    tasks = blocked.weight_grad_tasks(Fb, Cb)
    groups = 1 if tasks >= 2 * dispatch.cpu_count() else min(N, dispatch.cpu_count())
    parts = blocked.empty((groups, *wb.shape), t)
    macs = F * C * k * k * N * (Hp - k + 1) * (Wp - k + 1)
    dw = np.empty(w.shape, dtype=t)

    def grad(i0, i1):  # items i0..i1-1 of the (group, task) grid: one call per group
        for g in range(i0 // tasks, -(-i1 // tasks)):
            n0, n1 = N * g // groups, N * (g + 1) // groups
            t0, t1 = max(i0 - g * tasks, 0), min(i1 - g * tasks, tasks)
            blocked.weight_grad(xb[n0:n1], db[n0:n1], k, k, off, parts[g], t0, t1,
                                out=dw if groups == 1 else None)  # one group: dw at once

    parallel_slices(grad, groups * tasks, macs // SPLIT_MACS)
    if groups > 1:
        for g in range(1, groups):  # in group order: the same sum on any number of threads
            parts[0] += parts[g]
        parallel_slices(lambda f0, f1: blocked.unpack_weights(parts[0], dw, f0, f1), Fb,
                        dw.size)
    return dx, dw, dout.sum(axis=(0, 2, 3))


def conv2d_forward_naive(x, w, b, stride: int = 1, pad: int = 0):
    """The convolution formula loop by loop: the naive twin of :func:`conv2d_forward`.

    One dot product per output element, for teaching (notebook 00 shows it beside im2col + GEMM)
    and as the tests' oracle; far too slow for real use. Same arguments (without the buffer
    options), same output; no argument checks beyond what NumPy does.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    w : ndarray of shape (F, C, kh, kw)
    b : ndarray of shape (F,)
    stride : int, default 1
    pad : int, default 0

    Returns
    -------
    out : ndarray of shape (N, F, oh, ow)
        In ``x``'s dtype (the sums are taken in float64).

    Examples
    --------
    >>> import numpy as np
    >>> x, w, b = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), np.zeros(1)
    >>> conv2d_forward_naive(x, w, b).tolist()
    [[[[4.0, 4.0], [4.0, 4.0]]]]
    """
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    out = np.empty((N, F, oh, ow))
    for n in range(N):
        for f in range(F):
            for i in range(oh):
                for j in range(ow):
                    window = xpad[n, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
                    out[n, f, i, j] = np.sum(window * w[f]) + b[f]
    return out.astype(x.dtype, copy=False)


CHUNK_ELEMENTS = 1 << 21  # CuPy: im2col columns gathered at once when not kept (8 MiB f32)
BLOCKS = None  # image blocks of a NumPy batch, at most (threads take blocks); None: the CPUs
# this process may use (dispatch.cpu_count(), at most 4), which never depends on the thread setting
PIECE_ELEMENTS = 1 << 19  # NumPy: columns gathered at once, at most (2 MiB f32: in cache) ...
PIECE_COLUMNS = 1024  # ... unless fewer images than this many columns need more (small maps)


def image_chunks(N: int, per_image: int, whole: bool):
    """``(n0, n1)`` ranges of images whose columns (``per_image`` elements each) are gathered at
    once on CuPy: the whole batch when ``whole`` (the columns are kept), else chunks of at most
    ``CHUNK_ELEMENTS`` (at least one image): Caffe gathers one image at a time for the same
    reason, the columns of a batch can be far larger than the batch."""
    step = N if whole else max(1, CHUNK_ELEMENTS // max(per_image, 1))
    return [(n0, min(n0 + step, N)) for n0 in range(0, N, step)]


def image_blocks(N: int, per_image: int, positions: int | None = None):
    """The work of a NumPy convolution: the batch cut into ``min(N, BLOCKS)`` nearly equal
    blocks (``BLOCKS`` None: as many as this process has CPUs, at most 4), each a list of
    pieces ``(n0, n1)`` of at most ``PIECE_ELEMENTS`` elements of columns (``per_image`` per
    image), or of enough images for ``PIECE_COLUMNS`` output positions (``positions`` per
    image: small maps, whose GEMMs are too short one image at a time). A piece is gathered,
    multiplied and (backward) scattered while its columns are still in the cache.
    Threads take whole blocks; the pieces, and the order in which their weight gradients are
    summed, never depend on the number of threads or on whether the columns were kept, so on
    one machine every result is the same bit for bit on 1 thread or 4 (a machine with another
    number of CPUs, like another BLAS, may round differently)."""
    n = min(N, BLOCKS or dispatch.cpu_count())
    step = max(1, PIECE_ELEMENTS // max(per_image, 1))
    if positions:
        step = max(step, -(-PIECE_COLUMNS // positions))
    blocks = []
    for k in range(n):
        a, b = N * k // n, N * (k + 1) // n
        blocks.append([(m, min(m + step, b)) for m in range(a, b, step)])
    return blocks


def _temp(name, xp, shape, dtype):
    """A temporary of the op: NumPy, a reused per-thread buffer (``dispatch.scratch``: no fresh
    pages, no page faults); CuPy, a fresh array (CuPy's memory pool already reuses)."""
    return scratch(name, shape, dtype) if xp is np else xp.empty(shape, dtype=dtype)


ONE_GEMM_RATIO = 8  # NumPy forward: a piece of several images takes one GEMM (and a transposing
# pass) instead of one GEMM per image when its columns are this many times longer (C*kh*kw) than
# an image has output positions: BLAS packs the (F, C*kh*kw) weights again for every call,
# which then costs more than the GEMM of a small map (conv3 of the layers benchmark)
SPLIT_MACS = 8  # split a convolution over threads from 8 * dispatch.MIN_WORK multiply-adds


def _over_blocks(fn, xp, N: int, per_image: int, whole: bool, F: int, P: int) -> list:
    """``fn(block)`` for every block (a list of ``(n0, n1)`` pieces).

    NumPy: the blocks of :func:`image_blocks`. A convolution of at least ``SPLIT_MACS *
    dispatch.MIN_WORK`` multiply-adds (about 0.1 ms of GEMM on one core) runs its blocks in
    parallel over tinyspp's threads, with BLAS held at one thread meanwhile (one thread pool,
    not two); a smaller one runs them in turn, its GEMMs on BLAS's own threads (a thread
    hand-off per block would cost more than it saves). CuPy: one block of :func:`image_chunks`.
    """
    if xp is not np:
        return [fn(image_chunks(N, per_image, whole))]
    blocks = image_blocks(N, per_image, P)
    macs = F * N * per_image
    if num_threads() > 1 and len(blocks) > 1 and macs >= SPLIT_MACS * dispatch.MIN_WORK:
        with one_blas_thread():
            return parallel_map(fn, blocks, macs)
    return [fn(block) for block in blocks]


def _gemm_bias(w2, cols, b, out):
    """``out (n, F, oh, ow) = w2 @ cols + b`` (the CuPy path): the GEMM gives (F, n*oh*ow); one
    pass does both the (F, n) -> (n, F) transpose to NCHW and the bias."""
    xp = get_array_module(cols)
    n, F, oh, ow = out.shape
    xp.add((w2 @ cols).reshape(F, n, oh, ow).transpose(1, 0, 2, 3), b.reshape(F, 1, 1), out=out)


def conv2d_backward(dout, cache: Conv2dCache, need_dx: bool = True):
    """Gradients of ``conv2d_forward`` with respect to ``x``, ``w`` and ``b``.

    Parameters
    ----------
    dout : ndarray of shape (N, F, oh, ow)
    cache : Conv2dCache
    need_dx : bool, default True
        False skips the input gradient (one GEMM and ``col2im``) and returns ``dx = None``:
        the first layer of a network never needs it (torch skips it the same way for inputs
        that do not require grad).

    Returns
    -------
    dx : ndarray of shape (N, C, H, W), or None when ``need_dx`` is False
    dw : ndarray of shape (F, C, kh, kw)
    db : ndarray of shape (F,)
    """
    xp = array_module("conv2d_backward", dout=dout, w=cache.w)
    w = cache.w
    F, C, kh, kw = w.shape
    N = cache.x_shape[0]
    oh = conv_output_size(cache.x_shape[2], kh, cache.stride, cache.pad)
    ow = conv_output_size(cache.x_shape[3], kw, cache.stride, cache.pad)
    check_array(dout, "dout", "conv2d_backward", ndim=4, layout="(N, F, oh, ow)")
    if dout.shape != (N, F, oh, ow):
        raise ValueError(
            f"conv2d_backward: dout must have shape {(N, F, oh, ow)}, got {tuple(dout.shape)}"
        )
    if cache.packed is not None:
        if dout.dtype == cache.packed[0].dtype:
            return _blocked_backward(dout, cache, need_dx)
        cache = cache._replace(packed=None, x=_unpacked(cache))  # the columns path, from x
    db = dout.sum(axis=(0, 2, 3))
    dx = xp.empty(cache.x_shape, dtype=dout.dtype) if need_dx else None
    w2, P = w.reshape(F, -1), oh * ow
    direct = cache.direct and dout.dtype == cache.x.dtype  # else gather columns from x
    dx_direct = need_dx and xp is np and _direct_dx(cache, dout)
    if direct or dx_direct:
        from ..kernels import direct as kernel

        dout = np.ascontiguousarray(dout)
    if dx_direct:
        turned, no_bias, turned_pad = transposed_convolution(w, cache.pad)

    def grad(block):  # the images of one block: their part of dw, and their dx
        # the direct kernel adds into dw (F, C*kh*kw); the GEMMs give dw transposed,
        # dwt (C*kh*kw, F), which is summed in that layout and transposed once at the end
        dw = np.zeros((F, C * kh * kw), dtype=dout.dtype) if direct else None
        for n0, n1 in block:
            if direct:  # dw += this piece's images' gradient, image after image
                kernel.weight_grad(cache.x[n0:n1], dout[n0:n1], kh, kw, cache.pad,
                                   dw.reshape(w.shape))
            if dx_direct:
                kernel.forward(dout[n0:n1], turned, no_bias, turned_pad, dx[n0:n1])
            if direct and (dx_direct or not need_dx):
                continue
            d = _to_gemm_layout(dout[n0:n1])  # (n*oh*ow, F): a row per output position
            if not direct:
                cols = cache.cols[:, n0 * P:n1 * P] if cache.cols is not None else im2col(
                    cache.x[n0:n1], kh, kw, cache.stride, cache.pad, impl=COLUMNS_IMPL,
                    out=_temp("cols", xp, (C * kh * kw, (n1 - n0) * P), cache.x.dtype))
                part = cols @ d  # dwt = cols @ dout2.T with dout2 = d.T: dw = dout2 @ cols.T
                if dw is None:
                    dw = part
                else:
                    dw += part
            if need_dx and not dx_direct:  # dcols = w2.T @ dout2: (C*kh*kw, n*oh*ow) ...
                dcols = w2.T @ d.T if xp is not np else np.matmul(
                    w2.T, d.T, out=_temp("dcols", xp, (C * kh * kw, (n1 - n0) * P), d.dtype))
                col2im(dcols, (n1 - n0, C, *cache.x_shape[2:]), kh, kw, cache.stride,
                       cache.pad, out=dx[n0:n1], impl=COLUMNS_IMPL)
        return dw

    parts = _over_blocks(grad, xp, N, C * kh * kw * P, cache.cols is not None, F, P)
    if direct:
        dw = parts[0]
        for part in parts[1:]:  # summed in block order: the same for any number of threads
            dw += part
    else:  # the blocks' (C*kh*kw, F) parts summed in block order, then -> (F, C*kh*kw)
        dw = sum_transposed(parts)
    return dx, dw.reshape(w.shape), db


def _unpacked(cache: Conv2dCache):
    """The input ``x (N, C, H, W)`` back from the padded blocks the blocked forward kept."""
    N, C, H, W = cache.x_shape
    p = cache.pad
    inner = cache.packed[0][:, :, p:p + H, p:p + W, :]  # (N, Cb, H, W, B)
    return np.ascontiguousarray(inner.transpose(0, 1, 4, 2, 3).reshape(N, -1, H, W)[:, :C])


DIRECT_DX_MAX_FILTERS = 32  # filters of a convolution whose input gradient the direct kernel
# computes, at most: the backward of a stride-1 convolution is the convolution of dout (F
# channels, padded by k - 1 - pad) with the filters turned by 180 degrees and their channel
# axes swapped, the direct kernel's forward; with more filters dcols' GEMM + col2im is faster


def transposed_convolution(w, pad: int):
    """``(w_t, zeros, pad_t)``: the stride-1 convolution whose output is the input gradient
    of convolving with ``w`` (pad ``pad``): ``dx = conv(dout, w_t, zeros, pad=pad_t)``, with the
    filters turned by 180 degrees and their two channel axes swapped, ``w_t (C, F, k, k)``,
    and ``pad_t = k - 1 - pad`` (which ``_direct_dx`` requires to be >= 0)."""
    _, C, k, _ = w.shape
    turned = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    return turned, np.zeros(C, dtype=w.dtype), k - 1 - pad


def _direct_dx(cache: Conv2dCache, dout) -> bool:
    """Whether ``conv2d_backward`` computes dx by the direct kernel: ``DIRECT_IMPL`` "auto",
    stride 1, a square kernel at most 7 wide with ``pad <= k - 1``, at most
    ``DIRECT_DX_MAX_FILTERS`` filters, ``dout`` of the weights' dtype (float32/float64) and
    the library built (the ideas table of ``docs/performance.md`` times both ways)."""
    w = cache.w
    F, _, kh, kw = w.shape
    if (DIRECT_IMPL != "auto" or cache.stride != 1 or kh != kw or cache.pad > kh - 1
            or F > DIRECT_DX_MAX_FILTERS or not isinstance(dout, np.ndarray)
            or dout.dtype != w.dtype):
        return False
    from ..kernels import direct

    return direct.takes(dout, w, 1) and direct.available()


TRANSPOSE_ROWS = 64  # rows of the source a band of sum_transposed moves at once


def sum_transposed(parts):
    """``(parts[0] + parts[1] + ...).T`` as a new C-contiguous array, the sum taken in list
    order (so bit for bit what ``dw = parts[0]; dw += parts[1]; ...`` then ``dw.T`` give).

    NumPy's transposing copy walks the whole destination row by row and reads the source a
    column at a time, one cache line per element once the matrix outgrows the cache (a dw of
    2400x256 floats: several times slower than reading it). Here the sum and the copy go in
    bands of ``TRANSPOSE_ROWS`` source rows, whose lines stay in the cache while a band is
    read, and the bands are split over tinyspp's threads (each writes its own columns of the
    result). CuPy: the sum, then its own copy.
    """
    first = parts[0]
    xp = get_array_module(first)
    if xp is not np:
        total = first if len(parts) == 1 else first + parts[1]
        for part in parts[2:]:
            total += part
        return xp.ascontiguousarray(total.T)
    rows, ncols = first.shape
    out = np.empty((ncols, rows), dtype=first.dtype)

    def bands(i0, i1):  # bands i0..i1-1
        for r in range(i0 * TRANSPOSE_ROWS, min(i1 * TRANSPOSE_ROWS, rows), TRANSPOSE_ROWS):
            band = slice(r, r + TRANSPOSE_ROWS)
            total = first[band] if len(parts) == 1 else first[band] + parts[1][band]
            for part in parts[2:]:
                total += part[band]
            np.copyto(out[:, band], total.T)

    parallel_slices(bands, -(-rows // TRANSPOSE_ROWS), first.size * len(parts))
    return out


def _to_gemm_layout(dout):
    """``dout (n, F, oh, ow)`` as the (n*oh*ow, F) matrix of the GEMMs (channel-last: a row per
    output position): one transposing copy. With F, the short axis, inside, OpenBLAS computes
    ``dw`` faster than from the (F, n*oh*ow) layout (up to 1.3x on the small SPP-net's shapes);
    ``dcols`` reads the same matrix transposed, with no copy."""
    xp = get_array_module(dout)
    n, F, oh, ow = dout.shape
    d = xp.empty((n, oh, ow, F), dtype=dout.dtype)
    if xp is np:
        split_copyto(d, dout.transpose(0, 2, 3, 1), axis=0)
    else:
        xp.copyto(d, dout.transpose(0, 2, 3, 1))
    return d.reshape(n * oh * ow, F)
