"""2-D convolution (cross-correlation, as in every deep-learning library) by im2col + one GEMM.

The forward pass gathers every receptive field into the columns of one matrix ``cols`` of shape
``(C*kh*kw, N*oh*ow)`` and multiplies it by the filters reshaped to ``(F, C*kh*kw)``: a single
matrix product for the whole batch. The gather is a strided *view* of the padded input
(``as_strided``, no Python loop over positions) copied once. Backward is two more products
(``dw = dout @ cols.T``, ``dcols = w.T @ dout``) and ``col2im``, which adds the columns back into
the image with one strided add per kernel offset (``kh*kw`` adds, never a loop over positions).

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
from .dispatch import array_module, parallel_slices, split_copyto


class Conv2dCache(NamedTuple):
    """What ``conv2d_backward`` needs from the forward pass."""

    x_shape: tuple  # (N, C, H, W)
    cols: object  # (C*kh*kw, N*oh*ow) the gathered receptive fields
    w: object  # (F, C, kh, kw)
    stride: int
    pad: int


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


def im2col(x, kh: int, kw: int, stride: int = 1, pad: int = 0, out=None):
    """Gather every ``kh x kw`` receptive field of ``x`` into one column.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    kh, kw : int
        Window height and width.
    stride, pad : int
        Step between windows and zero padding on every side.
    out : ndarray of shape (C*kh*kw, N*oh*ow), optional
        A C-contiguous buffer of ``x``'s dtype to gather into (it is overwritten and returned):
        a layer running batch after batch reuses its last ``cols`` instead of allocating (and
        page-faulting in) a fresh one.

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
    xpad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else xp.ascontiguousarray(x)
    sN, sC, sH, sW = xpad.strides
    # view (C, kh, kw, N, oh, ow): element [c, i, j, n, oy, ox] = xpad[n, c, oy*s + i, ox*s + j]
    view = _strided_view(
        xpad, (C, kh, kw, N, oh, ow), (sC, sH, sW, sN, sH * stride, sW * stride)
    )
    if out is None:
        out = xp.empty((C * kh * kw, N * oh * ow), dtype=x.dtype)
    if xp is np:  # the one copy, split over images between threads (bitwise the same)
        split_copyto(out.reshape(C, kh, kw, N, oh, ow), view, axis=3)
    else:
        xp.copyto(out.reshape(C, kh, kw, N, oh, ow), view)
    return out


def col2im(cols, x_shape, kh: int, kw: int, stride: int = 1, pad: int = 0):
    """The adjoint of ``im2col``: add every column back where it was gathered from.

    Parameters
    ----------
    cols : ndarray of shape (C*kh*kw, N*oh*ow)
    x_shape : tuple
        ``(N, C, H, W)`` of the image ``cols`` was gathered from.

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
    cols6 = cols.reshape(C, kh, kw, N, oh, ow)
    # accumulate as (C, N, Hp, Wp) so each offset's block cols6[:, i, j] adds without transposing
    dxpad = xp.zeros((C, N, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)
    dx = xp.empty((N, C, H, W), dtype=cols.dtype)

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


def conv2d_forward(x, w, b, stride: int = 1, pad: int = 0, workspace=None):
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
        largest array of the step (``tinyspp.nn.Conv2d`` passes its last one). The result is the
        same either way.

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
    shape = (C * kh * kw, N * oh * ow)
    reuse = (workspace is not None and get_array_module(workspace) is xp
             and tuple(workspace.shape) == shape and workspace.dtype == x.dtype
             and workspace.flags.c_contiguous)
    cols = im2col(x, kh, kw, stride, pad, out=workspace if reuse else None)  # (C*kh*kw, N*oh*ow)
    out_fn = w.reshape(F, -1) @ cols  # (F, N*oh*ow): the one GEMM
    # one pass does both the (F, N) -> (N, F) transpose to NCHW and the bias
    out = xp.empty((N, F, oh, ow), dtype=out_fn.dtype)
    out_nf = out_fn.reshape(F, N, oh, ow).transpose(1, 0, 2, 3)
    bias = b.reshape(F, 1, 1)
    if xp is np:
        parallel_slices(lambda n0, n1: np.add(out_nf[n0:n1], bias, out=out[n0:n1]), N, out.size)
    else:
        xp.add(out_nf, bias, out=out)
    return out, Conv2dCache((N, C, H, W), cols, w, stride, pad)


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
    dout2 = xp.empty((F, N, oh, ow), dtype=dout.dtype)  # (N, F) -> (F, N): the GEMM's layout
    if xp is np:
        split_copyto(dout2, dout.transpose(1, 0, 2, 3), axis=1)
    else:
        xp.copyto(dout2, dout.transpose(1, 0, 2, 3))
    dout2 = dout2.reshape(F, N * oh * ow)
    db = dout2.sum(axis=1)
    dw = (dout2 @ cache.cols.T).reshape(w.shape)
    if not need_dx:
        return None, dw, db
    dcols = w.reshape(F, -1).T @ dout2  # (C*kh*kw, N*oh*ow)
    dx = col2im(dcols, cache.x_shape, kh, kw, cache.stride, cache.pad)
    return dx, dw, db
