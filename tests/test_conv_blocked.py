"""The channel-blocked direct convolution (``tinyspp/kernels/blocked.cpp``) against its twins.

* the glue's packing against NumPy reshapes (blocks of x, of w, the turned filters of the
  input gradient, and back), bit for bit;
* ``conv2d_forward`` / ``conv2d_backward`` by the kernel (``BLOCKED_IMPL = "always"``, so the
  tests run it on CPUs without AVX-512 too) against im2col + GEMM (``"off"``) and against the
  formula: the output and all three gradients, float32 and float64, on random geometries
  (channel counts that leave a partial block, batches that do not divide among the threads,
  1x1 to 5x5 kernels, ``pad`` from 0 to ``k - 1``), and the input gradient against the
  adjoint identity;
* the same bits on 1, 2 and 3 threads, and for the weight gradient's image groups;
* the rule that picks it, the fall-back for a gradient of another dtype, the glue's errors.
"""

import numpy as np
import pytest
from checks import assert_compiles_without_warnings, assert_input_gradient_is_the_adjoint
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyspp.kernels import blocked
from tinyspp.ops import conv, dispatch
from tinyspp.ops.conv import conv2d_backward, conv2d_forward, conv2d_forward_naive

needs_kernel = pytest.mark.skipif(not blocked.available(),
                                  reason=f"no compiled kernel: {blocked.why_unavailable()}")

TOL = {np.float32: 2e-6, np.float64: 1e-13}  # relative to the largest magnitude


def close(got, want, dtype, factor=1.0):
    scale = max(float(np.abs(want).max()), 1e-30)
    err = np.abs(got.astype(np.float64) - want.astype(np.float64)).max()
    assert err <= factor * TOL[dtype] * scale, (err, scale)


@pytest.fixture
def always(monkeypatch):
    """The blocked kernel wherever it applies, whatever the CPU."""
    monkeypatch.setattr(conv, "BLOCKED_IMPL", "always")


def reference_blocks(x, pad, B):
    """x (N, C, H, W) -> (N, Cb, H + 2*pad, W + 2*pad, B) by NumPy: zero padded channels."""
    N, C, H, W = x.shape
    Cb = -(-C // B)
    full = np.zeros((N, Cb * B, H + 2 * pad, W + 2 * pad), x.dtype)
    full[:, :C, pad:pad + H, pad:pad + W] = x
    return full.reshape(N, Cb, B, H + 2 * pad, W + 2 * pad).transpose(0, 1, 3, 4, 2)


def reference_weight_blocks(w, B):
    """w (F, C, kh, kw) -> (Fb, Cb, kh, kw, B_c, B_f) by NumPy."""
    F, C, kh, kw = w.shape
    Fb, Cb = -(-F // B), -(-C // B)
    full = np.zeros((Fb * B, Cb * B, kh, kw), w.dtype)
    full[:F, :C] = w
    return full.reshape(Fb, B, Cb, B, kh, kw).transpose(0, 2, 4, 5, 3, 1)


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_packing_is_a_reshape_bit_for_bit(dtype):
    rng = np.random.default_rng(0)
    B = blocked.block(dtype)
    assert B == {np.float32: 16, np.float64: 8}[dtype]
    x = rng.standard_normal((3, B + 3, 5, 7)).astype(dtype)  # a partial last block
    xb = blocked.empty((3, 2, 9, 11, B), dtype)
    blocked.pack_input(x, 2, xb)
    np.testing.assert_array_equal(xb, reference_blocks(x, 2, B))
    ob = np.ascontiguousarray(reference_blocks(x, 0, B))  # back to NCHW: the real channels
    back = np.empty_like(x)
    blocked.unpack_output(ob, x.shape[1], back)
    np.testing.assert_array_equal(back, x)
    w = rng.standard_normal((2 * B + 1, B - 1, 3, 2)).astype(dtype)
    wb = blocked.empty(blocked.weight_shape(*w.shape, dtype), dtype)
    blocked.pack_weights(w, wb)
    np.testing.assert_array_equal(wb, reference_weight_blocks(w, B))
    dw = np.empty_like(w)
    blocked.unpack_weights(wb, dw)
    np.testing.assert_array_equal(dw, w)
    # the turned filters of the input gradient: the blocks of conv.transposed_convolution's
    w = rng.standard_normal((2 * B + 1, B + 2, 3, 3)).astype(dtype)
    wb = blocked.empty(blocked.weight_shape(*w.shape, dtype), dtype)
    blocked.pack_weights(w, wb)
    turned = blocked.empty((wb.shape[1], wb.shape[0], *wb.shape[2:]), dtype)
    blocked.turn_weights(wb, turned)
    np.testing.assert_array_equal(turned,
                                  reference_weight_blocks(conv.transposed_convolution(w, 1)[0],
                                                          B))


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_pieces_cover_the_whole_bit_for_bit(dtype):
    """Ranges of images, tasks and blocks write only their part, and together all of it."""
    rng = np.random.default_rng(1)
    B = blocked.block(dtype)
    x = rng.standard_normal((3, 2 * B, 6, 5)).astype(dtype)
    w = rng.standard_normal((5 * B, 2 * B, 3, 3)).astype(dtype)
    xb, xb2 = (np.full((3, 2, 8, 7, B), np.nan, dtype) for _ in range(2))
    blocked.pack_input(x, 1, xb)
    blocked.pack_input(x, 1, xb2, 0, 5)  # rows of the padded images (8 each)
    blocked.pack_input(x, 1, xb2, 5, 24)
    np.testing.assert_array_equal(xb, xb2)
    wb = blocked.empty(blocked.weight_shape(*w.shape, dtype), dtype)
    blocked.pack_weights(w, wb, 0, 2)
    blocked.pack_weights(w, wb, 2, 5)
    np.testing.assert_array_equal(wb, reference_weight_blocks(w, B))
    bias = rng.standard_normal(5 * B).astype(dtype)
    whole, parts = (np.full((3, 5, 6, 5, B), np.nan, dtype) for _ in range(2))
    blocked.forward(xb, wb, bias, whole)
    tasks = blocked.forward_tasks(3, 5, 6)
    assert tasks == 3 * 3 * 6  # tiles of two filter blocks (2 + 2 + 1) x 6 output rows
    for t0, t1 in [(0, 4), (4, 5), (5, 31), (31, tasks)]:
        blocked.forward(xb, wb, bias, parts, t0, t1)
    np.testing.assert_array_equal(whole, parts)
    out, out2 = (np.full((3, 5 * B - 3, 6, 5), np.nan, dtype) for _ in range(2))
    blocked.unpack_output(whole, 5 * B - 3, out)
    blocked.unpack_output(whole, 5 * B - 3, out2, 0, 7)  # output rows (6 per image)
    blocked.unpack_output(whole, 5 * B - 3, out2, 7, 18)
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(out, whole.transpose(0, 1, 4, 2, 3).reshape(3, 5 * B, 6, 5)[
        :, :5 * B - 3])
    db = rng.standard_normal((3, 5, 8, 7, B)).astype(dtype)  # dout (6, 5) at offset 1
    dw, dw2 = (np.full(wb.shape, np.nan, dtype) for _ in range(2))
    blocked.weight_grad(xb, db, 3, 3, 1, dw)
    for t0, t1 in [(0, 1), (1, blocked.weight_grad_tasks(5, 2))]:
        blocked.weight_grad(xb, db, 3, 3, 1, dw2, t0, t1)
    np.testing.assert_array_equal(dw, dw2)
    # each task also writing its blocks to the (F, C, k, k) gradient, as unpack_weights does
    real, real2 = (np.full((5 * B - 2, 2 * B - 1, 3, 3), np.nan, dtype) for _ in range(2))
    blocked.unpack_weights(dw, real)
    for t0, t1 in [(0, 3), (3, blocked.weight_grad_tasks(5, 2))]:
        blocked.weight_grad(xb, db, 3, 3, 1, dw2, t0, t1, out=real2)
    np.testing.assert_array_equal(real, real2)
    with pytest.raises(ValueError, match="does not fit blocks"):
        blocked.weight_grad(xb, db, 3, 3, 1, dw2, out=np.empty((5 * B + 1, 2 * B, 3, 3), dtype))


geometry = st.tuples(
    st.integers(1, 5), st.integers(16, 40), st.integers(1, 12), st.integers(1, 16),  # N C H W
    st.integers(16, 40), st.integers(1, 5),  # F k
    st.integers(0, 4),  # pad, at most k - 1 (below)
).map(lambda g: g[:6] + (min(g[6], g[5] - 1),)).filter(
    lambda g: g[2] + 2 * g[6] >= g[5] and g[3] + 2 * g[6] >= g[5])


@needs_kernel
@settings(max_examples=30)
@given(g=geometry, seed=st.integers(0, 2**16), double=st.booleans(), need_dx=st.booleans())
def test_the_kernel_agrees_with_im2col_and_gemm(g, seed, double, need_dx):
    N, C, H, W, F, k, pad = g
    dtype = np.float64 if double else np.float32
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, k, k)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    saved = conv.BLOCKED_IMPL
    try:
        conv.BLOCKED_IMPL = "always"
        out, cache = conv2d_forward(x, w, b, pad=pad)
        assert cache.packed is not None and cache.x is None and cache.cols is None
        dout = rng.standard_normal(out.shape).astype(dtype)
        got = (out,) + conv2d_backward(dout, cache, need_dx=need_dx)
        conv.BLOCKED_IMPL = "off"
        out2, cache2 = conv2d_forward(x, w, b, pad=pad)
        assert cache2.packed is None
        want = (out2,) + conv2d_backward(dout, cache2, need_dx=need_dx)
    finally:
        conv.BLOCKED_IMPL = saved
    assert (got[1] is None) == (not need_dx)
    for a, c in zip(got, want, strict=True):
        if c is None:
            continue
        assert a.dtype == dtype and a.shape == c.shape
        close(a, c, dtype, factor=10)  # sums of up to 40*25 (forward) or 5*16*16 terms (dw)
    if double:  # and the formula, loop by loop
        close(out, conv2d_forward_naive(x, w, b, pad=pad), dtype, factor=10)


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,F,k,pad", [((3, 16, 9, 11), 32, 3, 1), ((2, 24, 7, 6), 17, 5, 2),
                                           ((1, 33, 6, 6), 16, 3, 2), ((4, 16, 5, 5), 16, 1, 0)])
def test_the_input_gradient_is_the_adjoint(always, dtype, shape, F, k, pad):
    """sum(conv(x) * dout) over every output (bias left out) equals sum(x * dx)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((F, shape[1], k, k)).astype(dtype)
    out, cache = conv2d_forward(x, w, np.zeros(F, dtype), pad=pad)
    assert cache.packed is not None
    dout = np.cos(out)
    dx = conv2d_backward(dout, cache)[0]
    assert dx.dtype == dtype
    assert_input_gradient_is_the_adjoint(x, w, pad, dout, dx)


@needs_kernel
@pytest.mark.parametrize("N", [1, 3, 4, 9])  # fewer images than threads, uneven, even
@pytest.mark.parametrize("C,F", [(16, 16), (32, 80), (48, 32)])  # dw by image groups or tasks
def test_the_same_bits_on_any_number_of_threads(always, monkeypatch, N, C, F):
    monkeypatch.setattr(dispatch, "MIN_WORK", 0)  # split even these small convolutions
    rng = np.random.default_rng(N * C + F)
    x = rng.standard_normal((N, C, 7, 6)).astype(np.float32)
    w = rng.standard_normal((F, C, 3, 3)).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    dout = rng.standard_normal((N, F, 7, 6)).astype(np.float32)
    results = []
    try:
        for threads in (1, 2, 3):
            with dispatch.using_threads(threads):
                out, cache = conv2d_forward(x, w, b, pad=1)
                assert cache.packed is not None
                results.append(b"".join(a.tobytes() for a in (out,) + conv2d_backward(
                    dout, cache)))
    finally:
        dispatch.set_num_threads(None)
    assert results[0] == results[1] == results[2]


@needs_kernel
def test_weight_gradient_image_groups_follow_the_cpus_not_the_threads(always, monkeypatch):
    """Few tasks (one filter tile, one input block) and many images: dw is summed over image
    groups, as many as the machine has CPUs, in group order."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 16, 5, 5)).astype(np.float64)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float64)
    dout = rng.standard_normal((6, 16, 5, 5)).astype(np.float64)
    _, cache = conv2d_forward(x, w, np.zeros(16), pad=1)
    for cpus in (1, 2, 4):
        monkeypatch.setattr(dispatch, "cpu_count", lambda cpus=cpus: cpus)
        dw = conv2d_backward(dout, cache, need_dx=False)[1]
        xb, _ = cache.packed
        db = blocked.empty((6, 2, 5, 5, 8), np.float64)
        blocked.pack_input(dout, 0, db)
        want = None
        for g in range(cpus):  # the groups' parts, added in order
            n0, n1 = 6 * g // cpus, 6 * (g + 1) // cpus
            part = blocked.empty((2, 2, 3, 3, 8, 8), np.float64)
            blocked.weight_grad(xb[n0:n1], db[n0:n1], 3, 3, 0, part)
            want = part if g == 0 else want + part
        unpacked = np.empty_like(w)
        blocked.unpack_weights(np.ascontiguousarray(want), unpacked)
        assert dw.tobytes() == unpacked.tobytes()


@needs_kernel
def test_a_gradient_of_another_dtype_takes_the_columns_path(always, monkeypatch):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 20, 6, 7)).astype(np.float32)
    w = rng.standard_normal((18, 20, 3, 3)).astype(np.float32)
    b = rng.standard_normal(18).astype(np.float32)
    out, cache = conv2d_forward(x, w, b, pad=1)
    assert cache.packed is not None
    np.testing.assert_array_equal(conv._unpacked(cache), x)  # x back from its blocks
    dout = rng.standard_normal(out.shape)  # float64
    got = conv2d_backward(dout, cache)
    monkeypatch.setattr(conv, "BLOCKED_IMPL", "off")
    want = conv2d_backward(dout, conv2d_forward(x, w, b, pad=1)[1])
    for a, c in zip(got, want, strict=True):
        assert a.dtype == c.dtype
        np.testing.assert_array_equal(a, c)


def test_the_rule_that_picks_the_kernel(monkeypatch):
    def uses(x_shape, w_shape, stride=1, pad=1, dtype=np.float32, wdtype=None):
        return conv._use_blocked(np.zeros(x_shape, dtype), np.zeros(w_shape, wdtype or dtype),
                                 stride, pad)

    monkeypatch.setattr(conv, "BLOCKED_IMPL", "always")
    m = conv.BLOCKED_MIN_CHANNELS
    ok = blocked.available()
    assert uses((1, m, 8, 8), (m, m, 3, 3)) == ok
    assert uses((1, m, 8, 8), (m, m, 3, 3), dtype=np.float64) == ok
    assert uses((1, m, 8, 8), (m, m, 5, 5), pad=4) == ok  # pad = k - 1
    assert not uses((1, m - 1, 8, 8), (m, m - 1, 3, 3))  # too few channels
    assert not uses((1, m, 8, 8), (m - 1, m, 3, 3))  # too few filters
    assert not uses((1, m, 8, 8), (m, m, 3, 3), stride=2)
    assert not uses((1, m, 8, 8), (m, m, 3, 5))  # not square
    assert not uses((1, m, 8, 8), (m, m, 3, 3), pad=3)  # pad > k - 1
    assert not uses((1, m, 8, 8), (m, m, 3, 3), wdtype=np.float64)  # two dtypes
    assert not uses((1, m, 8, 8), (m, m, 3, 3), dtype=np.float16)
    monkeypatch.setattr(conv, "BLOCKED_IMPL", "auto")  # and a CPU with AVX-512
    big = (1, m, 32, 32)  # BLOCKED_MIN_POSITIONS output positions
    assert 32 * 32 == conv.BLOCKED_MIN_POSITIONS
    assert uses(big, (m, m, 3, 3)) == (ok and blocked.fast())
    # a small map of few channels: the direct kernel of few channels, where it runs
    assert m <= conv.DIRECT_MAX_CHANNELS
    assert not uses((1, m, 31, 32), (m, m, 3, 3)) or not conv._use_direct(
        np.zeros((1, m, 31, 32), np.float32), np.zeros((m, m, 3, 3), np.float32), 1)
    assert uses((1, m + conv.DIRECT_MAX_CHANNELS, 8, 8),  # more channels: any map
                (m, m + conv.DIRECT_MAX_CHANNELS, 3, 3)) == (ok and blocked.fast())
    monkeypatch.setattr(conv, "DIRECT_IMPL", "off")  # im2col + GEMM everywhere
    assert not uses(big, (m, m, 3, 3))
    monkeypatch.setattr(conv, "DIRECT_IMPL", "auto")
    monkeypatch.setattr(conv, "BLOCKED_IMPL", "off")
    assert not uses((1, m, 8, 8), (m, m, 3, 3))
    monkeypatch.setattr(conv, "BLOCKED_IMPL", "on")
    with pytest.raises(ValueError, match="BLOCKED_IMPL must be 'auto', 'always' or 'off', "
                                         "got 'on'"):
        conv2d_forward(np.zeros((1, m, 8, 8), np.float32), np.zeros((m, m, 3, 3), np.float32),
                       np.zeros(m, np.float32))


def test_the_build_uses_avx512_exactly_where_the_cpu_has_it():
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as have
    except ImportError:  # NumPy 1.x
        from numpy.core._multiarray_umath import __cpu_features__ as have
    assert blocked.fast() is bool(have.get("AVX512F"))
    assert ("-mfma" in blocked.flags()) is bool(have.get("FMA3"))


def test_empty_is_aligned_to_a_vector():
    for n in (1, 7, 1000, 100_000):
        a = blocked.empty((n, 16), np.float32)
        assert a.ctypes.data % blocked.VECTOR_BYTES == 0
        assert a.shape == (n, 16) and a.dtype == np.float32 and a.flags.c_contiguous


@needs_kernel
def test_glue_errors_name_the_argument():
    xb = blocked.empty((1, 1, 5, 5, 16), np.float32)
    wb = blocked.empty((1, 1, 3, 3, 16, 16), np.float32)
    with pytest.raises(TypeError, match=r"out must be a C-contiguous float32 NumPy array of "
                                        r"shape \(1, 1, 3, 3, 16\)"):
        blocked.forward(xb, wb, np.zeros(16, np.float32), np.zeros((1, 1, 3, 4, 16), np.float32))
    with pytest.raises(TypeError, match="bias must be a C-contiguous float32"):
        blocked.forward(xb, wb, np.zeros(16), np.zeros((1, 1, 3, 3, 16), np.float32))
    with pytest.raises(TypeError, match="x must be a float32 or float64 NumPy array"):
        blocked.pack_input(np.zeros((1, 2, 3, 3), np.int32), 0, xb)
    with pytest.raises(ValueError, match="channels must be in 1..16, got 17"):
        blocked.unpack_output(xb, 17, np.zeros((1, 17, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"the 7x7 kernel does not fit the padded 5x5 input"):
        blocked.forward(xb, blocked.empty((1, 1, 7, 7, 16, 16), np.float32),
                        np.zeros(16, np.float32), np.zeros((1, 1, 0, 0, 16), np.float32))
    with pytest.raises(ValueError, match="db must hold a 3x3 dout padded by 1, got 3x3"):
        blocked.weight_grad(xb, blocked.empty((1, 1, 3, 3, 16), np.float32), 3, 3, 1,
                            blocked.empty((1, 1, 3, 3, 16, 16), np.float32))


def test_source_compiles_without_warnings(tmp_path):
    assert_compiles_without_warnings(blocked, tmp_path)


def test_the_filter_tile_matches_the_kernel():
    """``blocked.FILTER_TILE`` (the forward's and dw's task size) and ``VECTOR_BYTES`` are the
    ``.cpp`` file's ``G`` and ``VBYTES``."""
    import re
    from pathlib import Path

    source = (Path(blocked.__file__).parent / blocked.SOURCE_NAME).read_text()
    assert int(re.search(r"constexpr int G = (\d+);", source).group(1)) == blocked.FILTER_TILE
    assert int(re.search(r"constexpr int VBYTES = (\d+);", source).group(1)) == \
        blocked.VECTOR_BYTES


@needs_kernel
def test_a_layer_trains_on_the_kernel_like_on_the_columns(monkeypatch):
    """nn.Conv2d through the kernel: a few SGD steps of a two-conv network follow the columns
    path's trajectory in float64."""
    from tinyspp.nn import Conv2d, ReLU, Sequential

    def run(impl):
        monkeypatch.setattr(conv, "BLOCKED_IMPL", impl)
        rng = np.random.default_rng(6)
        net = Sequential(Conv2d(16, 24, 3, pad=1, rng=rng, dtype=np.float64), ReLU(),
                         Conv2d(24, 16, 3, pad=1, rng=rng, dtype=np.float64))
        x = rng.standard_normal((3, 16, 6, 6))
        for _ in range(3):
            out = net.forward(x)
            net.backward(out - 1.0)
            params, grads = net.params(), net.grads()
            for name, p in params.items():
                p -= 0.01 * grads[name]
        return out

    close(run("always"), run("off"), np.float64, factor=100)


@needs_kernel
def test_the_benchmark_ideas_switch_the_blocked_kernel_on_and_off(monkeypatch):
    """The ideas rows of the blocked kernel time it against the path before it; the older
    ideas' rows run with it off, on the code they changed."""
    from tinyspp.bench import ideas

    calls = []
    real = conv._blocked_forward
    monkeypatch.setattr(conv, "_blocked_forward", lambda *a: calls.append(a[0].shape) or real(*a))
    plain, fast = (ideas._blocked_conv((2, 16, 24, 24), (16, 16, 3, 3), 1, 0)(f) for f in (0, 1))
    calls.clear()
    plain()
    assert calls == []
    fast()
    assert calls == ([(2, 16, 24, 24)] if blocked.fast() else [])
    calls.clear()
    for older in (ideas._second_conv, ideas._conv_dx):
        for f in (False, True):
            older(f)()
    assert calls == []
