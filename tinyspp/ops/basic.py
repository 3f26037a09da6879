"""Element-wise and dense ops: ReLU, fully connected (linear) and inverted dropout.

Examples
--------
>>> import numpy as np
>>> out, cache = relu_forward(np.array([[-1.0, 2.0]]))
>>> out
array([[0., 2.]])
>>> relu_backward(np.array([[5.0, 5.0]]), cache)
array([[0., 5.]])
>>> out, cache = linear_forward(np.ones((2, 3)), np.ones((3, 4)), np.arange(4.0))
>>> out
array([[3., 4., 5., 6.],
       [3., 4., 5., 6.]])
"""

from __future__ import annotations

import numbers
from contextlib import nullcontext
from typing import NamedTuple

import numpy as np

from ..backend import get_array_module
from ..validate import check_array
from .dispatch import array_module, blas_for_ops, parallel_slices


class ReLUCache(NamedTuple):
    positive: object  # bool array shaped like x: where x > 0


class LinearCache(NamedTuple):
    x: object  # (N, D_in)
    w: object  # (D_in, D_out)


class DropoutCache(NamedTuple):
    mask: object  # kept / (1 - p) (0 where dropped), shaped like x; None when nothing was dropped


def relu_forward(x):
    """``max(x, 0)`` element-wise (NaN stays NaN).

    Parameters
    ----------
    x : ndarray of any shape, floating

    Returns
    -------
    out : ndarray shaped like ``x``
    cache : ReLUCache
    """
    xp = get_array_module(x)
    check_array(x, "x", "relu_forward")
    if xp is np and x.ndim and x.flags.c_contiguous:  # the same passes, split over threads
        out, positive = np.empty_like(x), np.empty(x.shape, dtype=bool)
        flat_x, flat_out, flat_pos = x.reshape(-1), out.reshape(-1), positive.reshape(-1)
        if _compiled(x):  # one compiled pass (tinyspp/kernels/passes.cpp)
            from ..kernels import passes

            def relu(a, b):
                passes.relu_forward(flat_x, flat_out, flat_pos, a, b)
        else:  # two NumPy passes
            def relu(a, b):
                np.maximum(flat_x[a:b], 0, out=flat_out[a:b])
                np.greater(flat_x[a:b], 0, out=flat_pos[a:b])

        parallel_slices(relu, x.size, 2 * x.size)
        return out, ReLUCache(positive)
    return xp.maximum(x, 0), ReLUCache(x > 0)


def relu_backward(dout, cache: ReLUCache):
    """``dout`` where the input was positive, 0 elsewhere; returns ``dx`` shaped like ``dout``."""
    xp = array_module("relu_backward", dout=dout, x=cache.positive)
    check_array(dout, "dout", "relu_backward")
    if dout.shape != cache.positive.shape:
        raise ValueError(
            f"relu_backward: dout must have shape {tuple(cache.positive.shape)}, "
            f"got {tuple(dout.shape)}"
        )
    boolean = getattr(cache.positive, "dtype", None) == np.bool_  # the fast paths read bytes
    if boolean and _compiled(dout, cache.positive):
        from ..kernels import passes

        dx = np.empty_like(dout)
        flat_d, flat_m, flat_dx = dout.reshape(-1), cache.positive.reshape(-1), dx.reshape(-1)
        parallel_slices(lambda a, b: passes.relu_backward(flat_d, flat_m, flat_dx, a, b),
                        dout.size, 2 * dout.size)
        return dx
    if boolean and xp is np and dout.ndim and dout.dtype.kind == "f" and dout.flags.c_contiguous:
        return _masked_copy(dout, cache.positive)
    return relu_backward_plain(dout, cache)


PASSES_IMPL = "auto"  # "auto": the compiled ReLU passes where they run; "xp": NumPy (tests)


def _compiled(*arrays) -> bool:
    """Whether ReLU runs the compiled pass: ``PASSES_IMPL == "auto"``, C-contiguous NumPy
    float32/float64 arrays (a bool mask beside them) and the library builds here."""
    if PASSES_IMPL == "xp" or not arrays[0].ndim:
        return False
    if PASSES_IMPL != "auto":
        raise ValueError(f"tinyspp.ops.basic.PASSES_IMPL must be 'auto' or 'xp', "
                         f"got {PASSES_IMPL!r}")
    from ..kernels import passes

    return passes.fits(*arrays) and passes.available()


def relu_backward_plain(dout, cache: ReLUCache):
    """The plain twin of ``relu_backward``'s fast path (and its path on CuPy): ``np.where``."""
    xp = get_array_module(dout)
    return xp.where(cache.positive, dout, 0)


def _masked_copy(dout, keep):
    """``where(keep, dout, 0)`` as one bitwise AND: ``keep`` becomes an integer mask of all-ones
    (-1) or zeros of ``dout``'s width, and ``dout``'s bits AND that mask are ``dout`` or +0.0.
    Bit for bit ``np.where``'s result (NaN and -0.0 included), ~9x faster on NumPy, whose
    ``where`` has no fast loop for a scalar branch."""
    ints = np.dtype(f"i{dout.dtype.itemsize}")
    out = np.empty(dout.shape, dtype=ints)
    keep = np.ascontiguousarray(keep).view(np.int8).reshape(-1)
    bits, flat = dout.view(ints).reshape(-1), out.reshape(-1)

    def mask(a, b):
        np.negative(keep[a:b], out=flat[a:b], casting="unsafe")  # True -> -1, False -> 0
        np.bitwise_and(bits[a:b], flat[a:b], out=flat[a:b])

    parallel_slices(mask, dout.size, 2 * dout.size)
    return out.view(dout.dtype)


def linear_forward(x, w, b):
    """Fully connected layer ``out = x @ w + b``.

    Parameters
    ----------
    x : ndarray of shape (N, D_in)
    w : ndarray of shape (D_in, D_out)
        Stored input-major, so the forward pass is a plain ``x @ w`` (PyTorch stores the
        transpose, ``(D_out, D_in)``).
    b : ndarray of shape (D_out,)

    Returns
    -------
    out : ndarray of shape (N, D_out)
    cache : LinearCache
    """
    func = "linear_forward"
    xp = array_module(func, x=x, w=w, b=b)
    N, D_in = check_array(x, "x", func, ndim=2, layout="(N, D_in)")
    Dw, D_out = check_array(w, "w", func, ndim=2, layout="(D_in, D_out)")
    check_array(b, "b", func, ndim=1, layout="(D_out,)")
    if min(N, D_in) < 1:
        raise ValueError(f"{func}: x must have no empty axis, got shape {(N, D_in)}")
    if Dw != D_in or D_out < 1:
        raise ValueError(f"{func}: w must have shape (D_in={D_in}, D_out >= 1), got {(Dw, D_out)}")
    if b.shape != (D_out,):
        raise ValueError(f"{func}: b must have shape (D_out,) = ({D_out},), got {tuple(b.shape)}")
    with blas_for_ops(N * w.size) if xp is np else nullcontext():
        return x @ w + b, LinearCache(x, w)


def linear_backward(dout, cache: LinearCache, need_dx: bool = True):
    """Gradients of ``linear_forward``.

    Parameters
    ----------
    dout : ndarray of shape (N, D_out)
    cache : LinearCache
    need_dx : bool, default True
        False skips the input gradient (a GEMM) and returns ``dx = None``.

    Returns
    -------
    dx : ndarray of shape (N, D_in), or None when ``need_dx`` is False
    dw : ndarray of shape (D_in, D_out)
    db : ndarray of shape (D_out,)
    """
    xp = array_module("linear_backward", dout=dout, w=cache.w)
    check_array(dout, "dout", "linear_backward", ndim=2, layout="(N, D_out)")
    expected = (cache.x.shape[0], cache.w.shape[1])
    if dout.shape != expected:
        raise ValueError(f"linear_backward: dout must have shape {expected}, got {dout.shape}")
    with blas_for_ops(dout.shape[0] * cache.w.size) if xp is np else nullcontext():
        dx = dout @ cache.w.T if need_dx else None
        return dx, cache.x.T @ dout, dout.sum(axis=0)


def dropout_forward(x, p: float, rng, training: bool = True):
    """Inverted dropout: zero each element with probability ``p``, scale survivors by 1/(1-p).

    Scaling at training time keeps the expected activation unchanged, so evaluation
    (``training=False``) is the identity.

    Parameters
    ----------
    x : ndarray of any shape, floating
    p : float in [0, 1)
        Drop probability.
    rng : numpy.random.Generator or int
        Source of the mask. The mask is always drawn on the host by this NumPy generator
        (``rng.random(x.shape, dtype=float32)`` compared with ``p``) and, for a CuPy ``x``, copied
        to the device: the same seed gives the same mask on CPU and GPU. An int seeds a fresh
        generator (the same mask on every call: pass a Generator to a training loop).
    training : bool, default True
        When False (or ``p == 0``) return ``x`` unchanged.

    Returns
    -------
    out : ndarray shaped like ``x``
    cache : DropoutCache

    >>> import numpy as np
    >>> out, _ = dropout_forward(np.ones(8), 0.5, rng=0)
    >>> sorted(set(out.tolist()))
    [0.0, 2.0]
    """
    func = "dropout_forward"
    xp = get_array_module(x)
    check_array(x, "x", func)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
        raise ValueError(f"{func}: p must be a float in [0, 1), got {p!r}")
    if not training or p == 0.0:
        return x, DropoutCache(None)
    if not isinstance(rng, np.random.Generator | numbers.Integral) or isinstance(rng, bool):
        raise TypeError(
            f"{func}: rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}"
        )
    rng = np.random.default_rng(rng)
    keep = rng.random(x.shape, dtype=np.float32) >= p
    mask = xp.asarray(keep, dtype=x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    return x * mask, DropoutCache(mask)


def dropout_backward(dout, cache: DropoutCache):
    """``dout`` times the forward mask (identity when the forward dropped nothing)."""
    array_module("dropout_backward", dout=dout, mask=cache.mask)
    check_array(dout, "dout", "dropout_backward")
    if cache.mask is None:
        return dout
    if dout.shape != cache.mask.shape:
        raise ValueError(
            f"dropout_backward: dout must have shape {tuple(cache.mask.shape)}, got {dout.shape}"
        )
    return dout * cache.mask
