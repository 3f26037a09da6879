"""A small ZF-like SPP-net and its no-SPP twin, sized to train in minutes on 2 CPU cores.

Both share one trunk (conv-relu-pool, conv-relu-pool, conv-relu; total stride 4), built from the
same seed so that they start from identical trunk weights:

========================  ====================================  ============================
layer                     SPP-net (any input >= 4 x 4)          no-SPP baseline (s x s only)
========================  ====================================  ============================
conv1 5x5, pad 2 + ReLU   ``(N, C, H, W) -> (N, w1, H, W)``     same
max pool 2x2, stride 2    ``-> (N, w1, H/2, W/2)``              same
conv2 3x3, pad 1 + ReLU   ``-> (N, w2, H/2, W/2)``              same
max pool 2x2, stride 2    ``-> (N, w2, H/4, W/4)``              same
conv3 3x3, pad 1 + ReLU   ``-> (N, w3, H/4, W/4)``: the trunk   same
pooling                   SPP ``levels`` -> ``(N, w3*M)``       fixed max pool to n x n bins
fc + ReLU + dropout, fc   ``-> (N, num_classes)``               same
========================  ====================================  ============================

``M = sum(n*n)`` over the pyramid levels (21 for the default ``(4, 2, 1)``). The baseline's fixed
pooling is the pyramid's finest level computed the way a fixed-size network does it (window
``ceil(a/n)``, stride ``floor(a/n)`` on the ``a x a`` conv3 map of its one input size ``s``), so
the two nets differ exactly by the pyramid, as in the paper's Table 2. Given any other input size
the baseline raises a ValueError before computing anything.

Examples
--------
>>> import numpy as np
>>> net = small_spp_net(5, widths=(4, 8, 8), hidden=16, seed=0)
>>> net.forward(np.zeros((2, 3, 20, 28), np.float32)).shape
(2, 5)
>>> base = no_spp_net(5, input_size=16, widths=(4, 8, 8), hidden=16, seed=0)
>>> base.forward(np.zeros((2, 3, 16, 16), np.float32)).shape
(2, 5)
>>> trunk, head = split_trunk_head(net)
>>> trunk_stride(trunk)
4
"""

from __future__ import annotations

import math

import numpy as np

from ..bins import spp_output_length
from ..validate import check_int, check_levels
from .layers import (
    Conv2d,
    Dropout,
    Flatten,
    Layer,
    Linear,
    MaxPool2d,
    ReLU,
    SpatialPyramidPooling,
)
from .sequential import Sequential

TRUNK_STRIDE = 4


class FixedInputSize(Layer):
    """Identity that accepts only inputs of spatial size ``size x size``.

    The first layer of the no-SPP baseline: its fc layer was built for one input size, and a
    clear error at the entrance beats a shape mismatch deep inside a matrix product.
    """

    def __init__(self, size: int):
        super().__init__()
        self.size = check_int(size, "size", "FixedInputSize")

    def forward(self, x):
        H, W = x.shape[-2:]
        if (H, W) != (self.size, self.size):
            raise ValueError(
                f"no_spp_net: this network without SPP accepts only {self.size}x{self.size} "
                f"inputs, got {H}x{W}; crop or warp the image to {self.size}x{self.size}, "
                "or use small_spp_net, whose pyramid pooling accepts any size")
        return x

    def backward(self, dout):
        return dout


def _trunk(in_channels: int, widths, rng) -> list:
    w1, w2, w3 = widths
    return [
        Conv2d(in_channels, w1, 5, pad=2, rng=rng), ReLU(), MaxPool2d(2, stride=2),
        Conv2d(w1, w2, 3, pad=1, rng=rng), ReLU(), MaxPool2d(2, stride=2),
        Conv2d(w2, w3, 3, pad=1, rng=rng), ReLU(),
    ]


def _head(features: int, hidden: int, num_classes: int, dropout: float, rng) -> list:
    return [Linear(features, hidden, rng=rng), ReLU(), Dropout(dropout, rng=rng),
            Linear(hidden, num_classes, rng=rng)]


def _check(num_classes, in_channels, widths, hidden, func):
    check_int(num_classes, "num_classes", func, minimum=2)
    check_int(in_channels, "in_channels", func)
    check_int(hidden, "hidden", func)
    widths = tuple(widths)
    if len(widths) != 3:
        raise ValueError(f"{func}: widths must be 3 channel counts (conv1-3), got {widths}")
    return tuple(check_int(w, "widths", func) for w in widths)


def small_spp_net(num_classes: int, in_channels: int = 3, *, levels=(4, 2, 1),
                  mode: str = "adaptive", widths=(16, 32, 64), hidden: int = 128,
                  dropout: float = 0.5, seed=0) -> Sequential:
    """The small SPP-net: trunk, spatial pyramid pooling, fc-ReLU-dropout-fc.

    Parameters
    ----------
    num_classes : int
    in_channels : int
        ``C`` of the input (3 for colour, 1 for grey).
    levels : sequence of int
        Pyramid bins per side (default ``(4, 2, 1)``: 21 bins per channel).
    mode : str
        Bin rule of the pyramid (see :mod:`tinyspp.bins`).
    widths : (int, int, int)
        Output channels of conv1, conv2, conv3.
    hidden : int
        Width of the hidden fc layer.
    dropout : float
        Dropout probability on the hidden fc layer.
    seed : int or np.random.Generator
        Initialisation.

    Returns
    -------
    Sequential mapping (N, in_channels, H, W) with H, W >= 4 to logits (N, num_classes).
    """
    func = "small_spp_net"
    widths = _check(num_classes, in_channels, widths, hidden, func)
    levels = check_levels(levels, func)
    rng = np.random.default_rng(seed)
    layers = _trunk(in_channels, widths, rng)
    layers.append(SpatialPyramidPooling(levels=levels, mode=mode))
    layers += _head(spp_output_length(widths[2], levels), hidden, num_classes, dropout, rng)
    return Sequential(*layers)


def no_spp_net(num_classes: int, in_channels: int = 3, *, input_size: int = 32, bins: int = 4,
               widths=(16, 32, 64), hidden: int = 128, dropout: float = 0.5,
               seed=0) -> Sequential:
    """The no-SPP baseline: same trunk, one fixed max pooling to ``bins x bins``, same fc head.

    Parameters
    ----------
    input_size : int
        The only input size ``s`` it accepts (s x s).
    bins : int
        Bins per side of the fixed pooling (the finest pyramid level of the SPP-net).

    Other parameters are those of :func:`small_spp_net` (with the same ``seed`` the trunk starts
    from the same weights).

    Returns
    -------
    Sequential mapping (N, in_channels, s, s) to logits (N, num_classes).
    """
    func = "no_spp_net"
    widths = _check(num_classes, in_channels, widths, hidden, func)
    input_size = check_int(input_size, "input_size", func, minimum=4)
    bins = check_int(bins, "bins", func)
    a = input_size // TRUNK_STRIDE  # conv3 map side for this input size
    if a < bins:
        raise ValueError(f"{func}: input_size {input_size} gives a {a}x{a} conv3 map, smaller "
                         f"than bins={bins}")
    win, stride = math.ceil(a / bins), a // bins  # the paper's fixed-size pooling (Sec. 2.3)
    out = (a - win) // stride + 1
    rng = np.random.default_rng(seed)
    layers = [FixedInputSize(input_size), *_trunk(in_channels, widths, rng)]
    layers += [MaxPool2d(win, stride=stride), Flatten()]
    layers += _head(widths[2] * out * out, hidden, num_classes, dropout, rng)
    return Sequential(*layers)


def trunk_end(net) -> int:
    """Index of the first layer after the trunk: after the last Conv2d and its ReLU."""
    layers = list(net)
    convs = [i for i, layer in enumerate(layers) if isinstance(layer, Conv2d)]
    if not convs:
        raise ValueError("trunk_end: the network has no Conv2d layer")
    end = convs[-1] + 1
    while end < len(layers) and isinstance(layers[end], ReLU):
        end += 1
    return end


def split_trunk_head(net) -> tuple:
    """Split a model into ``(trunk, head)`` sharing its layers (and parameters).

    ``trunk`` maps images (N, C, H, W) to conv3 features (N, w3, H/4, W/4) -- what detection
    computes once per image; ``head`` maps them to logits (the SPP or fixed pooling, then fc).
    ``head.forward(trunk.forward(x))`` equals ``net.forward(x)``.
    """
    end = trunk_end(net)
    return net[:end], net[end:]


def trunk_layers_geometry(trunk) -> list[tuple[str, int, int, int]]:
    """``(name, ksize, stride, pad)`` of every layer that changes the geometry, in order."""
    out = []
    for layer in trunk:
        if hasattr(layer, "stride") and hasattr(layer, "ksize"):
            k = layer.ksize if isinstance(layer.ksize, int) else layer.ksize[0]
            s = layer.stride if isinstance(layer.stride, int) else layer.stride[0]
            out.append((type(layer).__name__, int(k), int(s), int(getattr(layer, "pad", 0))))
    return out


def trunk_stride(trunk) -> int:
    """Product of the strides of the trunk: feature cells are this many pixels apart."""
    return int(np.prod([s for _, _, s, _ in trunk_layers_geometry(trunk)] or [1]))
