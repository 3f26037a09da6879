"""Image SPP (tinyspp.ops.spp): loop reference, gradients, layout, ties, NaN, bad input."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import MODES, level_sets, nchw_shapes, seeds, tie_free

from tinyspp.backend import asnumpy
from tinyspp.bins import bin_divisor, bin_edges, spp_output_length
from tinyspp.gradcheck import numerical_grad_of_output, rel_error
from tinyspp.ops.spp import spp_backward, spp_forward

fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def spp_loop(x, levels, mode="adaptive", pool="max"):
    """Reference: one Python loop iteration per (image, channel, bin). Returns out, argmax."""
    N, C, H, W = x.shape
    outs, args = [], []
    for n in levels:
        rows, cols = bin_edges(H, n, mode), bin_edges(W, n, mode)
        out = np.zeros((N, C, n, n), x.dtype)
        arg = np.zeros((N, C, n, n), np.int64)
        for i in range(N):
            for c in range(C):
                for by, (y0, y1) in enumerate(rows):
                    for bx, (x0, x1) in enumerate(cols):
                        win = x[i, c, y0:y1, x0:x1]
                        if pool == "avg":  # Caffe divides by its padded window (bin_divisor)
                            out[i, c, by, bx] = win.sum() / (bin_divisor(H, n, by, mode)
                                                             * bin_divisor(W, n, bx, mode))
                            continue
                        k = int(np.argmax(win))  # first max (or first NaN) in row-major order
                        out[i, c, by, bx] = win.flat[k]
                        arg[i, c, by, bx] = (y0 + k // win.shape[1]) * W + x0 + k % win.shape[1]
        outs.append(out.reshape(N, -1))
        args.append(arg.reshape(N, -1))
    return np.concatenate(outs, axis=1), np.concatenate(args, axis=1)


def bins_valid(H, W, levels, mode):
    try:
        for n in levels:
            bin_edges(H, n, mode), bin_edges(W, n, mode)
    except ValueError:
        return False
    return True


@fixture_ok
@given(nchw_shapes(), level_sets(), st.sampled_from(MODES), st.sampled_from(["max", "avg"]),
       seeds)
def test_matches_loop_reference_or_raises_like_bins(xp, shape, levels, mode, pool, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    if not bins_valid(shape[2], shape[3], levels, mode):
        with pytest.raises(ValueError, match="spp_forward.*adaptive"):
            spp_forward(xp.asarray(x), levels, mode=mode, pool=pool)
        return
    out, cache = spp_forward(xp.asarray(x), levels, mode=mode, pool=pool)
    ref, ref_arg = spp_loop(x, levels, mode, pool)
    assert out.shape == (shape[0], spp_output_length(shape[1], levels))
    if pool == "max":
        np.testing.assert_array_equal(asnumpy(out), ref)
        np.testing.assert_array_equal(asnumpy(cache.argmax), ref_arg)
    else:
        np.testing.assert_allclose(asnumpy(out), ref, rtol=1e-12, atol=1e-12)


@fixture_ok
@given(nchw_shapes(max_n=2, max_c=2, max_hw=7), level_sets(max_level=5, max_len=3),
       st.sampled_from(MODES), st.sampled_from(["max", "avg"]), seeds)
def test_gradient_matches_central_differences(xp, shape, levels, mode, pool, seed):
    if not bins_valid(shape[2], shape[3], levels, mode):
        levels, mode = (1,), mode  # every mode pools any size into one bin
    x = xp.asarray(tie_free(shape, seed))
    out, cache = spp_forward(x, levels, mode=mode, pool=pool)
    dout = xp.asarray(np.random.default_rng(seed + 1).standard_normal(out.shape))
    dx = spp_backward(dout, cache)
    num = numerical_grad_of_output(lambda v: spp_forward(v, levels, mode=mode, pool=pool)[0],
                                   x, dout, eps=1e-6)
    err = rel_error(dx, num)
    assert err < 1e-6, f"eps=1e-6 tol=1e-6 err={err}\nanalytic={asnumpy(dx)}\nnumeric={num}"


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("mode", MODES)
def test_ones_in_ones_out(xp, mode, pool):
    """Ones in, ones out -- except Caffe's average, whose padding zeros count (issue 13): a bin
    then holds (real cells) / (padded window), e.g. 2/3 per axis on the 16-row map's border."""
    out, cache = spp_forward(xp.ones((2, 3, 16, 16)), (6, 3, 2, 1), mode=mode, pool=pool)
    expected = np.ones((2, 3 * 50))
    if (mode, pool) == ("caffe", "avg"):
        t = cache.table
        frac = (t.y1 - t.y0) * (t.x1 - t.x0) / t.area  # (M,) per bin, in the table's order
        expected = np.concatenate([np.tile(frac[m0:m0 + n * n], 3) for m0, n in
                                   zip(np.cumsum([0, 36, 9, 4]), (6, 3, 2, 1))])[None].repeat(2, 0)
        assert expected.min() < 1  # 16 rows in 6 bins: k = 3, pad = 1, border bins 2/3 real
    np.testing.assert_allclose(asnumpy(out), expected, rtol=1e-15)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_levels_larger_than_the_map_repeat_cells(xp, pool):
    x = np.random.default_rng(0).standard_normal((1, 2, 2, 3))
    out, _ = spp_forward(xp.asarray(x), (4, 1), pool=pool)
    level4 = asnumpy(out)[0, :32].reshape(2, 4, 4)
    # adaptive bins of 4 over 2 rows: rows (0, 0, 1, 1); over 3 columns: (0, 0|1, 1|2, 2)
    assert np.array_equal(level4[:, 0, 0], x[0, :, 0, 0])
    assert np.array_equal(level4[:, 3, 3], x[0, :, 1, 2])
    np.testing.assert_allclose(asnumpy(out), spp_loop(x, (4, 1), pool=pool)[0], rtol=1e-12)


def test_layout_hand_computed(xp):
    # C = 2 channels of a 2x2 map, levels (2, 1): [c0 bins (y, x), c1 bins, c0 max, c1 max]
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]], [[8.0, 7.0], [6.0, 5.0]]]])
    out, cache = spp_forward(xp.asarray(x), (2, 1))
    assert asnumpy(out).tolist() == [[1, 2, 3, 4, 8, 7, 6, 5, 4, 8]]
    assert asnumpy(cache.argmax).tolist() == [[0, 1, 2, 3, 0, 1, 2, 3, 3, 0]]
    avg, _ = spp_forward(xp.asarray(x), (1,), pool="avg")
    assert asnumpy(avg).tolist() == [[2.5, 6.5]]


def test_non_square_matches_reference(xp):
    x = tie_free((2, 3, 5, 11), seed=3)
    for pool in ("max", "avg"):
        out, _ = spp_forward(xp.asarray(x), (4, 2, 1), pool=pool)
        np.testing.assert_allclose(asnumpy(out), spp_loop(x, (4, 2, 1), pool=pool)[0],
                                   rtol=1e-12)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_non_contiguous_input(xp, pool):
    base = xp.asarray(tie_free((9, 7, 3, 2), seed=4))
    x = base.transpose(3, 2, 1, 0)  # (2, 3, 7, 9), not C-contiguous
    assert not x.flags.c_contiguous
    out, cache = spp_forward(x, pool=pool)
    ref, ref_cache = spp_forward(xp.ascontiguousarray(x), pool=pool)
    np.testing.assert_array_equal(asnumpy(out), asnumpy(ref))
    dout = xp.ones(out.shape)
    np.testing.assert_array_equal(asnumpy(spp_backward(dout, cache)),
                                  asnumpy(spp_backward(dout, ref_cache)))


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_float32_equals_float64_within_1e6(xp, pool):
    x = np.random.default_rng(5).standard_normal((2, 4, 11, 9))
    o64, c64 = spp_forward(xp.asarray(x), pool=pool)
    o32, c32 = spp_forward(xp.asarray(x.astype(np.float32)), pool=pool)
    assert o32.dtype == np.float32
    np.testing.assert_allclose(asnumpy(o32), asnumpy(o64), atol=1e-6)
    d = np.random.default_rng(6).standard_normal(o64.shape)
    dx32 = spp_backward(xp.asarray(d.astype(np.float32)), c32)
    assert dx32.dtype == np.float32
    np.testing.assert_allclose(asnumpy(dx32), asnumpy(spp_backward(xp.asarray(d), c64)),
                               atol=1e-6)


def test_ties_route_gradient_to_first_max_in_row_major_order(xp):
    # one bin over a 3x4 map; the maximum 5 appears at (0, 3), (1, 0) and (2, 2):
    # row-major order picks (0, 3) even though column 0 comes earlier in row 1
    x = np.zeros((1, 1, 3, 4))
    x[0, 0, 0, 3] = x[0, 0, 1, 0] = x[0, 0, 2, 2] = 5.0
    out, cache = spp_forward(xp.asarray(x), (1,))
    assert asnumpy(cache.argmax).tolist() == [[3]]
    dx = asnumpy(spp_backward(xp.ones((1, 1)), cache))
    expected = np.zeros((1, 1, 3, 4))
    expected[0, 0, 0, 3] = 1.0
    np.testing.assert_array_equal(dx, expected)
    # a constant map: every bin's gradient goes to its top-left cell
    out, cache = spp_forward(xp.ones((1, 1, 4, 4)), (2,))
    assert asnumpy(cache.argmax).tolist() == [[0, 2, 8, 10]]


def test_nan_propagates_and_first_nan_wins(xp):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 1, 3] = x[0, 0, 0, 1] = np.nan  # (0, 1) comes first in row-major order
    out, cache = spp_forward(xp.asarray(x), (2, 1))
    out, arg = asnumpy(out)[0], asnumpy(cache.argmax)[0]
    assert np.isnan(out[[0, 1, 4]]).all()  # top-left, top-right bins and the global bin
    assert out[2:4].tolist() == [13.0, 15.0]  # bins without NaN are unaffected
    assert arg[[0, 1, 4]].tolist() == [1, 7, 1]
    avg, _ = spp_forward(xp.asarray(x), (2,), pool="avg")
    assert np.isnan(asnumpy(avg)[0, :2]).all() and not np.isnan(asnumpy(avg)[0, 2:]).any()


def test_output_length_constant_across_input_sizes(xp):
    lengths = {spp_forward(xp.ones((1, 5, h, w)))[0].shape for h, w in [(1, 1), (6, 6), (13, 13),
                                                                        (10, 31), (40, 3)]}
    assert lengths == {(1, 5 * 50)}


def test_impl_xp_equals_auto_on_numpy():
    from tinyspp.kernels import cpu

    x = tie_free((2, 3, 9, 8), seed=7)
    a, ca = spp_forward(x, impl="auto")
    b, cb = spp_forward(x, impl="xp")
    assert cb.impl == "xp" and ca.impl == ("cpu" if cpu.available() else "xp")
    np.testing.assert_array_equal(a, b)
    # what the compiled kernel does not take stays on the array path
    for kwargs, data in ((dict(pool="avg"), x), (dict(mode="paper"), x),
                         ({}, x.astype(np.float16))):
        assert spp_forward(data, **kwargs)[1].impl == "xp"


def _needs_cpu_kernel():
    from tinyspp.kernels import cpu

    if not cpu.available():
        pytest.skip(f"no compiled kernel: {cpu.why_unavailable()}")


@given(shape=nchw_shapes(max_hw=15), levels=level_sets(), seed=seeds,
       double=st.booleans(), kind=st.sampled_from(["awkward", "ties", "normal"]))
def test_cpu_kernel_equals_the_array_path(shape, levels, seed, double, kind):
    """``impl="cpu"`` (the region kernel, one region per image) finds the array path's argmax
    bit for bit, so the gradients are the same bits; its output is the value at the argmax,
    bit for bit (the array path may give the other sign of two tied zeros, or another NaN's
    payload: the outputs compare as values)."""
    _needs_cpu_kernel()
    dtype = np.float64 if double else np.float32
    rng = np.random.default_rng(seed)
    if kind == "awkward" and np.prod(shape) >= 6:
        x = awkward_map(shape, seed, dtype)
        x.reshape(-1)[rng.choice(x.size, size=min(3, x.size), replace=False)] = -0.0
    elif kind == "ties":
        x = rng.integers(0, 3, shape).astype(dtype)
    else:
        x = rng.standard_normal(shape).astype(dtype)
    fast, cfast = spp_forward(x, levels, impl="cpu")
    plain, cplain = spp_forward(x, levels, impl="xp")
    assert cfast.impl == "cpu"
    np.testing.assert_array_equal(cfast.argmax, cplain.argmax)
    np.testing.assert_array_equal(fast, plain)
    N, C = shape[:2]
    from tinyspp.ops.spp import channel_of_column

    chan = channel_of_column(levels, C)
    at = x.reshape(N, C, -1)[np.arange(N)[:, None], chan[None, :],
                             cfast.argmax.astype(np.int64)]
    np.testing.assert_array_equal(fast.view(np.uint8), at.view(np.uint8))
    dout = rng.standard_normal(fast.shape).astype(dtype)
    np.testing.assert_array_equal(spp_backward(dout, cfast).view(np.uint8),
                                  spp_backward(dout, cplain).view(np.uint8))


def test_cpu_impl_errors_name_what_it_takes():
    _needs_cpu_kernel()
    x = tie_free((1, 2, 5, 5), seed=3)
    with pytest.raises(ValueError, match="impl='cpu' pools with pool='max' and mode='adaptive'"):
        spp_forward(x, (2, 1), pool="avg", impl="cpu")
    with pytest.raises(ValueError, match="impl='cpu' pools with pool='max' and mode='adaptive'"):
        spp_forward(x, (2, 1), mode="paper", impl="cpu")
    with pytest.raises(TypeError, match="impl='cpu' takes NumPy float32 or float64 x, got "
                                        "ndarray float16"):
        spp_forward(x.astype(np.float16), (2, 1), impl="cpu")
    # maps over 2**31 cells (an int32 argmax) are refused by impl='cpu', and left by
    # impl='auto' to the array path (a view of one zero, no memory behind it)
    from tinyspp.ops.spp import _cpu_refusal

    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (1, 1, 2**16, 2**15 + 1),
                                           (0, 0, 0, 0))
    assert _cpu_refusal(x, "adaptive", "max", "spp_forward") is None
    refusal = _cpu_refusal(huge, "adaptive", "max", "spp_forward")
    assert isinstance(refusal, ValueError) and "at most 2**31 cells" in str(refusal)
    with pytest.raises(ValueError, match="impl='cpu' needs maps of at most 2..31 cells"):
        spp_forward(huge, (1,), impl="cpu")


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        ({"x": np.ones((3, 32))}, ValueError, r"spp_forward: x must be 4-D"),
        ({"x": np.ones((1, 1, 4, 4), dtype=np.int64)}, TypeError, r"x must have a floating"),
        ({"x": np.ones((0, 1, 4, 4))}, ValueError, r"x must have no empty axis"),
        ({"levels": ()}, ValueError, r"levels must not be empty"),
        ({"levels": (2, 0)}, ValueError, r"levels\[1\] must be >= 1"),
        ({"mode": "fancy"}, ValueError, r"mode must be one of"),
        ({"pool": "sum"}, ValueError, r"pool must be one of"),
        ({"impl": "gpu"}, ValueError, r"impl must be one of"),
        ({"levels": (6,), "mode": "paper"}, ValueError, r"size=4.*n=6.*adaptive"),
    ],
)
def test_bad_input_names_the_argument(kwargs, exc, pattern):
    kwargs = {"x": np.ones((1, 1, 4, 4)), **kwargs}
    with pytest.raises(exc, match=pattern):
        spp_forward(**kwargs)


def test_backward_rejects_wrong_dout_shape():
    _, cache = spp_forward(np.ones((2, 3, 5, 5)), (2, 1))
    with pytest.raises(ValueError, match=r"spp_backward: dout must have shape \(2, 15\)"):
        spp_backward(np.ones((2, 14)), cache)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_spp_kernel_path_agrees_with_xp_path(pool):
    from tinyspp.kernels import emulate

    if emulate.find_compiler() is None:
        pytest.skip("needs a C++ compiler for the CPU emulation of the CUDA kernels")
    x = tie_free((2, 3, 10, 7), seed=8)
    out_k, cache_k = spp_forward(x, pool=pool, impl="kernel")
    out_x, cache_x = spp_forward(x, pool=pool, impl="xp")
    np.testing.assert_allclose(out_k, out_x, rtol=1e-12)
    dout = np.random.default_rng(9).standard_normal(out_x.shape)
    np.testing.assert_allclose(spp_backward(dout, cache_k), spp_backward(dout, cache_x),
                               rtol=1e-12, atol=1e-12)


# ------------------------------------------------ caffe average pooling and the fast max path

def test_caffe_avg_divides_by_the_padded_window_hand_computed(xp):
    """Issue 13: Caffe's SPP pads a 5-wide axis to 6 for 2 bins (k = 3, pad = 1) and its
    PoolingLayer divides every bin by the window clipped to the padded map, 3 x 3 = 9, even the
    first bin, which covers only 2 x 2 real cells (the clipped area would divide it by 4)."""
    x = xp.asarray(np.arange(25.0).reshape(1, 1, 5, 5))
    assert bin_edges(5, 2, "caffe") == ((0, 2), (2, 5))
    out, cache = spp_forward(x, levels=(2,), mode="caffe", pool="avg")
    # bin sums by hand: rows 0-1 x cols 0-1: 0+1+5+6 = 12; rows 0-1 x cols 2-4: 33;
    # rows 2-4 x cols 0-1: 93; rows 2-4 x cols 2-4: 162
    np.testing.assert_allclose(asnumpy(out), [[12 / 9, 33 / 9, 93 / 9, 162 / 9]], rtol=1e-15)
    dx = asnumpy(spp_backward(xp.ones((1, 4)), cache))[0, 0]
    np.testing.assert_allclose(dx, np.full((5, 5), 1 / 9), rtol=1e-15)  # bins tile: 1/9 each
    # adaptive mode on the same map keeps the mean over the bin's cells
    out, _ = spp_forward(x, levels=(2,), mode="adaptive", pool="avg")
    np.testing.assert_allclose(asnumpy(out)[0, 0], (0 + 1 + 2 + 5 + 6 + 7 + 10 + 11 + 12) / 9)


def awkward_map(shape, seed, dtype):
    """A map on a coarse grid (many ties), with zeros, +-inf and a few NaN."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal(shape) * 1.5).astype(dtype)
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=6, replace=False)
    flat[picks[:2]] = np.inf
    flat[picks[2:4]] = -np.inf
    flat[picks[4:]] = np.nan
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,levels", [((3, 4, 13, 13), (6, 3, 2, 1)),
                                          ((2, 3, 10, 7), (4, 2, 1)),
                                          ((2, 2, 5, 9), (6, 3, 1)),
                                          ((1, 3, 3, 2), (4, 2, 1, 2))])
def test_nested_levels_and_threads_equal_the_plain_path(monkeypatch, dtype, shape, levels):
    """Merging nested levels from a finer one, and splitting channels over threads, give the
    plain path's values and argmax bit for bit, with ties, infinities and NaN in the map."""
    from tinyspp.ops import dispatch, spp

    x = awkward_map(shape, 7, dtype)
    monkeypatch.setattr(dispatch, "MIN_WORK", 0)
    results = []
    for nest, threads in ((True, 3), (True, 1), (False, 1)):
        monkeypatch.setattr(spp, "NEST", nest)
        dispatch.set_num_threads(threads)
        try:
            out, cache = spp_forward(x, levels, impl="xp")  # the array path's nesting
        finally:
            dispatch.set_num_threads(None)
        results.append((out, cache.argmax))
    for out, argmax in results[:2]:
        np.testing.assert_array_equal(out, results[2][0])
        np.testing.assert_array_equal(argmax, results[2][1])
    ref, where = spp_loop(x, levels)
    np.testing.assert_array_equal(results[0][0], ref)
    np.testing.assert_array_equal(results[0][1], where)


def test_signed_zeros_tie_and_the_first_one_wins(xp):
    """-0.0 == +0.0 is a tie (never drawn by tie-free strategies): the first in row-major
    order gets the gradient, in every level, nested or scanned."""
    x = np.full((1, 1, 4, 4), -1.0)
    x[0, 0, 1, 2], x[0, 0, 3, 0] = -0.0, 0.0  # flat 6 (first) and 12
    out, cache = spp_forward(xp.asarray(x), levels=(2, 1))
    # level 2: bins of -1 (first cell), -0.0 at flat 6, +0.0 at flat 12, -1 (first cell 10);
    # level 1 (the whole map, merged from level 2): the first zero, flat 6
    assert asnumpy(cache.argmax).tolist() == [[0, 6, 12, 10, 6]]
    assert (asnumpy(out)[0, [1, 2, 4]] == 0).all()
