"""Layer classes: parameters, their gradients and a cache around the pure ops of ``tinyspp.ops``.

Every layer has

- ``params``: dict name -> array (``{}`` for a layer without parameters);
- ``grads``: the same keys, *overwritten* (not accumulated) by each ``backward``;
- ``training``: bool, switched by ``train()`` / ``eval()`` (only ``Dropout`` cares);
- ``forward(x)`` (also ``layer(x)``), which keeps the op's cache, and ``backward(dout) -> dx``;
- ``to(device)`` (``"cpu"`` / ``"gpu"``), which moves the parameters and returns the layer.

Initialisation (He et al. 2015, "Delving deep into rectifiers"): weights are drawn from
``N(0, 2 / fan_in)`` with ``fan_in = C*k*k`` (conv) or ``D_in`` (linear), biases are 0. The
``rng`` argument is an int seed or a ``np.random.Generator``; the default ``None`` means seed 0,
so a layer built twice with the default gets the same weights. To build a network pass one
Generator to every layer (each draws from it in turn). Parameters are float32 by default
(``dtype=np.float64`` for gradient checks).

Examples
--------
>>> import numpy as np
>>> conv = Conv2d(3, 8, 3, pad=1, rng=0)
>>> conv.params["w"].shape, conv.params["b"].shape
((8, 3, 3, 3), (8,))
>>> y = conv(np.zeros((2, 3, 5, 7), np.float32))
>>> y.shape
(2, 8, 5, 7)
>>> conv.backward(np.ones_like(y)).shape
(2, 3, 5, 7)
>>> sorted(conv.grads)
['b', 'w']
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import ops
from ..backend import check_device, to_device
from ..bins import DEFAULT_LEVELS, MODES
from ..validate import check_array, check_choice, check_int, check_levels


def make_rng(rng, func: str) -> np.random.Generator:
    """``rng`` as a Generator: an int seeds a new one, None means seed 0, a Generator is kept."""
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"{func}: rng must be None, an int seed or a numpy.random.Generator, "
        f"got {type(rng).__name__}"
    )


def he_normal(shape, fan_in: int, rng: np.random.Generator, dtype) -> np.ndarray:
    """Weights from ``N(0, 2 / fan_in)`` (He initialisation for ReLU networks)."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


class Layer:
    """Base class of every layer; subclasses define ``forward`` and ``backward``.

    ``forward`` keeps what ``backward`` needs in ``self._cache`` (an op's NamedTuple cache).
    """

    def __init__(self):
        self.params: dict = {}
        self.grads: dict = {}
        self.training: bool = True
        self._cache = None

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def _saved_cache(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward first")
        return self._cache

    def train(self, mode: bool = True):
        """Switch to training mode (``mode=False``: evaluation); returns ``self``."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Switch to evaluation mode; returns ``self``."""
        return self.train(False)

    def to(self, device: str):
        """Move parameters and gradients to ``"cpu"`` or ``"gpu"``; returns ``self``."""
        check_device(device, f"{type(self).__name__}.to")
        self.params = {k: to_device(v, device) for k, v in self.params.items()}
        self.grads = {k: to_device(v, device) for k, v in self.grads.items()}
        self._cache = None
        return self

    def astype(self, dtype):
        """Cast parameters (and gradients) to ``dtype``, e.g. ``np.float64``; returns ``self``."""
        self.params = {k: v.astype(dtype) for k, v in self.params.items()}
        self.grads = {k: v.astype(dtype) for k, v in self.grads.items()}
        return self

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class Conv2d(Layer):
    """2-D convolution with a square ``ksize x ksize`` kernel (``tinyspp.ops.conv2d_forward``).

    Parameters
    ----------
    in_channels, out_channels : int
        ``C`` and ``F``.
    ksize : int
        Kernel height and width.
    stride : int, default 1
    pad : int, default 0
        Zero padding on every side.
    rng : None, int or np.random.Generator
        He initialisation of ``w``; ``None`` means seed 0.
    dtype : default np.float32
    keep_cols : bool, default False
        Keep the im2col columns from forward to backward (one copy less per step, but
        ``ksize*ksize`` times the input's memory held by every conv layer until its backward);
        by default the layer keeps its input and the backward gathers the columns again.
        With ``keep_cols=True`` each forward also reuses the last batch's columns as its buffer.
        A layer that one of the direct kernels runs (``tinyspp.ops.conv``) has no columns to
        keep: it keeps its input (or, for the blocked kernel, its input and filters in blocks).

    Shapes: ``(N, C, H, W) -> (N, F, oh, ow)``, ``oh = (H + 2*pad - ksize) // stride + 1``.
    Parameters: ``w`` (F, C, ksize, ksize), ``b`` (F,).
    """

    def __init__(self, in_channels: int, out_channels: int, ksize: int, stride: int = 1,
                 pad: int = 0, rng=None, dtype=np.float32, keep_cols: bool = False):
        super().__init__()
        func = "Conv2d"
        self.in_channels = check_int(in_channels, "in_channels", func)
        self.out_channels = check_int(out_channels, "out_channels", func)
        self.ksize = check_int(ksize, "ksize", func)
        self.stride = check_int(stride, "stride", func)
        self.pad = check_int(pad, "pad", func, minimum=0)
        self.keep_cols = bool(keep_cols)
        rng = make_rng(rng, func)
        F, C, k = self.out_channels, self.in_channels, self.ksize
        self.params = {"w": he_normal((F, C, k, k), C * k * k, rng, dtype),
                       "b": np.zeros(F, dtype=dtype)}

    def forward(self, x):
        # the last batch's im2col columns become this batch's buffer (same size in a training
        # loop: no fresh allocation); dropping the old cache first keeps one copy alive, not two
        workspace = self._cache.cols if self._cache is not None else None
        self._cache = None
        out, self._cache = ops.conv2d_forward(x, self.params["w"], self.params["b"],
                                              stride=self.stride, pad=self.pad,
                                              workspace=workspace, keep_cols=self.keep_cols)
        return out

    def backward(self, dout, need_dx: bool = True):
        """Fill ``grads``; return ``dx`` (None when ``need_dx`` is False: saves a GEMM)."""
        dx, self.grads["w"], self.grads["b"] = ops.conv2d_backward(
            dout, self._saved_cache(), need_dx=need_dx
        )
        return dx

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, ksize={self.ksize}, "
                f"stride={self.stride}, pad={self.pad}")


class Linear(Layer):
    """Fully connected layer ``x @ w + b`` (``tinyspp.ops.linear_forward``).

    Parameters
    ----------
    in_features, out_features : int
        ``D_in`` and ``D_out``.
    rng : None, int or np.random.Generator
        He initialisation of ``w``; ``None`` means seed 0.
    dtype : default np.float32

    Shapes: ``(N, D_in) -> (N, D_out)``. Parameters: ``w`` (D_in, D_out), ``b`` (D_out,).
    """

    def __init__(self, in_features: int, out_features: int, rng=None, dtype=np.float32):
        super().__init__()
        self.in_features = check_int(in_features, "in_features", "Linear")
        self.out_features = check_int(out_features, "out_features", "Linear")
        rng = make_rng(rng, "Linear")
        D_in, D_out = self.in_features, self.out_features
        self.params = {"w": he_normal((D_in, D_out), D_in, rng, dtype),
                       "b": np.zeros(D_out, dtype=dtype)}

    def forward(self, x):
        out, self._cache = ops.linear_forward(x, self.params["w"], self.params["b"])
        return out

    def backward(self, dout, need_dx: bool = True):
        """Fill ``grads``; return ``dx`` (None when ``need_dx`` is False: saves a GEMM)."""
        dx, self.grads["w"], self.grads["b"] = ops.linear_backward(dout, self._saved_cache(),
                                                                   need_dx=need_dx)
        return dx

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}"


class ReLU(Layer):
    """``max(x, 0)``, any shape."""

    def forward(self, x):
        out, self._cache = ops.relu_forward(x)
        return out

    def backward(self, dout):
        return ops.relu_backward(dout, self._saved_cache())


class MaxPool2d(Layer):
    """Max pooling over ``ksize x ksize`` windows (``tinyspp.ops.max_pool2d_forward``).

    Parameters
    ----------
    ksize : int
    stride : int, optional
        Defaults to ``ksize``.
    pad : int, default 0
        ``-inf`` padding, at most ``ksize // 2``.
    ceil_mode : bool, default False

    Shapes: ``(N, C, H, W) -> (N, C, oh, ow)`` with ``oh = ops.pool_output_size(H, ...)``.
    """

    def __init__(self, ksize: int, stride: int | None = None, pad: int = 0,
                 ceil_mode: bool = False):
        super().__init__()
        self.ksize = check_int(ksize, "ksize", "MaxPool2d")
        self.stride = self.ksize if stride is None else check_int(stride, "stride", "MaxPool2d")
        self.pad = check_int(pad, "pad", "MaxPool2d", minimum=0)
        if self.pad > self.ksize // 2:
            raise ValueError(f"MaxPool2d: pad must be <= ksize // 2 = {self.ksize // 2}, "
                             f"got {self.pad}")
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x):
        out, self._cache = ops.max_pool2d_forward(x, self.ksize, stride=self.stride,
                                                  pad=self.pad, ceil_mode=self.ceil_mode)
        return out

    def backward(self, dout):
        return ops.max_pool2d_backward(dout, self._saved_cache())

    def extra_repr(self):
        return f"ksize={self.ksize}, stride={self.stride}, pad={self.pad}"


class SpatialPyramidPooling(Layer):
    """Spatial pyramid pooling (``tinyspp.ops.spp_forward``): any map size to a fixed length.

    Parameters
    ----------
    levels : sequence of int, default (6, 3, 2, 1)
        Bins per side of each level.
    mode : {"adaptive", "paper", "caffe"}
        Bin rule (see ``tinyspp.bins``).
    pool : {"max", "avg"}
    impl : {"auto", "xp", "cuda", "emulate"}
        Passed to ``spp_forward`` (``auto``: the CUDA kernel for CuPy inputs).

    Shapes: ``(N, C, H, W) -> (N, C * sum(n*n))`` for every ``H, W`` the bin rule accepts.
    """

    def __init__(self, levels=DEFAULT_LEVELS, mode: str = "adaptive", pool: str = "max",
                 impl: str = "auto"):
        super().__init__()
        func = "SpatialPyramidPooling"
        self.levels = check_levels(levels, func)
        self.mode = check_choice(mode, "mode", func, MODES)
        self.pool = check_choice(pool, "pool", func, ("max", "avg"))
        self.impl = check_choice(impl, "impl", func, ("auto", "xp", "cuda", "emulate", "kernel"))

    def forward(self, x):
        out, self._cache = ops.spp_forward(x, levels=self.levels, mode=self.mode,
                                           pool=self.pool, impl=self.impl)
        return out

    def backward(self, dout):
        return ops.spp_backward(dout, self._saved_cache())

    def output_length(self, channels: int) -> int:
        """``channels * sum(n*n)``: the output width for ``channels`` input channels."""
        return check_int(channels, "channels", "output_length") * sum(n * n for n in self.levels)

    def extra_repr(self):
        return f"levels={self.levels}, mode={self.mode!r}, pool={self.pool!r}"


class Dropout(Layer):
    """Inverted dropout (``tinyspp.ops.dropout_forward``); the identity in evaluation mode.

    Parameters
    ----------
    p : float in [0, 1), default 0.5
        Drop probability.
    rng : None, int or np.random.Generator
        Source of the masks, kept as the public attribute ``rng`` (a Generator; ``None`` means
        seed 0). Assign a new Generator to ``layer.rng`` to replay or reseed the masks.
    """

    def __init__(self, p: float = 0.5, rng=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be a float in [0, 1), got {p!r}")
        self.p = float(p)
        self.rng = make_rng(rng, "Dropout")

    def forward(self, x):
        out, self._cache = ops.dropout_forward(x, self.p, self.rng, training=self.training)
        return out

    def backward(self, dout):
        return ops.dropout_backward(dout, self._saved_cache())

    def extra_repr(self):
        return f"p={self.p}"


class Flatten(Layer):
    """``(N, ...) -> (N, prod(...))``, e.g. a pooled map to a fc layer's input."""

    def forward(self, x):
        shape = check_array(x, "x", "Flatten.forward")
        if len(shape) < 1:
            raise ValueError("Flatten.forward: x must have a batch axis, got a 0-D array")
        self._cache = shape
        return x.reshape(shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self._saved_cache())
