"""The compiled ReLU passes and max pooling (``tinyspp/kernels/passes.cpp``) against their
NumPy twins (``PASSES_IMPL = "xp"``), bit for bit: NaN (with its sign), +-inf, -0.0, ties, and
overlapping windows whose gradients add up; on one thread or split over two.
"""

from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tinyspp.kernels import passes
from tinyspp.ops import basic, dispatch, pool
from tinyspp.ops.basic import relu_backward, relu_forward
from tinyspp.ops.pool import max_pool2d_backward, max_pool2d_forward

needs_kernel = pytest.mark.skipif(not passes.available(),
                                  reason=f"no compiled kernel: {passes.why_unavailable()}")

# few distinct values: ties everywhere, and every special float
VALUES = np.array([-2.0, -1.0, -0.0, 0.0, 1.0, 2.0, np.inf, -np.inf, np.nan, -np.nan])


def awkward(shape, seed, dtype):
    rng = np.random.default_rng(seed)
    return VALUES[rng.integers(0, VALUES.size, size=shape)].astype(dtype)


def same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.ascontiguousarray(a).view(np.uint8),
                                  np.ascontiguousarray(b).view(np.uint8))


@contextmanager
def impl(value, threads=1):
    """Both ops' ``PASSES_IMPL`` set to ``value``, on ``threads`` threads with every pass split."""
    saved = basic.PASSES_IMPL, pool.PASSES_IMPL, dispatch.MIN_WORK
    basic.PASSES_IMPL = pool.PASSES_IMPL = value
    dispatch.MIN_WORK = 0
    try:
        with dispatch.using_threads(threads):
            yield
    finally:
        basic.PASSES_IMPL, pool.PASSES_IMPL, dispatch.MIN_WORK = saved


shapes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9))


@needs_kernel
@given(shape=shapes, seed=st.integers(0, 2**16), double=st.booleans(),
       threads=st.sampled_from([1, 2]))
def test_relu_passes_equal_numpy_bit_for_bit(shape, seed, double, threads):
    dtype = np.float64 if double else np.float32
    x, dout = awkward(shape, seed, dtype), awkward(shape, seed + 1, dtype)
    with impl("xp"):
        out_np, cache_np = relu_forward(x)
        dx_np = relu_backward(dout, cache_np)
    with impl("auto", threads):
        assert basic._compiled(x)
        out, cache = relu_forward(x)
        dx = relu_backward(dout, cache)
    same_bits(out, out_np)  # np.maximum(x, 0): NaN kept with its bits, -0.0 -> +0.0
    np.testing.assert_array_equal(cache.positive, cache_np.positive)
    same_bits(dx, dx_np)


windows = st.tuples(st.integers(1, 4), st.integers(1, 3))  # ksize, stride (overlap: stride < ksize)


def pool_case(shape, window, seed, double):
    """``(x, ksize, stride, dtype)``: an awkward map whose windows fit (others are rejected)."""
    k, s = window
    assume(k <= min(shape[2:]))
    dtype = np.float64 if double else np.float32
    return awkward(shape, seed, dtype), k, s, dtype


@needs_kernel
@given(shape=shapes, window=windows, seed=st.integers(0, 2**16), double=st.booleans(),
       threads=st.sampled_from([1, 2]))
def test_pool_backward_equals_numpy_bit_for_bit(shape, window, seed, double, threads):
    """Overlapping windows (stride < ksize) that pick the same pixel add up in the same order."""
    x, k, s, dtype = pool_case(shape, window, seed, double)
    out, cache = max_pool2d_forward(x, k, stride=s)
    dout = awkward(out.shape, seed + 1, dtype)
    with impl("xp"), np.errstate(invalid="ignore"):  # inf + -inf: NumPy warns, C++ does not
        dx_np = max_pool2d_backward(dout, cache)
    with impl("auto", threads):
        assert pool._compiled_backward(dout, cache)
        dx = max_pool2d_backward(dout, cache)
    same_bits(dx, dx_np)


@needs_kernel
@given(shape=shapes, window=windows, seed=st.integers(0, 2**16), double=st.booleans(),
       threads=st.sampled_from([1, 2]))
def test_pool_forward_equals_numpy_and_outputs_the_winner(shape, window, seed, double, threads):
    """The same winners bit for bit (first maximum in row-major order, first NaN); the output
    is the value at the winner, bit for bit. NumPy's running ``np.maximum`` is free to return
    either of two tied zeros or NaNs, so against it the values compare as values (-0.0 ==
    0.0, NaN == NaN), not as bits."""
    x, k, s, dtype = pool_case(shape, window, seed, double)
    N, C, H, W = shape
    with impl("xp"):
        assert not pool._compiled_forward(x, k, s, 0, (H - k) // s + 1, (W - k) // s + 1)
        out_np, cache_np = max_pool2d_forward(x, k, stride=s)
    with impl("auto", threads):
        assert pool._compiled_forward(x, k, s, 0, *out_np.shape[2:])
        out, cache = max_pool2d_forward(x, k, stride=s)
    same_bits(cache.winner, cache_np.winner)
    np.testing.assert_array_equal(out, out_np)
    oh, ow = out.shape[2:]
    i, j = np.divmod(cache.winner.astype(np.int64), k)
    rows = np.arange(oh).reshape(oh, 1) * s + i
    cols = np.arange(ow) * s + j
    at_winner = np.take_along_axis(x.reshape(N, C, -1), (rows * W + cols).reshape(N, C, -1),
                                   axis=2).reshape(out.shape)
    same_bits(out, at_winner)


@needs_kernel
@pytest.mark.parametrize("kw", [dict(pad=1), dict(ceil_mode=True)])
def test_padded_or_overhanging_windows_keep_the_numpy_scatter(kw):
    x = awkward((2, 3, 8, 8), 0, np.float32)  # ceil_mode: a 4th window overhangs the 8th row
    out, cache = max_pool2d_forward(x, 3, stride=2, **kw)
    assert not pool._compiled_forward(x, 3, 2, kw.get("pad", 0), *out.shape[2:])
    dout = awkward(out.shape, 1, np.float32)
    assert not pool._compiled_backward(dout, cache)
    with impl("xp"), np.errstate(invalid="ignore"):
        expected = max_pool2d_backward(dout, cache)
    with np.errstate(invalid="ignore"):
        same_bits(max_pool2d_backward(dout, cache), expected)


def test_a_bad_switch_is_an_error_naming_it(monkeypatch):
    x = np.ones((2, 2), np.float32)
    monkeypatch.setattr(basic, "PASSES_IMPL", "cpu")
    with pytest.raises(ValueError, match="tinyspp.ops.basic.PASSES_IMPL must be 'auto' or 'xp'"):
        relu_forward(x)
    out, cache = max_pool2d_forward(np.ones((1, 1, 4, 4), np.float32), 2)
    monkeypatch.setattr(pool, "PASSES_IMPL", "fast")
    with pytest.raises(ValueError, match="tinyspp.ops.pool.PASSES_IMPL must be 'auto' or 'xp'"):
        max_pool2d_backward(out, cache)
    with pytest.raises(ValueError, match="tinyspp.ops.pool.PASSES_IMPL must be 'auto' or 'xp'"):
        max_pool2d_forward(np.ones((1, 1, 4, 4), np.float32), 2)


@needs_kernel
def test_the_glue_refuses_what_the_loops_cannot_read():
    x = np.ones((4, 4), np.float32)
    with pytest.raises(TypeError, match="out must be a C-contiguous float32"):
        passes.relu_forward(x, np.ones((4, 4)), np.ones((4, 4), bool), 0, 16)
    with pytest.raises(TypeError, match="x must be a C-contiguous float32"):
        passes.relu_forward(x.T.copy(order="F")[:, :3], x, np.ones((4, 4), bool), 0, 12)
    dout, winner = np.ones((1, 1, 2, 2), np.float32), np.zeros((1, 1, 2, 2), np.uint8)
    with pytest.raises(ValueError, match="do not all lie inside a 4x4 image"):
        passes.pool_backward(dout, winner, 3, 2, np.empty((1, 1, 4, 4), np.float32), 0, 1)
    image = np.ones((1, 1, 4, 4), np.float32)
    with pytest.raises(TypeError, match="winner must be a C-contiguous uint8"):
        passes.pool_forward(image, 2, 2, dout, winner.astype(np.int32), 0, 1)
    with pytest.raises(ValueError, match="do not all lie inside a 4x4 image"):
        passes.pool_forward(image, 3, 2, dout, winner, 0, 1)


def test_float16_and_non_contiguous_arrays_take_the_numpy_path():
    x = np.ones((4, 4), np.float16)
    assert not basic._compiled(x)
    assert not basic._compiled(np.ones((4, 8), np.float32)[:, ::2])
    out, cache = relu_forward(np.ones((4, 8), np.float32)[:, ::2])
    np.testing.assert_array_equal(out, 1)


@needs_kernel
def test_a_library_missing_an_entry_point_is_unavailable_and_says_why():
    from tinyspp.kernels.build import CppKernels

    kernels = CppKernels("passes", passes.SOURCE_NAME, {"no_such_loop": "p"},
                         who="test", why="a test")
    assert kernels.available() is False
    assert "no_such_loop_f32" in kernels.why_unavailable()
    with pytest.raises(Exception, match="no_such_loop_f32"):
        kernels.library()  # the error again, not a half-bound library


@pytest.mark.parametrize("impl_value", ["auto", "xp"])
def test_a_mask_that_is_not_bool_takes_the_plain_path(impl_value):
    """Both fast paths read the mask's bytes; an int64 mask (a cache built by hand) read that
    way would be wrong, so it goes to np.where (this was a silent wrong answer once)."""
    dout = np.arange(-3, 3, dtype=np.float32)
    cache = basic.ReLUCache(np.array([1, 0, 1, 0, 1, 0], dtype=np.int64))
    with impl(impl_value):
        np.testing.assert_array_equal(relu_backward(dout, cache), [-3, 0, -1, 0, 1, 0])
