"""The direct convolution of a first layer (``tinyspp/kernels/direct.cpp``) against its twins.

* the kernel's forward against the formula loop by loop (``conv2d_forward_naive``) and its
  weight gradient against a float64 sum over kernel offsets, on random geometries: odd widths,
  vector tails, every kernel width it is compiled for, padding wider than the kernel;
* ``conv2d_forward`` / ``conv2d_backward`` with the kernel (``DIRECT_IMPL = "auto"``) against
  im2col + GEMM (``"off"``): the output and all three gradients, float32 and float64;
* the rule that picks it, and the errors of its glue. (Its results do not depend on the number
  of threads: ``tests/test_conv_fast.py`` checks that bit for bit, with and without it.)
"""

import numpy as np
import pytest
from checks import assert_compiles_without_warnings, assert_input_gradient_is_the_adjoint
from hypothesis import given
from hypothesis import strategies as st

from tinyspp.kernels import direct
from tinyspp.ops import conv
from tinyspp.ops.conv import conv2d_backward, conv2d_forward, conv2d_forward_naive

needs_kernel = pytest.mark.skipif(not direct.available(),
                                  reason=f"no compiled kernel: {direct.why_unavailable()}")

geometry = st.tuples(
    st.integers(1, 3), st.integers(1, 4), st.integers(1, 21), st.integers(1, 40),  # N C H W
    st.integers(1, 9), st.integers(1, 6), st.integers(1, 7), st.integers(0, 4),  # F kh kw pad
).filter(lambda g: g[2] + 2 * g[7] >= g[5] and g[3] + 2 * g[7] >= g[6])

TOL = {np.float32: 2e-6, np.float64: 1e-13}  # relative to the largest magnitude


def weight_grad_reference(x, dout, kh, kw, pad):
    """dw[f, c, i, j] = sum over n, oy, ox of dout[n, f, oy, ox] * xpad[n, c, oy+i, ox+j]."""
    xpad = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = dout.shape[2:]
    dw = np.zeros((dout.shape[1], x.shape[1], kh, kw))
    for i in range(kh):
        for j in range(kw):
            dw[:, :, i, j] = np.einsum("nfyx,ncyx->fc", dout.astype(np.float64),
                                       xpad[:, :, i:i + oh, j:j + ow])
    return dw


def close(got, want, dtype, factor=1.0):
    scale = max(float(np.abs(want).max()), 1e-30)
    assert np.abs(got.astype(np.float64) - want).max() <= factor * TOL[dtype] * scale


@needs_kernel
@given(g=geometry, seed=st.integers(0, 2**16), double=st.booleans())
def test_kernel_matches_the_formula(g, seed, double):
    N, C, H, W, F, kh, kw, pad = g
    dtype = np.float64 if double else np.float32
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, kh, kw)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    want = conv2d_forward_naive(x.astype(np.float64), w.astype(np.float64),
                                b.astype(np.float64), pad=pad)
    out = np.full(want.shape, np.nan, dtype)  # every element must be written
    direct.forward(x, w, b, pad, out)
    close(out, want, dtype)
    dout = rng.standard_normal(want.shape).astype(dtype)
    start = rng.standard_normal((F, C, kh, kw)).astype(dtype)  # the kernel adds into dw
    dw = start.copy()
    direct.weight_grad(x, dout, kh, kw, pad, dw)
    close(dw, start + weight_grad_reference(x, dout, kh, kw, pad), dtype)


@needs_kernel
def test_weight_grad_adds_image_after_image_whatever_the_calls():
    """Two calls of a few images each give the same dw, bit for bit, as one call for all."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 3, 12, 17)).astype(np.float32)
    dout = rng.standard_normal((5, 8, 12, 17)).astype(np.float32)
    whole, parts = np.zeros((8, 3, 5, 5), np.float32), np.zeros((8, 3, 5, 5), np.float32)
    direct.weight_grad(x, dout, 5, 5, 2, whole)
    direct.weight_grad(x[:2], dout[:2], 5, 5, 2, parts)
    direct.weight_grad(x[2:], dout[2:], 5, 5, 2, parts)
    np.testing.assert_array_equal(whole, parts)


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,F,k,pad", [((7, 3, 19, 23), 10, 5, 2), ((4, 1, 9, 9), 3, 3, 0),
                                           ((3, 4, 6, 37), 17, 7, 3), ((2, 2, 5, 5), 5, 2, 4)])
def test_conv_ops_with_and_without_the_kernel_agree(monkeypatch, dtype, shape, F, k, pad):
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((F, shape[1], k, k)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)

    def run(impl, **kwargs):
        monkeypatch.setattr(conv, "DIRECT_IMPL", impl)
        out, cache = conv2d_forward(x, w, b, pad=pad, **kwargs)
        return cache, (out,) + conv2d_backward(np.cos(out), cache)

    cache, fast = run("auto")
    assert cache.direct and cache.cols is None and cache.x is x
    kept, fast_kept = run("auto", keep_cols=True)  # keeps x all the same: there are no columns
    assert kept.direct and kept.cols is None
    cache, plain = run("off")
    assert not cache.direct
    for got, want in zip(fast, plain, strict=True):  # two roundings of sums of ~3000 terms
        close(got, want.astype(np.float64), dtype, factor=10)
    for got, want in zip(fast_kept, fast, strict=True):
        np.testing.assert_array_equal(got, want)
    # the first layer's backward: no dx, the same dw and db
    monkeypatch.setattr(conv, "DIRECT_IMPL", "auto")
    out, cache = conv2d_forward(x, w, b, pad=pad)
    dx, dw, db = conv2d_backward(np.cos(out), cache, need_dx=False)
    assert dx is None
    np.testing.assert_array_equal(dw, fast[2])
    np.testing.assert_array_equal(db, fast[3])


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("keep_cols", [False, True])
def test_more_channels_run_the_kernel_forward_and_the_columns_backward(monkeypatch, dtype,
                                                                       keep_cols):
    # between DIRECT_DW_MAX_CHANNELS and DIRECT_MAX_CHANNELS input channels: the forward is
    # the kernel's, the backward im2col + GEMM on columns gathered from the kept x
    C = conv.DIRECT_DW_MAX_CHANNELS + 1
    assert C <= conv.DIRECT_MAX_CHANNELS
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, C, 11, 9)).astype(dtype)
    w = rng.standard_normal((6, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    out, cache = conv2d_forward(x, w, b, pad=1, keep_cols=keep_cols)
    assert not cache.direct and cache.cols is None and cache.x is x
    dout = np.cos(out)
    got = (out,) + conv2d_backward(dout, cache)
    monkeypatch.setattr(conv, "DIRECT_IMPL", "off")
    out2, plain_cache = conv2d_forward(x, w, b, pad=1, keep_cols=False)
    want = (out2,) + conv2d_backward(dout, plain_cache)
    close(got[0], want[0].astype(np.float64), dtype, factor=10)
    close(got[1], want[1].astype(np.float64), dtype, factor=10)  # dx: the kernel, both runs
    for g, p in zip(got[2:], want[2:], strict=True):  # dw, db: the same columns path, bits
        np.testing.assert_array_equal(g, p)
    close(got[0], conv2d_forward_naive(x, w, b, pad=1), dtype, factor=10)


@needs_kernel
def test_non_contiguous_input_and_a_gradient_of_another_dtype(monkeypatch):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 9, 8, 2)).astype(np.float32).transpose(0, 3, 1, 2)  # (3,2,9,8)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float64)  # cast to x's dtype
    out, cache = conv2d_forward(x, w, b, pad=1)
    assert cache.direct and out.dtype == np.float32
    np.testing.assert_allclose(out, conv2d_forward_naive(x, w, b, pad=1), rtol=1e-5, atol=1e-5)
    dout = rng.standard_normal(out.shape)  # float64: the columns path takes it, as before
    got = conv2d_backward(dout, cache)
    monkeypatch.setattr(conv, "DIRECT_IMPL", "off")
    want = conv2d_backward(dout, conv2d_forward(x, w, b, pad=1)[1])
    for a, c in zip(got, want, strict=True):
        assert a.dtype == c.dtype
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)


def test_the_rule_that_picks_the_kernel(monkeypatch):
    x3, w3 = np.zeros((1, 3, 8, 8), np.float32), np.zeros((2, 3, 5, 5), np.float32)
    assert conv._use_direct(x3, w3, 1) == direct.available()
    assert not conv._use_direct(x3, w3, 2)  # stride 1 only
    C = conv.DIRECT_MAX_CHANNELS
    assert conv._use_direct(np.zeros((1, C, 8, 8), np.float32),
                            np.zeros((2, C, 3, 3), np.float32), 1) == direct.available()
    assert not conv._use_direct(np.zeros((1, C + 1, 8, 8), np.float32),
                                np.zeros((2, C + 1, 3, 3), np.float32), 1)  # too many channels
    assert not conv._use_direct(x3, np.zeros((2, 3, 3, 9), np.float32), 1)  # wider than 7
    assert not conv._use_direct(x3, w3.astype(np.float64), 1)  # two dtypes
    assert not conv._use_direct(x3.astype(np.float16), w3.astype(np.float16), 1)
    monkeypatch.setattr(conv, "DIRECT_IMPL", "off")
    assert not conv._use_direct(x3, w3, 1)
    monkeypatch.setattr(conv, "DIRECT_IMPL", "on")
    with pytest.raises(ValueError, match="DIRECT_IMPL must be 'auto' or 'off', got 'on'"):
        conv2d_forward(x3, w3, np.zeros(2, np.float32))


@needs_kernel
def test_glue_errors_name_the_argument():
    x, w, b = (np.zeros((1, 2, 6, 6), np.float32), np.zeros((3, 2, 3, 3), np.float32),
               np.zeros(3, np.float32))
    with pytest.raises(TypeError, match=r"out must be a C-contiguous float32 NumPy array of "
                                        r"shape \(1, 3, 4, 4\)"):
        direct.forward(x, w, b, 0, np.zeros((1, 3, 4, 5), np.float32))
    with pytest.raises(TypeError, match="w must be a C-contiguous float32"):
        direct.forward(x, w.astype(np.float64), b, 0, np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(TypeError, match="x must be a float32 or float64 NumPy array"):
        direct.forward(x.astype(np.int32), w, b, 0, np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="kernels at most 7 wide, got 9"):
        direct.weight_grad(x, np.zeros((1, 3, 4, 4), np.float32), 3, 9, 2,
                           np.zeros((3, 2, 3, 9), np.float32))
    with pytest.raises(ValueError, match="the 3x3 kernel does not fit 2x2 with pad=0"):
        direct.forward(x[:, :, :2, :2], w, b, 0, np.zeros((1, 3, 0, 0), np.float32))
    with pytest.raises(TypeError, match="dw must be a C-contiguous float32"):
        direct.weight_grad(x, np.zeros((1, 3, 4, 4), np.float32), 3, 3, 0,
                           np.zeros((3, 2, 3, 3), np.float64))


def test_source_compiles_without_warnings(tmp_path):
    assert_compiles_without_warnings(direct, tmp_path)


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("F", [3, 4, 5, 10, 16])  # no split, one group, a partial last group
def test_one_image_splits_its_filters_over_threads_with_the_same_bits(monkeypatch, dtype, F):
    """A batch of one image (the detector's) convolves its filters on several threads, in
    whole register groups of the kernel: the output is the same bits as on one thread, and as
    the kernel's single call over all the filters."""
    from tinyspp.ops import dispatch

    monkeypatch.setattr(dispatch, "MIN_WORK", 0)  # split even this small image
    rng = np.random.default_rng(F)
    x = rng.standard_normal((1, 3, 13, 17)).astype(dtype)
    w = rng.standard_normal((F, 3, 5, 5)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    want = np.empty((1, F, 13, 17), dtype)
    direct.forward(x, w, b, 2, want)
    real, calls = direct.forward, []

    def recording(x, w, b, pad, out):  # the kernel, and how many filters each call had
        calls.append(w.shape[0])
        real(x, w, b, pad, out)

    monkeypatch.setattr(direct, "forward", recording)
    try:
        for threads in (1, 2, 3):
            calls.clear()
            with dispatch.using_threads(threads):
                out, cache = conv2d_forward(x, w, b, pad=2)
            assert out.tobytes() == want.tobytes() and cache.direct
            assert sum(calls) == F and (len(calls) > 1) == (threads > 1 and F > 4)
            assert sum(n % conv.DIRECT_FILTER_GROUP != 0 for n in calls) <= 1  # the last group
    finally:
        dispatch.set_num_threads(None)


def test_the_filter_group_matches_the_kernels_register_block():
    """``ops.conv.DIRECT_FILTER_GROUP`` cuts a single image's filters where the kernel's own
    register groups (``FG`` in ``direct.cpp``) begin."""
    import re
    from pathlib import Path

    source = (Path(direct.__file__).parent / direct.SOURCE_NAME).read_text()
    assert int(re.search(r"constexpr int FG = (\d+);", source).group(1)) == \
        conv.DIRECT_FILTER_GROUP


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,F,k,pad", [((3, 16, 9, 11), 32, 3, 1), ((2, 3, 12, 10), 8, 5, 2),
                                           ((4, 6, 7, 7), 5, 3, 0), ((1, 2, 9, 8), 4, 7, 6),
                                           ((2, 20, 6, 5), 3, 1, 0)])
def test_the_input_gradient_by_the_kernel(monkeypatch, dtype, shape, F, k, pad):
    from tinyspp.ops import dispatch

    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((F, shape[1], k, k)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    out, cache = conv2d_forward(x, w, b, pad=pad)
    dout = np.cos(out)
    assert conv._direct_dx(cache, dout)
    dx, dw, db = conv2d_backward(dout, cache)
    monkeypatch.setattr(conv, "DIRECT_IMPL", "off")  # im2col + GEMM everywhere: the twin
    dx2, _, _ = conv2d_backward(dout, conv2d_forward(x, w, b, pad=pad)[1])
    assert not conv._direct_dx(cache, dout)
    close(dx, dx2.astype(np.float64), dtype, factor=10)
    assert dx.dtype == dtype
    assert_input_gradient_is_the_adjoint(x, w, pad, dout, dx)  # against the formula
    monkeypatch.setattr(conv, "DIRECT_IMPL", "auto")
    for threads in (1, 2, 3):  # the same bits on any number of threads
        with dispatch.using_threads(threads):
            got = conv2d_backward(dout, conv2d_forward(x, w, b, pad=pad)[1])[0]
        assert got.tobytes() == dx.tobytes()


@needs_kernel
def test_the_rule_for_the_input_gradient_by_the_kernel():
    x = np.zeros((2, 4, 8, 8), np.float32)
    cases = [  # (w shape, stride, pad, dout dtype): by the kernel?
        ((conv.DIRECT_DX_MAX_FILTERS, 4, 3, 3), 1, 1, np.float32, True),
        ((conv.DIRECT_DX_MAX_FILTERS + 1, 4, 3, 3), 1, 1, np.float32, False),  # too many filters
        ((4, 4, 3, 3), 2, 1, np.float32, False),  # stride 2
        ((4, 4, 3, 3), 1, 3, np.float32, False),  # pad > k - 1
        ((4, 4, 3, 5), 1, 1, np.float32, False),  # not square
        ((4, 4, 9, 9), 1, 4, np.float32, False),  # wider than the kernel's 7
        ((4, 4, 3, 3), 1, 1, np.float64, False),  # dout of another dtype
    ]
    for w_shape, stride, pad, dtype, want in cases:
        w = np.zeros(w_shape, np.float32)
        _, cache = conv2d_forward(x, w, np.zeros(w_shape[0], np.float32), stride=stride,
                                  pad=pad)
        dout = np.zeros((2, w_shape[0], *(
            conv.conv_output_size(8, k, stride, pad) for k in w_shape[2:])), dtype)
        assert conv._direct_dx(cache, dout) is want, (w_shape, stride, pad, dtype)
