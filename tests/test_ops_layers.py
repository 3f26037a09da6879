"""Conv, max-pool, ReLU, linear, dropout and loss ops: loop references and gradient checks."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds, tie_free

from tinyspp.backend import asnumpy
from tinyspp.gradcheck import numerical_grad, numerical_grad_of_output, rel_error
from tinyspp.ops import (
    col2im,
    conv2d_backward,
    conv2d_forward,
    conv2d_forward_naive,
    dropout_backward,
    dropout_forward,
    im2col,
    linear_backward,
    linear_forward,
    max_pool2d_backward,
    max_pool2d_forward,
    pool_output_size,
    relu_backward,
    relu_forward,
    softmax_cross_entropy,
)

EPS = 1e-5  # finite-difference step; every op here is (piecewise) linear or smooth
TOL = 1e-6  # max relative error allowed between numerical and analytic gradients


def assert_grad_close(numeric, analytic, what):
    """Elementwise relative error, with the denominator floored at 1e-3 of the largest gradient
    (an element that is ~0 only has to match to that absolute precision)."""
    numeric, analytic = asnumpy(numeric), asnumpy(analytic)
    floor = max(1e-3 * float(np.abs(analytic).max()), 1e-12)
    err = rel_error(numeric, analytic, floor=floor)
    assert err < TOL, (
        f"{what}: rel error {err:.2e} >= {TOL} (eps={EPS})\n"
        f"numeric:\n{numeric}\nanalytic:\n{analytic}"
    )


# ---------------------------------------------------------------- loop references (NumPy only)



def max_pool2d_naive(x, k, stride, pad, ceil_mode):
    """PyTorch's rule written out: windows clipped to the real input, first max (or first NaN)
    in row-major order. Returns the output and the (row, col) of each window's winner."""
    N, C, H, W = x.shape
    oh = pool_output_size(H, k, stride, pad, ceil_mode)
    ow = pool_output_size(W, k, stride, pad, ceil_mode)
    out = np.zeros((N, C, oh, ow))
    where = np.zeros((N, C, oh, ow, 2), dtype=int)
    for n in range(N):
        for c in range(C):
            for i in range(oh):
                for j in range(ow):
                    y0, x0 = i * stride - pad, j * stride - pad
                    best, arg = None, None
                    for y in range(max(y0, 0), min(y0 + k, H)):
                        for xx in range(max(x0, 0), min(x0 + k, W)):
                            v = x[n, c, y, xx]
                            if best is None or v > best or (np.isnan(v) and not np.isnan(best)):
                                best, arg = v, (y, xx)
                    out[n, c, i, j] = best
                    where[n, c, i, j] = arg
    return out, where


# ---------------------------------------------------------------------------------- strategies

@st.composite
def conv_cases(draw):
    """Small conv problems: odd sizes, non-square kernels, stride > 1, padding."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, pad = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    H = draw(st.integers(max(kh - 2 * pad, 1), 8))
    W = draw(st.integers(max(kw - 2 * pad, 1), 8))
    N, C, F = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return (N, C, H, W), (F, C, kh, kw), stride, pad, draw(seeds)


@st.composite
def pool_cases(draw):
    """Small pooling problems incl. overlapping windows, padding and ceil_mode."""
    k = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 4))
    pad = draw(st.integers(0, k // 2))
    ceil_mode = draw(st.booleans())
    H = draw(st.integers(max(k - 2 * pad, 1), 9))
    W = draw(st.integers(max(k - 2 * pad, 1), 9))
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    return (N, C, H, W), k, stride, pad, ceil_mode, draw(seeds)


# ---------------------------------------------------------------------------------------- conv

@given(conv_cases())
def test_conv_matches_direct_loop(case):
    x_shape, w_shape, stride, pad, seed = case
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    out, _ = conv2d_forward(x, w, b, stride=stride, pad=pad)
    np.testing.assert_allclose(out, conv2d_forward_naive(x, w, b, stride, pad),
                               rtol=1e-12, atol=1e-12)


@given(conv_cases())
def test_conv_gradients_match_central_differences(case):
    x_shape, w_shape, stride, pad, seed = case
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    out, cache = conv2d_forward(x, w, b, stride=stride, pad=pad)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout, cache)
    f = lambda **kw: conv2d_forward(**{"x": x, "w": w, "b": b, **kw}, stride=stride, pad=pad)[0]
    assert_grad_close(numerical_grad_of_output(lambda v: f(x=v), x, dout, EPS), dx, "dx")
    assert_grad_close(numerical_grad_of_output(lambda v: f(w=v), w, dout, EPS), dw, "dw")
    assert_grad_close(numerical_grad_of_output(lambda v: f(b=v), b, dout, EPS), db, "db")


def test_conv_on_xp_float32_equals_float64_and_accepts_transposed_input(xp, rng):
    x64 = rng.standard_normal((2, 3, 9, 7))
    w64, b64 = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    ref, _ = conv2d_forward(x64, w64, b64, stride=2, pad=1)
    x32, w32, b32 = (xp.asarray(a, dtype=np.float32) for a in (x64, w64, b64))
    out32, cache = conv2d_forward(x32, w32, b32, stride=2, pad=1)
    assert out32.dtype == np.float32
    assert np.linalg.norm(asnumpy(out32) - ref) / np.linalg.norm(ref) < 1e-6
    dx, dw, db = conv2d_backward(xp.ones_like(out32), cache)
    assert dx.dtype == dw.dtype == db.dtype == np.float32  # no silent upcast
    # a transposed (non-contiguous) view gives the same result as its contiguous copy
    xt = xp.asarray(rng.standard_normal((2, 3, 7, 9))).transpose(0, 1, 3, 2)
    assert not xt.flags.c_contiguous
    out_t, _ = conv2d_forward(xt, xp.asarray(w64), xp.asarray(b64), pad=1)
    out_c, _ = conv2d_forward(xp.ascontiguousarray(xt), xp.asarray(w64), xp.asarray(b64), pad=1)
    np.testing.assert_array_equal(asnumpy(out_t), asnumpy(out_c))


def test_conv_output_shape_formula():
    out, _ = conv2d_forward(np.zeros((1, 3, 224, 224)), np.zeros((96, 3, 7, 7)), np.zeros(96),
                            stride=2, pad=1)
    assert out.shape == (1, 96, 110, 110)  # ZF-5 conv1: (224 + 2 - 7) // 2 + 1


# ---------------------------------------------------------------------------------------- pool

@given(pool_cases())
def test_max_pool_matches_loop_reference_and_gradient_goes_to_the_max(case):
    x_shape, k, stride, pad, ceil_mode, seed = case
    x = tie_free(x_shape, seed)
    out, cache = max_pool2d_forward(x, k, stride=stride, pad=pad, ceil_mode=ceil_mode)
    ref, where = max_pool2d_naive(x, k, stride, pad, ceil_mode)
    np.testing.assert_array_equal(out, ref)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    dx = max_pool2d_backward(dout, cache)
    expected = np.zeros(x_shape)
    for idx in np.ndindex(out.shape):
        expected[idx[0], idx[1], where[idx][0], where[idx][1]] += dout[idx]
    np.testing.assert_allclose(dx, expected, rtol=1e-12, atol=1e-12)


@given(pool_cases())
def test_max_pool_gradient_matches_central_differences(case):
    x_shape, k, stride, pad, ceil_mode, seed = case
    x = tie_free(x_shape, seed)
    kw = dict(stride=stride, pad=pad, ceil_mode=ceil_mode)
    out, cache = max_pool2d_forward(x, k, **kw)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    numeric = numerical_grad_of_output(lambda v: max_pool2d_forward(v, k, **kw)[0], x, dout, EPS)
    assert_grad_close(numeric, max_pool2d_backward(dout, cache), "dx")


def test_max_pool_matches_torch_including_ceil_mode_and_padding():
    torch = pytest.importorskip("torch", reason="torch (the optional 'bench' extra) is absent")
    rng = np.random.default_rng(1)
    for H, W, k, s, pad, ceil in [(7, 6, 3, 2, 1, True), (5, 5, 2, 2, 0, True),
                                  (55, 55, 3, 2, 0, False), (6, 9, 3, 3, 1, True)]:
        x = tie_free((2, 3, H, W), int(rng.integers(1000)))
        tx = torch.from_numpy(x).requires_grad_()
        t_out = torch.nn.functional.max_pool2d(tx, k, s, padding=pad, ceil_mode=ceil)
        dout = rng.standard_normal(tuple(t_out.shape))
        t_out.backward(torch.from_numpy(dout))
        out, cache = max_pool2d_forward(x, k, stride=s, pad=pad, ceil_mode=ceil)
        np.testing.assert_array_equal(out, t_out.detach().numpy())
        np.testing.assert_allclose(max_pool2d_backward(dout, cache), tx.grad.numpy(), atol=1e-12)


def test_max_pool_ties_route_gradient_to_first_max_in_row_major_order(xp):
    x = xp.asarray([[[[1.0, 3.0, 3.0],
                      [3.0, 0.0, 3.0],
                      [2.0, 3.0, 1.0]]]])
    out, cache = max_pool2d_forward(x, 3)
    assert float(out[0, 0, 0, 0]) == 3.0
    dx = asnumpy(max_pool2d_backward(xp.ones_like(out), cache))
    expected = np.zeros((3, 3))
    expected[0, 1] = 1.0  # the first 3 in row-major order, not (1, 0) nor the last one
    np.testing.assert_array_equal(dx[0, 0], expected)
    # overlapping windows (3/2) that pick the same pixel add up there
    x = xp.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0
    out, cache = max_pool2d_forward(x, 3, stride=2)
    dx = asnumpy(max_pool2d_backward(xp.ones_like(out), cache))
    assert dx[0, 0, 2, 2] == 4.0 and dx.sum() == 4.0


def test_max_pool_nan_propagates_and_gets_the_gradient(xp):
    x = xp.asarray(np.arange(16.0).reshape(1, 1, 4, 4))
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 1, 0] = np.nan
    out, cache = max_pool2d_forward(x, 2)
    out = asnumpy(out)
    assert np.isnan(out[0, 0, 0, 0]) and not np.isnan(out[0, 0, 1:, 1:]).any()
    dx = asnumpy(max_pool2d_backward(xp.ones_like(xp.asarray(out)), cache))
    assert dx[0, 0, 0, 1] == 1.0 and dx[0, 0, 1, 0] == 0.0  # the first NaN wins
    assert dx[0, 0, 1, 1] == 0.0


def test_max_pool_on_xp_float32_and_transposed_input(xp, rng):
    x64 = tie_free((2, 3, 9, 8), 3)
    ref, _ = max_pool2d_forward(x64, 3, stride=2, pad=1, ceil_mode=True)
    out32, cache = max_pool2d_forward(xp.asarray(x64, dtype=np.float32), 3, stride=2, pad=1,
                                      ceil_mode=True)
    assert out32.dtype == np.float32
    assert rel_error(out32, ref) < 1e-6
    assert max_pool2d_backward(xp.ones_like(out32), cache).dtype == np.float32
    xt = xp.asarray(x64).transpose(0, 1, 3, 2)
    out_t, _ = max_pool2d_forward(xt, 3, stride=2)
    out_c, _ = max_pool2d_forward(xp.ascontiguousarray(xt), 3, stride=2)
    np.testing.assert_array_equal(asnumpy(out_t), asnumpy(out_c))


def test_pool_output_size_follows_pytorch_ceil_rule():
    assert pool_output_size(55, 3, 2) == 27  # ZF-5 / AlexNet pool1
    assert pool_output_size(6, 3, 2, ceil_mode=True) == 3  # last window hangs over the edge
    # the would-be 4th window starts at row 6 = H + pad, inside the right padding: dropped
    assert pool_output_size(5, 3, 2, pad=1, ceil_mode=True) == 3


# ------------------------------------------------------------------------------ relu / linear

@given(st.tuples(st.integers(1, 4), st.integers(1, 5)), seeds)
def test_relu_and_linear_gradients(shape, seed):
    rng = np.random.default_rng(seed)
    N, D_in = shape
    D_out = int(rng.integers(1, 5))
    x = tie_free(shape, seed) + 0.01  # tie-free values are >= 0.8/size apart, so none is 0
    out, cache = relu_forward(x)
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    dout = rng.standard_normal(shape)
    numeric = numerical_grad_of_output(lambda v: relu_forward(v)[0], x, dout, EPS)
    assert_grad_close(numeric, relu_backward(dout, cache), "relu dx")

    w, b = rng.standard_normal((D_in, D_out)), rng.standard_normal(D_out)
    out, cache = linear_forward(x, w, b)
    np.testing.assert_allclose(out, x @ w + b)
    dout = rng.standard_normal((N, D_out))
    dx, dw, db = linear_backward(dout, cache)
    f = lambda xx=x, ww=w, bb=b: linear_forward(xx, ww, bb)[0]
    assert_grad_close(numerical_grad_of_output(lambda v: f(xx=v), x, dout, EPS), dx, "dx")
    assert_grad_close(numerical_grad_of_output(lambda v: f(ww=v), w, dout, EPS), dw, "dw")
    assert_grad_close(numerical_grad_of_output(lambda v: f(bb=v), b, dout, EPS), db, "db")


def test_relu_linear_on_xp_float32(xp, rng):
    x = xp.asarray(rng.standard_normal((3, 4)), dtype=np.float32)
    w = xp.asarray(rng.standard_normal((4, 2)), dtype=np.float32)
    out, cache = linear_forward(relu_forward(x)[0], w, xp.zeros(2, dtype=np.float32))
    assert out.dtype == np.float32
    assert all(g.dtype == np.float32 for g in linear_backward(xp.ones_like(out), cache))
    ref = np.maximum(asnumpy(x).astype(np.float64), 0) @ asnumpy(w).astype(np.float64)
    assert np.linalg.norm(asnumpy(out) - ref) / np.linalg.norm(ref) < 1e-6
    nan_out, _ = relu_forward(xp.asarray([np.nan, -1.0]))
    assert np.isnan(asnumpy(nan_out)[0])


# ------------------------------------------------------------------------------------- dropout

def test_dropout_is_inverted_seeded_and_identity_in_eval(xp):
    x = xp.ones((200, 50))
    out, cache = dropout_forward(x, 0.3, rng=np.random.default_rng(0))
    kept = asnumpy(out) != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(asnumpy(out)[kept], 1 / 0.7)
    again, _ = dropout_forward(x, 0.3, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(asnumpy(again), asnumpy(out))  # same seed, same mask
    dout = xp.asarray(np.arange(x.size, dtype=np.float64).reshape(x.shape))
    np.testing.assert_array_equal(asnumpy(dropout_backward(dout, cache)),
                                  asnumpy(dout) * asnumpy(out))  # mask == out for x of ones
    same, cache = dropout_forward(x, 0.3, rng=0, training=False)
    assert same is x and dropout_backward(dout, cache) is dout
    out32, _ = dropout_forward(xp.ones(10, dtype=np.float32), 0.5, rng=1)
    assert out32.dtype == np.float32


def test_dropout_gradient(rng):
    x = rng.standard_normal((3, 4))
    gen_state = np.random.default_rng(5).bit_generator.state
    out, cache = dropout_forward(x, 0.5, rng=np.random.default_rng(5))
    dout = rng.standard_normal(x.shape)

    def f(v):
        g = np.random.default_rng()
        g.bit_generator.state = gen_state  # the same mask at every evaluation
        return dropout_forward(v, 0.5, rng=g)[0]

    assert_grad_close(numerical_grad_of_output(f, x, dout, EPS), dropout_backward(dout, cache),
                      "dx")


# ---------------------------------------------------------------------------------------- loss

@given(st.integers(1, 5), st.integers(1, 6), seeds)
def test_softmax_cross_entropy_value_and_gradient(N, K, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((N, K)) * 3
    labels = rng.integers(0, K, size=N)
    loss, dlogits = softmax_cross_entropy(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert abs(loss - float(-np.log(p[np.arange(N), labels]).mean())) < 1e-12
    numeric = numerical_grad(lambda v: softmax_cross_entropy(v, labels)[0], logits, EPS)
    assert_grad_close(numeric, dlogits, "dlogits")


def test_softmax_cross_entropy_is_stable_for_huge_logits(xp):
    logits = xp.asarray([[1e4, 0.0, -1e4], [5e3, 5e3, 0.0]])
    loss, dlogits = softmax_cross_entropy(logits, xp.asarray([0, 2]))
    # row 0: log-prob of the winner is 0; row 1: -log(softmax)[2] = 5e3 + log 2
    assert np.isfinite(loss) and abs(loss - (5e3 + np.log(2)) / 2) < 1e-9
    expected = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, -1.0]]) / 2
    np.testing.assert_allclose(asnumpy(dlogits), expected, atol=1e-12)
    loss32, d32 = softmax_cross_entropy(logits.astype(np.float32), xp.asarray([0, 2]))
    assert d32.dtype == np.float32 and abs(loss32 - loss) / loss < 1e-6


@given(conv_cases())
def test_col2im_is_the_adjoint_of_im2col(case):
    """<im2col(x), c> == <x, col2im(c)>: backward really is the transpose of the gather."""
    x_shape, (F, C, kh, kw), stride, pad, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    cols = im2col(x, kh, kw, stride, pad)
    c = rng.standard_normal(cols.shape)
    lhs, rhs = float(np.sum(cols * c)), float(np.sum(x * col2im(c, x_shape, kh, kw, stride, pad)))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


def test_layers_bench_section_runs_on_tiny_workloads(monkeypatch):
    from types import SimpleNamespace

    from tinyspp.bench import SECTIONS, layers

    assert "layers" in SECTIONS
    monkeypatch.setattr(layers, "CONV", [((2, 3, 9, 9), (4, 3, 3, 3), 1)])
    monkeypatch.setattr(layers, "POOL", [((2, 3, 9, 9), 3, 2), ((2, 3, 8, 8), 2, 2)])
    monkeypatch.setattr(layers, "SPP", [(2, 3, 7, 6)])
    monkeypatch.setattr(layers, "STEP_CONV", [((2, 8, 6, 6), (5, 8, 3, 3), 1, "a step's")])
    rows = layers.run(SimpleNamespace(repeats=1, quick=True, gpu=False, torch=None))
    assert [r.section for r in rows] == ["layers"] * 8
    assert rows[0].workload.startswith("conv fwd+bwd") and rows[1].workload.endswith(
        "its 3 GEMMs alone")
    assert rows[2].workload.startswith("conv fwd+bwd x(2, 8, 6, 6)")
    assert rows[2].note.startswith("a step's; ")
    assert [r.workload.endswith("np.matmul vs torch.mm") for r in rows[3:5]] == [True, True]
    assert "x(2, 8, 6, 6)" in rows[4].workload
    assert rows[5].workload.startswith("max-pool") and rows[6].note == "reshape + reduce"
    assert rows[7].workload.startswith("SPP")
    assert all(r.ours_ms > 0 and r.torch_ms is None for r in rows)


def test_the_gemm_rows_time_the_same_products_on_both_sides():
    torch = pytest.importorskip("torch")
    from tinyspp.bench import layers

    shape, w_shape, pad = (2, 4, 5, 6), (3, 4, 3, 3), 1
    w2, cols, d = layers.gemm_operands(shape, w_shape, pad)
    assert w2.shape == (3, 36) and cols.shape == (36, 2 * 5 * 6) and d.shape == (60, 3)
    x, w, b = layers.conv_data(shape, w_shape)
    out, _ = conv2d_forward(x, w, b, pad=pad)  # the columns are the convolution's
    np.testing.assert_allclose((w2 @ cols).reshape(3, 2, 5, 6).transpose(1, 0, 2, 3), out,
                               rtol=1e-5, atol=1e-5)
    layers.conv_gemms_torch(torch, shape, w_shape, pad)()  # runs


def test_max_pool_all_neg_inf_window_routes_gradient_to_a_real_cell(xp):
    x = xp.full((1, 1, 3, 3), -np.inf)
    x[0, 0, 2, 2] = 1.0
    out, cache = max_pool2d_forward(x, 3, stride=2, pad=1)  # 2x2 windows, the first all -inf
    out_np = asnumpy(out)[0, 0]
    assert out_np[0, 0] == -np.inf and out_np[1, 1] == 1.0
    dx = asnumpy(max_pool2d_backward(xp.ones_like(out), cache))[0, 0]
    expected = np.zeros((3, 3))
    expected[0, 0] = 1.0  # window (0, 0): its first real cell, not the padding before it
    expected[0, 1] = 1.0  # window (0, 1): first real cell of columns 1..2
    expected[1, 0] = 1.0  # window (1, 0): first real cell of rows 1..2
    expected[2, 2] = 1.0  # window (1, 1): the only finite value
    np.testing.assert_array_equal(dx, expected)  # every window's gradient lands inside x


# ------------------------------------------------------- fast paths against their plain twins
#
# Every fast path of the ops (threads over slices of the batch, reused buffers, ReLU's bitwise
# mask, pooling without the padded copy) is compared with the plain code it replaces, bit for
# bit, in float32 and float64, on data with ties, zeros, NaN and infinities.

@pytest.fixture
def threads(monkeypatch):
    """Run a callable with 1 and with 3 threads, every pass big enough to be split."""
    from tinyspp.ops import dispatch

    monkeypatch.setattr(dispatch, "MIN_WORK", 0)

    def both(fn):
        results = []
        for n in (1, 3):
            dispatch.set_num_threads(n)
            try:
                results.append(fn())
            finally:
                dispatch.set_num_threads(None)
        return results

    return both


def awkward(shape, seed, dtype):
    """Rounded normals (many ties), exact zeros, a NaN, +-inf and -0.0, in ``dtype``."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal(shape) * 2) / 2  # values on a 0.5 grid: ties and zeros
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=min(4, flat.size), replace=False)
    for i, v in zip(picks, (np.nan, np.inf, -np.inf, -0.0)):
        flat[i] = v
    return x.astype(dtype)


def assert_same(a, b):
    for u, v in zip(a, b, strict=True):
        if u is None or v is None:
            assert u is None and v is None
            continue
        assert u.dtype == v.dtype and u.shape == v.shape
        np.testing.assert_array_equal(u, v)  # NaN == NaN here; the values are bit-for-bit


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,F,k,stride,pad", [((5, 3, 9, 8), 4, 3, 1, 1),
                                                   ((3, 2, 11, 7), 3, 5, 2, 2),
                                                   ((1, 4, 4, 4), 2, 1, 1, 0)])
def test_conv_threads_and_reused_workspace_equal_the_plain_path(threads, monkeypatch, dtype,
                                                               shape, F, k, stride, pad):
    from tinyspp.ops import conv

    monkeypatch.setattr(conv, "DIRECT_IMPL", "off")  # the columns path (the direct one has none)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((F, shape[1], k, k)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)

    def run(workspace=None):
        out, cache = conv2d_forward(x, w, b, stride=stride, pad=pad, workspace=workspace)
        return (out, cache.cols) + conv2d_backward(np.cos(out), cache)

    assert_same(*threads(run))
    plain = run()
    # keeping x and gathering the columns again in the backward gives the same gradients
    out, cache = conv2d_forward(x, w, b, stride=stride, pad=pad, keep_cols=False)
    assert cache.cols is None and cache.x is x
    assert_same(plain[:1] + plain[2:], (out,) + conv2d_backward(np.cos(out), cache))
    # a reused buffer (full of stale numbers) gives the same result and is the cache's cols
    stale = np.full_like(plain[1], 7.0)
    reused = run(workspace=stale)
    assert_same(plain, reused)
    assert conv2d_forward(x, w, b, stride=stride, pad=pad, workspace=stale)[1].cols is stale
    # a buffer of the wrong shape or dtype is ignored, not written
    for wrong in (np.zeros(3, dtype), plain[1].astype(np.float16)):
        before = wrong.copy()
        assert_same(plain, run(workspace=wrong))
        np.testing.assert_array_equal(wrong, before)


def test_conv_layer_reuses_its_columns_and_still_matches_a_fresh_layer(monkeypatch):
    from tinyspp.nn import Conv2d
    from tinyspp.ops import conv

    monkeypatch.setattr(conv, "DIRECT_IMPL", "off")  # the columns path (the direct one has none)
    rng = np.random.default_rng(2)
    layer, fresh = Conv2d(2, 3, 3, pad=1, rng=0, keep_cols=True), Conv2d(2, 3, 3, pad=1, rng=0)
    x1, x2 = (rng.standard_normal((4, 2, 6, 5)).astype(np.float32) for _ in range(2))
    layer.forward(x1)
    cols = layer._cache.cols
    out = layer.forward(x2)  # the second batch is gathered into the first batch's columns
    assert layer._cache.cols is cols
    np.testing.assert_array_equal(out, fresh.forward(x2))
    dout = np.ones_like(out)
    np.testing.assert_array_equal(layer.backward(dout), fresh.backward(dout))
    assert fresh._cache.cols is None and fresh._cache.x is x2  # kept its input, not the columns
    assert layer.grads["w"].tobytes() == fresh.grads["w"].tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_fast_backward_equals_where_bit_for_bit(threads, dtype):
    from tinyspp.ops.basic import relu_backward_plain

    x = awkward((6, 5, 4), 3, dtype)
    dout = awkward((6, 5, 4), 4, dtype)
    (o1, c1), (o3, c3) = threads(lambda: relu_forward(x))
    assert_same((o1, c1.positive), (o3, c3.positive))
    dx1, dx3 = threads(lambda: relu_backward(dout, c1))
    plain = relu_backward_plain(dout, c1)
    for dx in (dx1, dx3):
        assert dx.dtype == dtype
        # bit patterns: NaN payloads and the sign of zero included
        ints = np.dtype(f"i{np.dtype(dtype).itemsize}")
        np.testing.assert_array_equal(dx.view(ints), plain.view(ints))
    # a non-contiguous dout takes the plain path and agrees
    np.testing.assert_array_equal(relu_backward(dout[:, ::1].copy(order="F"), c1), plain)


def test_relu_gradient_at_exactly_zero_is_zero(xp):
    """The documented rule: the gradient passes where x > 0, so x == 0 (and -0.0) gets none."""
    x = xp.asarray([[-1.0, -0.0, 0.0, 1e-300, 2.0]])
    out, cache = relu_forward(x)
    dx = asnumpy(relu_backward(xp.ones_like(x) * 5.0, cache))
    np.testing.assert_array_equal(dx, [[0.0, 0.0, 0.0, 5.0, 5.0]])
    # NaN input: NaN out, no gradient (NaN > 0 is False); a NaN upstream gradient where the
    # input was negative does not leak through
    out, cache = relu_forward(xp.asarray([np.nan, -1.0, 3.0]))
    dx = asnumpy(relu_backward(xp.asarray([1.0, np.nan, np.inf]), cache))
    np.testing.assert_array_equal(dx, [0.0, 0.0, np.inf])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,k,stride,pad,ceil", [((4, 3, 8, 8), 2, 2, 0, False),
                                                      ((3, 2, 9, 7), 3, 2, 1, True),
                                                      ((2, 3, 6, 6), 3, 3, 0, False),
                                                      ((5, 2, 7, 7), 2, 2, 0, True)])
def test_max_pool_fast_paths_equal_the_padded_plain_path(threads, monkeypatch, dtype, shape, k,
                                                         stride, pad, ceil):
    """Views straight into x (non-overlapping windows) and threads over the batch give the
    result of the padded phase-split path, with ties, zeros, NaN and infinities in x."""
    from tinyspp.ops import pool

    x = awkward(shape, 5, dtype)

    def run():
        out, cache = max_pool2d_forward(x, k, stride=stride, pad=pad, ceil_mode=ceil)
        dx = max_pool2d_backward(np.arange(out.size, dtype=dtype).reshape(out.shape), cache)
        return out, cache.winner, dx

    fast = threads(run)
    assert_same(*fast)
    monkeypatch.setattr(pool, "PHASES_ALWAYS", True)
    assert_same(fast[0], run())


def test_max_pool_signed_zeros_tie_and_the_first_one_wins(xp):
    """-0.0 == +0.0: a tie no strategy draws (tie-free data never holds two zeros); the
    gradient goes to the first in row-major order, whichever sign it has."""
    for first, second in ((-0.0, 0.0), (0.0, -0.0)):
        x = xp.asarray([[[[first, second], [-1.0, -2.0]]]])
        out, cache = max_pool2d_forward(x, 2)
        assert float(asnumpy(out)[0, 0, 0, 0]) == 0.0
        dx = asnumpy(max_pool2d_backward(xp.ones_like(out), cache))[0, 0]
        np.testing.assert_array_equal(dx, [[1.0, 0.0], [0.0, 0.0]])


# ------------------------------------------------------------------- the benchmark's plumbing

def test_side_by_side_alternates_ours_and_the_peer():
    from types import SimpleNamespace

    from tinyspp.bench.common import side_by_side

    log = []

    class FakePeer:
        def times(self, spec, repeats, warmup=1):
            log.append(("peer", spec, repeats, warmup))
            return [2.0] * repeats

    ours = lambda: log.append(("ours",))  # noqa: E731
    opts = SimpleNamespace(repeats=6, peer=FakePeer(), torch_inproc=None)
    a, b, c = side_by_side(ours, ("m", "f", [1]), opts, rounds=3)
    assert b == 2.0 and c is None and a > 0
    kinds = [e[0] for e in log]
    # 3 rounds: each a warm-up + 2 timed calls of ours, then the peer's (its warm-up too)
    assert kinds == (["ours"] * 3 + ["peer"]) * 3
    assert [e[3] for e in log if e[0] == "peer"] == [1, 1, 1]


def test_bench_report_renders_targets_ideas_and_profile(tmp_path):
    import json

    from tinyspp.bench import report
    from tinyspp.bench.common import Row, rows_to_json

    def write(name, rows, **extra):
        record = {"command": "python -m tinyspp.bench", "started": "t", "seconds": 1.0,
                  "machine": {"cpu": "cpu", "cores": 2, "platform": "p"},
                  "versions": {"numpy": "2"}, "threads": {"numpy": {"blas": 2}},
                  "load_average": {"start": [0.1, 0, 0], "end": [0.2, 0, 0]},
                  "rows": rows_to_json(rows), **extra}
        (tmp_path / f"{name}.json").write_text(json.dumps(record))

    assert "Not measured yet" in report.render_targets(tmp_path)
    conv = "conv fwd+bwd x(16, 3, 64, 64) w(32, 3, 5, 5) pad 2"
    write("bench_before", [Row("layers", conv, 60.0, 30.0),
                           Row("profile", "32x3x32x32: 0 Conv2d forward", 5.0)])
    write("bench", [Row("layers", conv, 33.0, 30.0),
                    Row("memory", "peak memory, one SGD step, 32x3x32x32", 30.0, 10.0,
                        unit="MiB"),
                    Row("profile", "32x3x32x32: 0 Conv2d forward", 3.0),
                    Row("ideas", "relu: plain", 4.0), Row("ideas", "relu: fast", 1.0)],
          note="HEAD x")
    targets = report.render_targets(tmp_path)
    assert "| 60.0 / 30.0 ms | 2.00 | 33.0 / 30.0 ms | 1.10 | yes |" in targets
    assert "| 30.0 / 10.0 MiB | 3.00 | **no** |" in targets.replace("- | - | ", "")
    assert "| relu | 4.00 | 1.00 | 4.00x |" in report.render_ideas(tmp_path)
    assert "| 32x3x32x32: 0 Conv2d forward | 5.00 | 3.00 |" in report.render_profile(tmp_path)
    setup = report.render_setup(tmp_path)
    assert "HEAD x" in setup and "[0.1, 0, 0]" in setup
    assert "ideas" not in report.render_table(tmp_path)


def test_relu_on_a_0d_array_and_nested_thread_splits(threads):
    from tinyspp.ops import dispatch

    out, cache = relu_forward(np.array(-2.0))
    assert relu_backward(np.ones(()), cache) == 0.0
    # a split requested from inside a split runs inline instead of waiting on the pool
    seen = []

    def inner(a, b):
        dispatch.parallel_slices(lambda c, d: seen.append((a, c, d)), 4, 10)

    threads(lambda: dispatch.parallel_slices(inner, 3, 10))
    # with 3 threads the outer slices 1 and 2 ran on pool threads: their inner splits ran
    # inline, whole; the calling thread's slice 0 split its inner range again
    assert sorted(e for e in seen if e[0] > 0) == [(1, 0, 4), (2, 0, 4)]
    assert sum(d - c for a, c, d in seen if a == 0) == 4 + 4  # once per thread count (1, 3)
