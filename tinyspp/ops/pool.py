"""2-D max pooling with a square ``ksize x ksize`` window.

Forward keeps a running maximum over the ``ksize*ksize`` strided views of the ``-inf``-padded
input (one vectorised pass per kernel offset, never a loop over output positions) and remembers
which offset won. On NumPy float32/float64 without padding, with every window inside the image,
a compiled loop (``tinyspp/kernels/passes.cpp``) reads each window once instead and gives the
same winners; its output is the value at the winner (NumPy's running ``maximum`` may return
the other sign of two tied zeros, or another NaN's payload). ``PASSES_IMPL = "xp"`` runs the
NumPy code. Backward scatters ``dout`` through the stored winners with one unbuffered
scatter-add (``np.add.at``; ``cupyx.scatter_add`` on CuPy: overlapping windows may pick the
same pixel).

Semantics (the same as PyTorch's ``max_pool2d`` and tinyspp's SPP):

- padding is ``-inf`` and never wins: a window whose real cells are all ``-inf`` sends its
  gradient to its first real cell;
- ties go to the first maximal element of the window in row-major order;
- NaN propagates: a window containing NaN outputs NaN and its gradient goes to its first NaN;
- output size ``oh = floor((H + 2*pad - ksize) / stride) + 1`` (``ceil`` with ``ceil_mode``),
  and with ``ceil_mode`` the last window must start inside the input or the left padding
  (otherwise it is dropped).

Examples
--------
>>> import numpy as np
>>> x = np.arange(16.0).reshape(1, 1, 4, 4)
>>> out, cache = max_pool2d_forward(x, 2)
>>> out[0, 0]
array([[ 5.,  7.],
       [13., 15.]])
>>> max_pool2d_backward(np.ones_like(out), cache)[0, 0]
array([[0., 0., 0., 0.],
       [0., 1., 0., 1.],
       [0., 0., 0., 0.],
       [0., 1., 0., 1.]])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..backend import get_array_module, scatter_add
from ..validate import check_array, check_int, check_nchw
from .dispatch import array_module, parallel_slices

PHASES_ALWAYS = False  # tests set True to run the padded phase-split path (the plain twin)


class MaxPool2dCache(NamedTuple):
    """What ``max_pool2d_backward`` needs from the forward pass."""

    x_shape: tuple  # (N, C, H, W)
    winner: object  # (N, C, oh, ow) uint8/int32 kernel offset i*ksize + j of each window's max
    ksize: int
    stride: int
    pad: int
    padded_shape: tuple  # (Hp, Wp): H, W plus left padding and right padding (incl. ceil_mode)


def pool_output_size(size: int, ksize: int, stride: int, pad: int = 0,
                     ceil_mode: bool = False) -> int:
    """Number of pooling windows along an axis (PyTorch's rule).

    >>> pool_output_size(55, 3, 2)
    27
    >>> pool_output_size(6, 3, 2), pool_output_size(6, 3, 2, ceil_mode=True)
    (2, 3)
    >>> pool_output_size(5, 2, 2, ceil_mode=True)  # the third window starts at row 4 < 5
    3
    """
    span = size + 2 * pad - ksize
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1  # the last window would start in the right padding only
    return out


def max_pool2d_forward(x, ksize: int, stride: int | None = None, pad: int = 0,
                       ceil_mode: bool = False):
    """Max pooling over ``ksize x ksize`` windows.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    ksize : int
        Window height and width.
    stride : int, optional
        Step between windows; defaults to ``ksize`` (non-overlapping windows).
    pad : int, default 0
        ``-inf`` padding on every side; at most ``ksize // 2`` (as PyTorch).
    ceil_mode : bool, default False
        Round the output size up instead of down (the last window may hang over the edge).

    Returns
    -------
    out : ndarray of shape (N, C, oh, ow)
        ``oh = pool_output_size(H, ksize, stride, pad, ceil_mode)``, ``ow`` likewise.
    cache : MaxPool2dCache
    """
    func = "max_pool2d_forward"
    xp = get_array_module(x)
    N, C, H, W = check_nchw(x, "x", func)
    ksize = check_int(ksize, "ksize", func)
    stride = ksize if stride is None else check_int(stride, "stride", func)
    pad = check_int(pad, "pad", func, minimum=0)
    if pad > ksize // 2:
        raise ValueError(f"{func}: pad must be <= ksize // 2 = {ksize // 2}, got {pad}")
    oh = pool_output_size(H, ksize, stride, pad, ceil_mode)
    ow = pool_output_size(W, ksize, stride, pad, ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{func}: a {ksize}x{ksize} window does not fit x of size {H}x{W} with pad={pad}"
        )
    # padded extent: the input plus left padding, and on the right whatever the last window
    # needs (ceil_mode may need more than pad, a large stride less)
    Hp = max((oh - 1) * stride + ksize, pad + H)
    Wp = max((ow - 1) * stride + ksize, pad + W)
    if _compiled_forward(x, ksize, stride, pad, oh, ow):  # windows inside: one compiled pass
        from ..kernels import passes

        out = np.empty((N, C, oh, ow), dtype=x.dtype)
        winner = np.empty((N, C, oh, ow), dtype=np.uint8)
        parallel_slices(lambda p0, p1: passes.pool_forward(x, ksize, stride, out, winner, p0, p1),
                        N * C, N * C * oh * ow * ksize * ksize)
        return out, MaxPool2dCache((N, C, H, W), winner, ksize, stride, pad, (Hp, Wp))
    view = _offset_views(x, ksize, stride, pad, oh, ow, Hp, Wp)
    # the winner's offset fits in uint8 for windows up to 16x16
    offset_dtype = np.uint8 if ksize * ksize <= 256 else np.int32
    out = xp.empty((N, C, oh, ow), dtype=x.dtype)
    winner = xp.zeros((N, C, oh, ow), dtype=offset_dtype)

    def pool(n0, n1):  # images n0..n1-1 (on NumPy, slices of the batch run on threads)
        _running_max(lambda k: view(k)[n0:n1], out[n0:n1], winner[n0:n1], ksize)

    if xp is np:
        parallel_slices(pool, N, N * C * oh * ow * ksize * ksize)
    else:
        pool(0, N)
    if ksize > 1:
        _route_nan_to_first_nan(view, out, winner, ksize)
    if pad or Hp > pad + H or Wp > pad + W:
        _route_neg_inf_to_real_cell(out, winner, ksize, stride, pad, H, W)
    cache = MaxPool2dCache((N, C, H, W), winner, ksize, stride, pad, (Hp, Wp))
    return out, cache


def _running_max(view, out, winner, ksize):
    """``out`` = the max over the ``ksize*ksize`` offset views, ``winner`` = the first offset
    holding it (``winner`` starts at 0)."""
    xp = get_array_module(out)
    better = xp.empty(out.shape, dtype=bool)
    candidate = xp.empty(out.shape, dtype=winner.dtype)
    xp.copyto(out, view(0))
    for k in range(1, ksize * ksize):  # row-major order: strict '>' keeps the first of equal maxima
        v = view(k)
        xp.greater(v, out, out=better)
        # k exceeds every earlier offset, so max(winner, better * k) sets winner = k exactly
        # where v beats the running max (cheaper than a masked copy)
        xp.multiply(better, winner.dtype.type(k), out=candidate)
        xp.maximum(winner, candidate, out=winner)
        xp.maximum(out, v, out=out)  # also propagates NaN into out


def _offset_views(x, ksize, stride, pad, oh, ow, Hp, Wp):
    """A function ``k -> (N, C, oh, ow)`` view of ``xpad[n, c, oy*stride + i, ox*stride + j]``
    for kernel offset ``k = i*ksize + j``.

    Non-overlapping windows without padding that tile ``x`` exactly (``(Hp, Wp) == (H, W)``,
    e.g. the trunk's 2/2 pools) read plain strided slices of ``x``: no copy (a reshape of ``x``
    into windows, reduced offset by offset). Otherwise the views are slices of the
    ``-inf``-padded, phase-split copy of ``_column_phases``, whose unit-stride rows pay for
    the copy when windows overlap.
    """
    H, W = x.shape[2:]
    if stride == ksize and pad == 0 and (Hp, Wp) == (H, W) and not PHASES_ALWAYS:
        def view(k):
            i, j = divmod(k, ksize)
            return x[:, :, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]

        return view
    phases = _column_phases(x, pad, Hp, Wp, stride)
    return lambda k: _offset_view(phases, k, ksize, stride, oh, ow)


def _column_phases(x, pad, Hp, Wp, stride):
    """The ``-inf``-padded input with its columns split by phase (column index mod ``stride``).

    Returns ``phases`` of shape (stride, N, C, Hp, ceil(Wp / stride)) with
    ``phases[p, n, c, h, q] = xpad[n, c, h, q*stride + p]``. Window column ``ox*stride + j`` is
    then ``phases[j % stride, ..., ox + j // stride]``: every kernel-offset view has a unit-stride
    last axis, which NumPy's vectorised loops run several times faster than a strided one.
    """
    xp = get_array_module(x)
    N, C, H, W = x.shape
    Wq = -(-Wp // stride)
    if stride == 1 and pad == 0 and (Hp, Wp) == (H, W):
        return x[None]  # nothing to pad or split: a view
    phases = xp.full((stride, N, C, Hp, Wq), -np.inf, dtype=x.dtype)
    for p in range(stride):
        q0 = -(-(pad - p) // stride) if pad > p else 0  # first q with q*stride + p >= pad
        first = q0 * stride + p - pad  # the input column it holds
        if first >= W:
            continue
        src = x[:, :, :, first::stride]
        q1 = min(q0 + src.shape[3], Wq)
        phases[p, :, :, pad:pad + H, q0:q1] = src[..., :q1 - q0]
    return phases


def _offset_view(phases, k, ksize, stride, oh, ow):
    """The (N, C, oh, ow) view of the elements at kernel offset ``k = i*ksize + j``:
    ``xpad[n, c, oy*stride + i, ox*stride + j]``."""
    i, j = divmod(k, ksize)
    q = j // stride
    return phases[j % stride, :, :, i:i + stride * (oh - 1) + 1:stride, q:q + ow]


def _route_nan_to_first_nan(view, out, winner, ksize):
    """Point the winner of every NaN window at its first NaN (``>`` is False for NaN)."""
    xp = get_array_module(out)
    nan_out = xp.isnan(out)
    if xp is np and not nan_out.any():  # CuPy skips the test: it would be a host sync
        return
    for k in reversed(range(ksize * ksize)):  # reversed: the first NaN is written last
        xp.copyto(winner, winner.dtype.type(k), where=nan_out & xp.isnan(view(k)))


def _route_neg_inf_to_real_cell(out, winner, ksize, stride, pad, H, W):
    """A window whose real cells are all ``-inf`` ties with its padding; give it to the first
    real cell (as PyTorch, which never looks at padding) instead of a padded one."""
    xp = get_array_module(out)
    neg_inf = xp.isneginf(out)
    if xp is np and not neg_inf.any():  # CuPy skips the test: it would be a host sync
        return
    oh, ow = out.shape[2:]
    oy, ox = xp.arange(oh) * stride - pad, xp.arange(ow) * stride - pad  # window origins
    for k in reversed(range(ksize * ksize)):  # reversed: the first real cell is written last
        i, j = divmod(k, ksize)
        real = ((oy + i >= 0) & (oy + i < H)).reshape(oh, 1) & (ox + j >= 0) & (ox + j < W)
        xp.copyto(winner, winner.dtype.type(k), where=neg_inf & real)


def max_pool2d_backward(dout, cache: MaxPool2dCache):
    """Gradient of ``max_pool2d_forward``: each window's ``dout`` goes to its (first) maximum.

    Parameters
    ----------
    dout : ndarray of shape (N, C, oh, ow)
    cache : MaxPool2dCache

    Returns
    -------
    dx : ndarray of shape (N, C, H, W), same dtype as ``dout``
        Overlapping windows that pick the same pixel add up there.
    """
    func = "max_pool2d_backward"
    xp = array_module(func, dout=dout, winner=cache.winner)
    N, C, H, W = cache.x_shape
    oh, ow = cache.winner.shape[2:]
    check_array(dout, "dout", func, ndim=4, layout="(N, C, oh, ow)")
    if dout.shape != (N, C, oh, ow):
        raise ValueError(f"{func}: dout must have shape {(N, C, oh, ow)}, got {tuple(dout.shape)}")
    ksize, stride, pad = cache.ksize, cache.stride, cache.pad
    Hp, Wp = cache.padded_shape
    if _compiled_backward(dout, cache):  # windows inside the image: the compiled scatter
        from ..kernels import passes

        dx = np.empty((N, C, H, W), dtype=dout.dtype)
        parallel_slices(lambda p0, p1: passes.pool_backward(dout, cache.winner, ksize, stride,
                                                            dx, p0, p1),
                        N * C, N * C * H * W)
        return dx
    # flat index of every window's winner inside its image's padded (C, Hp, Wp) volume:
    # window origin (channel, oy*stride, ox*stride) + the winner's offset (i, j)
    origin = ((xp.arange(C) * (Hp * Wp)).reshape(C, 1, 1)
              + (xp.arange(oh) * (stride * Wp)).reshape(oh, 1) + xp.arange(ow) * stride)
    # flat offset i*Wp + j of kernel offset k = i*ksize + j (built on the device: no upload)
    offsets = ((xp.arange(ksize) * Wp)[:, None] + xp.arange(ksize)).ravel()
    dxpad = xp.zeros((N, C, Hp, Wp), dtype=dout.dtype)

    def scatter(n0, n1):  # images n0..n1-1 write only their own planes
        index = origin + xp.take(offsets, cache.winner[n0:n1])  # (n, C, oh, ow)
        index += (xp.arange(n1 - n0) * (C * Hp * Wp)).reshape(-1, 1, 1, 1)
        # unbuffered scatter-add: windows that picked the same pixel add up there
        scatter_add(dxpad[n0:n1].reshape(-1), index.ravel(), dout[n0:n1].ravel())

    if xp is np:
        parallel_slices(scatter, N, 4 * dout.size)
    else:
        scatter(0, N)
    if (Hp, Wp) == (H, W):  # no padding: dxpad is dx (no crop copy)
        return dxpad
    return xp.ascontiguousarray(dxpad[:, :, pad:pad + H, pad:pad + W])


PASSES_IMPL = "auto"  # "auto": the compiled backward where it runs; "xp": the NumPy scatter


def _compiled_forward(x, ksize, stride, pad, oh, ow) -> bool:
    """Whether ``max_pool2d_forward`` runs ``tinyspp/kernels/passes.cpp``'s window loop:
    C-contiguous NumPy float32/float64, no padding, every window inside the image, windows up to
    16x16 (uint8 winners), the library built (``PASSES_IMPL == "auto"``), and ``PHASES_ALWAYS``
    off (the tests' switch to the phase-split NumPy path)."""
    if PASSES_IMPL == "xp" or PHASES_ALWAYS:
        return False
    if PASSES_IMPL != "auto":
        raise ValueError(f"tinyspp.ops.pool.PASSES_IMPL must be 'auto' or 'xp', "
                         f"got {PASSES_IMPL!r}")
    from ..kernels import passes

    H, W = x.shape[2:]
    return (pad == 0 and passes.fits(x) and passes.windows_inside(H, W, ksize, stride, oh, ow)
            and passes.available())


def _compiled_backward(dout, cache) -> bool:
    """Whether ``max_pool2d_backward`` runs ``tinyspp/kernels/passes.cpp``'s scatter: NumPy
    float32/float64, no padding, every window inside the image, uint8 winners, and the
    library builds here (``PASSES_IMPL == "auto"``)."""
    if PASSES_IMPL == "xp":
        return False
    if PASSES_IMPL != "auto":
        raise ValueError(f"tinyspp.ops.pool.PASSES_IMPL must be 'auto' or 'xp', "
                         f"got {PASSES_IMPL!r}")
    from ..kernels import passes

    N, C, H, W = cache.x_shape
    oh, ow = cache.winner.shape[2:]
    return (cache.pad == 0 and cache.padded_shape == (H, W)
            and passes.fits(dout, cache.winner) and cache.winner.dtype == np.uint8
            and passes.windows_inside(H, W, cache.ksize, cache.stride, oh, ow)
            and passes.available())
