"""Every public op and layer rejects bad input with a ValueError/TypeError naming the function
and the argument."""

import numpy as np
import pytest

from tinyspp import ops
from tinyspp.nn import (
    SGD,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    Sequential,
    SpatialPyramidPooling,
)


class FakeCupyArray:
    """Looks like a CuPy array to ``tinyspp.backend.is_gpu_array`` (no GPU needed)."""

    __module__ = "cupy._core.core"
    __cuda_array_interface__ = {}
    ndim, dtype = 4, np.dtype(np.float32)

    def __init__(self, shape=(1, 1, 4, 4)):
        self.shape = shape


x4 = np.zeros((1, 2, 5, 5))
w4 = np.zeros((3, 2, 3, 3))
b1 = np.zeros(3)


def expect(error, *fragments):
    """pytest.raises whose message must contain every fragment (function, argument, ...)."""
    return pytest.raises(error, match="".join(f"(?=.*{f})" for f in fragments))


# --------------------------------------------------------------------------------------- conv

@pytest.mark.parametrize("args, error, fragments", [
    ((np.zeros((2, 5, 5)), w4, b1), ValueError, ["x", "4-D"]),
    ((x4, np.zeros((3, 2, 3)), b1), ValueError, ["w", "4-D"]),
    ((x4, w4, np.zeros((3, 1))), ValueError, ["b", "1-D"]),
    ((x4.astype(int), w4, b1), TypeError, ["x", "floating"]),
    ((x4, w4.astype(np.int32), b1), TypeError, ["w", "floating"]),
    ((x4, np.zeros((3, 4, 3, 3)), b1), ValueError, ["w", "C=2"]),
    ((x4, np.zeros((3, 2, 0, 3)), b1), ValueError, ["w", "kh"]),
    ((x4, w4, np.zeros(4)), ValueError, ["b", r"\(3,\)"]),
    ((np.zeros((0, 2, 5, 5)), w4, b1), ValueError, ["x", "empty"]),
    ((np.zeros((1, 2, 2, 2)), w4, b1), ValueError, ["does not fit"]),
    (([[1.0]], w4, b1), TypeError, ["x", "ndarray"]),
])
def test_conv2d_forward_rejects(args, error, fragments):
    with expect(error, "conv2d_forward", *fragments):
        ops.conv2d_forward(*args)


@pytest.mark.parametrize("kw, error, name", [
    ({"stride": 0}, ValueError, "stride"), ({"pad": -1}, ValueError, "pad"),
    ({"stride": 1.5}, TypeError, "stride"), ({"pad": True}, TypeError, "pad"),
])
def test_conv2d_forward_rejects_bad_hyper_parameters(kw, error, name):
    with expect(error, "conv2d_forward", name):
        ops.conv2d_forward(x4, w4, b1, **kw)


def test_backward_functions_reject_wrong_dout():
    out, cache = ops.conv2d_forward(x4, w4, b1)
    with expect(ValueError, "conv2d_backward", "dout", "shape"):
        ops.conv2d_backward(np.zeros((1, 3, 2, 2)), cache)
    with expect(TypeError, "conv2d_backward", "dout", "floating"):
        ops.conv2d_backward(out.astype(int), cache)
    out, cache = ops.max_pool2d_forward(x4, 2)
    with expect(ValueError, "max_pool2d_backward", "dout", "4-D"):
        ops.max_pool2d_backward(out[0], cache)
    out, cache = ops.linear_forward(np.zeros((2, 3)), np.zeros((3, 4)), np.zeros(4))
    with expect(ValueError, "linear_backward", "dout"):
        ops.linear_backward(np.zeros((2, 5)), cache)
    out, cache = ops.relu_forward(x4)
    with expect(ValueError, "relu_backward", "dout"):
        ops.relu_backward(np.zeros(3), cache)
    out, cache = ops.dropout_forward(x4, 0.5, rng=0)
    with expect(ValueError, "dropout_backward", "dout"):
        ops.dropout_backward(np.zeros(3), cache)


# --------------------------------------------------------------------------------------- pool

@pytest.mark.parametrize("x, kw, error, fragments", [
    (np.zeros((5, 5)), {"ksize": 2}, ValueError, ["x", "4-D"]),
    (x4.astype(np.int64), {"ksize": 2}, TypeError, ["x", "floating"]),
    (x4, {"ksize": 0}, ValueError, ["ksize", ">= 1"]),
    (x4, {"ksize": 2, "stride": 0}, ValueError, ["stride", ">= 1"]),
    (x4, {"ksize": 2, "pad": 2}, ValueError, ["pad", "ksize // 2"]),
    (x4, {"ksize": 2, "pad": -1}, ValueError, ["pad", ">= 0"]),
    (x4, {"ksize": 7}, ValueError, ["does not fit"]),
    (x4, {"ksize": 2.0}, TypeError, ["ksize", "integer"]),
])
def test_max_pool2d_forward_rejects(x, kw, error, fragments):
    with expect(error, "max_pool2d_forward", *fragments):
        ops.max_pool2d_forward(x, **kw)


# ------------------------------------------------------------------------ basic ops and loss

def test_basic_ops_reject_bad_input():
    with expect(TypeError, "relu_forward", "x", "floating"):
        ops.relu_forward(np.arange(3))
    with expect(ValueError, "linear_forward", "x", "2-D"):
        ops.linear_forward(np.zeros(3), np.zeros((3, 2)), np.zeros(2))
    with expect(ValueError, "linear_forward", "w", "D_in=3"):
        ops.linear_forward(np.zeros((1, 3)), np.zeros((4, 2)), np.zeros(2))
    with expect(ValueError, "linear_forward", "b"):
        ops.linear_forward(np.zeros((1, 3)), np.zeros((3, 2)), np.zeros(3))
    with expect(TypeError, "linear_forward", "w", "floating"):
        ops.linear_forward(np.zeros((1, 3)), np.zeros((3, 2), int), np.zeros(2))
    with expect(ValueError, "linear_forward", "x", "empty"):
        ops.linear_forward(np.zeros((0, 3)), np.zeros((3, 2)), np.zeros(2))
    with expect(TypeError, "dropout_forward", "x", "floating"):
        ops.dropout_forward(np.arange(3), 0.5, rng=0)
    for p in (1.0, -0.1, "0.5", True):
        with expect(ValueError, "dropout_forward", "p"):
            ops.dropout_forward(np.zeros(3), p, rng=0)
    with expect(TypeError, "dropout_forward", "rng"):
        ops.dropout_forward(np.zeros(3), 0.5, rng="seed")


@pytest.mark.parametrize("logits, labels, error, fragments", [
    (np.zeros(3), np.zeros(3, int), ValueError, ["logits", "2-D"]),
    (np.zeros((2, 3), int), np.zeros(2, int), TypeError, ["logits", "floating"]),
    (np.zeros((2, 3)), np.zeros(2), TypeError, ["labels", "integer"]),
    (np.zeros((2, 3)), np.zeros((2, 1), int), ValueError, ["labels", r"\(N,\)"]),
    (np.zeros((2, 3)), np.array([0, 3]), ValueError, ["labels", r"\[0, 3\)"]),
    (np.zeros((2, 3)), np.array([-1, 0]), ValueError, ["labels", "min -1"]),
    (np.zeros((0, 3)), np.zeros(0, int), ValueError, ["logits", "empty"]),
])
def test_softmax_cross_entropy_rejects(logits, labels, error, fragments):
    with expect(error, "softmax_cross_entropy", *fragments):
        ops.softmax_cross_entropy(logits, labels)


# --------------------------------------------------------------------------- mixed modules

def test_mixed_numpy_and_cupy_arrays_name_the_argument():
    fake = FakeCupyArray()
    with expect(TypeError, "conv2d_forward", "w is cupy", "x is numpy"):
        ops.conv2d_forward(x4, fake, b1)
    with expect(TypeError, "linear_forward", "x is cupy"):
        ops.linear_forward(fake, np.zeros((3, 2)), np.zeros(2))
    with expect(TypeError, "softmax_cross_entropy", "labels is cupy"):
        ops.softmax_cross_entropy(np.zeros((2, 3)), fake)
    _, cache = ops.conv2d_forward(x4, w4, b1)
    with expect(TypeError, "conv2d_backward", "dout is cupy"):
        ops.conv2d_backward(fake, cache)
    _, cache = ops.max_pool2d_forward(x4, 2)
    with expect(TypeError, "max_pool2d_backward", "dout is cupy"):
        ops.max_pool2d_backward(fake, cache)
    _, cache = ops.linear_forward(np.zeros((2, 3)), np.zeros((3, 2)), np.zeros(2))
    with expect(TypeError, "linear_backward", "dout is cupy"):
        ops.linear_backward(fake, cache)
    _, cache = ops.relu_forward(x4)
    with expect(TypeError, "relu_backward", "dout is cupy"):
        ops.relu_backward(fake, cache)
    _, cache = ops.dropout_forward(x4, 0.5, rng=0)
    with expect(TypeError, "dropout_backward", "dout is cupy"):
        ops.dropout_backward(fake, cache)
    # a layer whose parameters are on the CPU, fed a GPU array
    with expect(TypeError, "conv2d_forward", "x is cupy", "w is numpy"):
        Conv2d(1, 2, 3)(fake)


# ------------------------------------------------------------------------------------- layers

@pytest.mark.parametrize("make, error, fragments", [
    (lambda: Conv2d(0, 4, 3), ValueError, ["Conv2d", "in_channels"]),
    (lambda: Conv2d(3, 0, 3), ValueError, ["Conv2d", "out_channels"]),
    (lambda: Conv2d(3, 4, 0), ValueError, ["Conv2d", "ksize"]),
    (lambda: Conv2d(3, 4, 3, stride=0), ValueError, ["Conv2d", "stride"]),
    (lambda: Conv2d(3, 4, 3, pad=-1), ValueError, ["Conv2d", "pad"]),
    (lambda: Conv2d(3, 4, 3, rng="x"), TypeError, ["Conv2d", "rng"]),
    (lambda: Conv2d(3.0, 4, 3), TypeError, ["Conv2d", "in_channels"]),
    (lambda: Linear(0, 2), ValueError, ["Linear", "in_features"]),
    (lambda: Linear(2, -1), ValueError, ["Linear", "out_features"]),
    (lambda: MaxPool2d(0), ValueError, ["MaxPool2d", "ksize"]),
    (lambda: MaxPool2d(3, stride=0), ValueError, ["MaxPool2d", "stride"]),
    (lambda: MaxPool2d(3, pad=2), ValueError, ["MaxPool2d", "pad"]),
    (lambda: Dropout(1.0), ValueError, ["Dropout", "p"]),
    (lambda: Dropout(0.5, rng=1.5), TypeError, ["Dropout", "rng"]),
    (lambda: SpatialPyramidPooling(levels=()), ValueError, ["SpatialPyramidPooling", "levels"]),
    (lambda: SpatialPyramidPooling(levels=(2, 0)), ValueError, ["levels", ">= 1"]),
    (lambda: SpatialPyramidPooling(mode="nearest"), ValueError, ["mode"]),
    (lambda: SpatialPyramidPooling(pool="median"), ValueError, ["pool"]),
    (lambda: Sequential(Conv2d(1, 1, 1), "relu"), TypeError, ["Sequential", "layer 1"]),
    (lambda: SGD(Sequential(), lr=0), ValueError, ["SGD", "lr"]),
    (lambda: SGD(Sequential(), lr=0.1, momentum=1.0), ValueError, ["SGD", "momentum"]),
    (lambda: SGD(Sequential(), lr=0.1, weight_decay=-1), ValueError, ["SGD", "weight_decay"]),
    (lambda: SGD(Sequential(), lr="fast"), TypeError, ["SGD", "lr"]),
])
def test_layer_constructors_reject(make, error, fragments):
    with expect(error, *fragments):
        make()


def test_layers_reject_bad_input_at_forward():
    with expect(ValueError, "conv2d_forward", "x", "4-D"):
        Conv2d(2, 3, 3)(np.zeros((2, 5, 5), np.float32))
    with expect(ValueError, "conv2d_forward", "w", "C=5"):
        Conv2d(2, 3, 3)(np.zeros((1, 5, 5, 5), np.float32))
    with expect(TypeError, "max_pool2d_forward", "x", "floating"):
        MaxPool2d(2)(np.zeros((1, 1, 4, 4), np.uint8))
    with expect(ValueError, "linear_forward", "w", "D_in=5"):
        Linear(4, 2)(np.zeros((1, 5), np.float32))
    with expect(ValueError, "spp_forward", "x"):
        SpatialPyramidPooling()(np.zeros((1, 4, 4), np.float32))
    with expect(TypeError, "Flatten.forward", "x", "ndarray"):
        Flatten()([1.0, 2.0])
    with expect(RuntimeError, "SGD.step", "backward"):
        SGD(Sequential(Linear(2, 2)), lr=0.1).step()
