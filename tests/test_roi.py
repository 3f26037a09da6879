"""Region SPP (tinyspp.ops.roi): the crop identity, gradients, de-duplication, validation."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import level_sets, roi_rows, seeds, tie_free

from tinyspp.backend import asnumpy
from tinyspp.bench.pyramid import random_rois
from tinyspp.gradcheck import numerical_grad_of_output, rel_error
from tinyspp.kernels import cpu as cpu_kernel
from tinyspp.ops.rectmax import plane_keys, window_max
from tinyspp.ops.roi import roi_spp_backward, roi_spp_forward
from tinyspp.ops.spp import spp_backward, spp_forward

fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True, params=["cpu", "xp"])
def numpy_path(request, monkeypatch):
    """Every test runs with both CPU paths behind impl="auto": the compiled kernel, then the
    NumPy sparse-table path (TINYSPP_CPU_KERNEL=0). Returns the impl that auto takes."""
    if request.param == "cpu" and not cpu_kernel.available():
        pytest.skip("needs a C++ compiler for the compiled CPU kernel")
    monkeypatch.setenv("TINYSPP_CPU_KERNEL", "1" if request.param == "cpu" else "0")
    return request.param


def roi_loop(features, rois, levels=(6, 3, 2, 1), mode="adaptive", pool="max", dout=None):
    """Oracle: spp_forward on every crop (one Python iteration per RoI).

    Returns out (R, D), absolute argmax (R, D) (max only) and dfeatures for ``dout``.
    """
    N, C, H, W = features.shape
    outs, args = [], []
    dfeatures = np.zeros(features.shape)
    for r, (b, x0, y0, x1, y1) in enumerate(rois):
        out, cache = spp_forward(features[b:b + 1, :, y0:y1 + 1, x0:x1 + 1], levels, mode=mode,
                                 pool=pool)
        outs.append(out[0])
        if pool == "max":
            w = x1 - x0 + 1
            args.append((cache.argmax[0] // w + y0) * W + cache.argmax[0] % w + x0)
        if dout is not None:
            dfeatures[b:b + 1, :, y0:y1 + 1, x0:x1 + 1] += spp_backward(dout[r:r + 1], cache)
    return np.array(outs), np.array(args), dfeatures


@st.composite
def maps_and_rois(draw, max_n=3, max_c=3, max_hw=14, max_r=12):
    """A feature-map shape and valid RoIs: point RoIs, border-touching RoIs, R != N."""
    N, C = draw(st.integers(1, max_n)), draw(st.integers(1, max_c))
    H, W = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    return (N, C, H, W), draw(roi_rows(N, H, W, min_r=1, max_r=max_r))


@fixture_ok
@given(maps_and_rois(), level_sets(max_level=7), st.sampled_from(["max", "avg"]),
       st.sampled_from([np.float64, np.float32]), st.booleans(), seeds)
def test_crop_identity(xp, shape_rois, levels, pool, dtype, ties, seed):
    shape, rois = shape_rois
    rng = np.random.default_rng(seed)
    features = rng.standard_normal(shape)
    if ties:  # few distinct values: exercises the first-maximum rule
        features = np.round(features)
    features = features.astype(dtype)
    out, cache = roi_spp_forward(xp.asarray(features), xp.asarray(rois), levels, pool=pool)
    ref, ref_arg, _ = roi_loop(features, rois, levels, pool=pool)
    assert out.shape == ref.shape and out.dtype == dtype
    if pool == "max":
        np.testing.assert_array_equal(asnumpy(out), ref)  # bitwise
        np.testing.assert_array_equal(asnumpy(cache.argmax), ref_arg)
    else:
        tol = 1e-12 if dtype == np.float64 else 1e-6
        np.testing.assert_allclose(asnumpy(out), ref, rtol=tol, atol=tol)


@given(maps_and_rois(max_hw=12, max_r=6), st.sampled_from(["paper", "caffe"]), seeds)
def test_crop_identity_other_modes_or_error_naming_the_row(shape_rois, mode, seed):
    shape, rois = shape_rois
    features = np.random.default_rng(seed).standard_normal(shape)
    levels = (3, 2, 1)
    try:
        ref, ref_arg, _ = roi_loop(features, rois, levels, mode=mode)
    except ValueError:
        with pytest.raises(ValueError, match=r"rois row \d+ .*cannot be pooled.*adaptive"):
            roi_spp_forward(features, rois, levels, mode=mode)
        return
    out, cache = roi_spp_forward(features, rois, levels, mode=mode)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(cache.argmax, ref_arg)


@fixture_ok
@given(maps_and_rois(max_n=2, max_c=2, max_hw=7, max_r=5), level_sets(max_level=4, max_len=3),
       st.sampled_from(["max", "avg"]), seeds)
def test_gradient_matches_central_differences(xp, shape_rois, levels, pool, seed):
    shape, rois = shape_rois
    features = xp.asarray(tie_free(shape, seed))
    rois = xp.asarray(rois)
    out, cache = roi_spp_forward(features, rois, levels, pool=pool)
    dout = xp.asarray(np.random.default_rng(seed + 1).standard_normal(out.shape))
    dfeatures = roi_spp_backward(dout, cache)
    # avg pooling is linear, so a large step has no truncation error and shrinks the rounding
    # noise of the float64 integral image (~1e-16 of a prefix sum, divided by eps)
    # max pooling is linear too as long as no perturbed value passes another: tie_free keeps
    # every gap >= 0.8 / size, so a step of 0.1 / size never reorders, and a step that large
    # keeps the rounding noise (~1e-16 * |loss| / eps) far below small gradient entries
    eps = 0.1 / features.size if pool == "max" else 1e-3
    num = numerical_grad_of_output(lambda f: roi_spp_forward(f, rois, levels, pool=pool)[0],
                                   features, dout, eps=eps)
    analytic, num = asnumpy(dfeatures), asnumpy(num)
    outside = analytic == 0  # cells no bin covers
    if pool == "avg":
        # the float64 integral image makes every bin sum round slightly differently when a cell
        # outside it changes: finite differences see ~1e-11 there instead of an exact 0
        assert np.abs(num[outside]).max(initial=0.0) < 1e-8
        num = np.where(outside, 0.0, num)
    err = rel_error(analytic, num)
    assert err < 1e-6, f"eps={eps} tol=1e-6 err={err}\nanalytic={analytic}\nnumeric={num}"


@pytest.mark.parametrize("extra", [0, 5])  # 2 of 6 rows are duplicates, or 2 of 11
@pytest.mark.parametrize("pool", ["max", "avg"])
def test_backward_matches_loop_oracle_with_duplicates_and_many_images(xp, pool, extra):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((3, 4, 11, 13))
    rois = np.array([[2, 0, 0, 12, 10], [0, 3, 4, 3, 4], [1, 2, 1, 9, 3], [0, 3, 4, 3, 4],
                     [2, 5, 6, 12, 10], [0, 3, 4, 3, 4]] + [[1, i, i, 9, 9] for i in range(extra)])
    out, cache = roi_spp_forward(xp.asarray(features), xp.asarray(rois), pool=pool)
    dout = rng.standard_normal(out.shape)
    ref, _, ref_df = roi_loop(features, rois, pool=pool, dout=dout)
    np.testing.assert_allclose(asnumpy(out), ref, rtol=1e-12)
    dfeatures = roi_spp_backward(xp.asarray(dout), cache)
    np.testing.assert_allclose(asnumpy(dfeatures), ref_df, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_duplicates_pooled_once_and_gradients_summed(xp, pool):
    features = xp.asarray(tie_free((1, 2, 9, 9), seed=1))
    one = np.array([[0, 1, 2, 7, 8]])
    rois = np.repeat(one, 3, axis=0)
    out, cache = roi_spp_forward(features, xp.asarray(rois), (3, 1), pool=pool)
    assert len(cache.rois) == 1  # pooled once
    single, single_cache = roi_spp_forward(features, xp.asarray(one), (3, 1), pool=pool)
    np.testing.assert_array_equal(asnumpy(out), np.repeat(asnumpy(single), 3, axis=0))
    dout = np.random.default_rng(2).standard_normal(out.shape)
    summed = roi_spp_backward(xp.asarray(dout.sum(0, keepdims=True)), single_cache)
    np.testing.assert_allclose(asnumpy(roi_spp_backward(xp.asarray(dout), cache)),
                               asnumpy(summed), rtol=1e-12)


@fixture_ok
@given(maps_and_rois(max_r=8), seeds)
def test_invariant_to_roi_order(xp, shape_rois, seed):
    shape, rois = shape_rois
    rng = np.random.default_rng(seed)
    features = xp.asarray(rng.standard_normal(shape))
    perm = rng.permutation(len(rois))
    out, cache = roi_spp_forward(features, xp.asarray(rois))
    pout, pcache = roi_spp_forward(features, xp.asarray(rois[perm]))
    np.testing.assert_array_equal(asnumpy(pout), asnumpy(out)[perm])
    dout = rng.standard_normal(out.shape)
    # the same terms summed in another order: equal up to float64 rounding (atol for cells
    # where terms of opposite sign cancel)
    np.testing.assert_allclose(asnumpy(roi_spp_backward(xp.asarray(dout[perm]), pcache)),
                               asnumpy(roi_spp_backward(xp.asarray(dout), cache)), rtol=1e-12,
                               atol=1e-12)


def test_rois_larger_and_smaller_than_the_finest_level(xp):
    features = np.random.default_rng(3).standard_normal((2, 3, 20, 30))
    rois = np.array([[0, 4, 4, 4, 4],      # a point: every bin is that cell
                     [1, 0, 0, 2, 1],      # 2 rows x 3 columns: smaller than level 6
                     [0, 0, 0, 29, 19],    # the whole map, larger than every level
                     [1, 28, 17, 29, 19]])  # touching the bottom-right corner
    out, cache = roi_spp_forward(xp.asarray(features), xp.asarray(rois))
    ref, ref_arg, _ = roi_loop(features, rois)
    np.testing.assert_array_equal(asnumpy(out), ref)
    np.testing.assert_array_equal(asnumpy(cache.argmax), ref_arg)
    point = np.concatenate([features[0, :, 4, 4].repeat(n * n) for n in (6, 3, 2, 1)])
    np.testing.assert_array_equal(asnumpy(out)[0], point)


def test_nan_propagates_like_spp_forward(xp):
    features = np.random.default_rng(4).standard_normal((1, 2, 8, 8))
    features[0, 0, 3, 5] = features[0, 0, 6, 1] = np.nan
    rois = np.array([[0, 0, 0, 7, 7], [0, 4, 2, 7, 4], [0, 0, 4, 3, 7], [0, 0, 0, 2, 2]])
    out, cache = roi_spp_forward(xp.asarray(features), xp.asarray(rois))
    ref, ref_arg, _ = roi_loop(features, rois)
    np.testing.assert_array_equal(asnumpy(out), ref)  # NaN == NaN for assert_array_equal
    np.testing.assert_array_equal(asnumpy(cache.argmax), ref_arg)
    level1 = asnumpy(out)[:, -2:]  # the whole-RoI bin of channels 0 and 1
    assert np.isnan(level1[:, 0]).tolist() == [True, True, True, False]
    assert not np.isnan(level1[:, 1]).any() and not np.isnan(asnumpy(out)[3]).any()
    assert asnumpy(cache.argmax)[0, -2] == 3 * 8 + 5  # the first NaN in row-major order


@pytest.mark.parametrize("exact", [1, 2, 4, 8])
def test_window_max_matches_brute_force_for_every_table_size(exact):
    rng = np.random.default_rng(5)
    features = np.round(rng.standard_normal((2, 3, 13, 17)) * 2)  # many ties
    keys = plane_keys(features)
    b = rng.integers(0, 2, 200)
    ys, xs = rng.integers(0, 13, 200), rng.integers(0, 17, 200)
    ye, xe = rng.integers(ys + 1, 14), rng.integers(xs + 1, 18)
    got = window_max(keys, b, ys, ye, xs, xe, exact=exact)
    for q in range(200):
        want = keys[b[q], ys[q]:ye[q], xs[q]:xe[q]].reshape(-1, 3).max(axis=0)
        np.testing.assert_array_equal(got[q], want)


def test_keys_order_values_then_first_index():
    x = np.array([[[[1.0, 3.0, 3.0], [np.nan, 2.0, np.nan]]]])  # (1, 1, 2, 3)
    keys = plane_keys(x)[0, :, :, 0].ravel()
    order = np.argsort(-keys.astype(np.int64), kind="stable").tolist()
    # NaN first (the earlier NaN before the later), then 3 at index 1 before 3 at index 2, ...
    assert order == [3, 5, 1, 2, 4, 0]


def test_empty_rois_give_empty_output_and_zero_gradient(xp):
    features = xp.ones((2, 3, 5, 5))
    out, cache = roi_spp_forward(features, xp.zeros((0, 5), dtype=np.int64), (2, 1))
    assert out.shape == (0, 15)
    dfeatures = roi_spp_backward(xp.zeros((0, 15)), cache)
    assert dfeatures.shape == (2, 3, 5, 5) and not asnumpy(dfeatures).any()


def test_cuda_kernel_path_rejects_non_adaptive_modes():
    with pytest.raises(ValueError, match=r"impl='emulate' supports mode='adaptive' only.*paper"):
        roi_spp_forward(np.ones((1, 1, 8, 8)), np.array([[0, 0, 0, 7, 7]]), mode="paper",
                        impl="emulate")


@pytest.mark.parametrize(
    "rois, pattern",
    [
        (np.zeros((3, 4), dtype=np.int64), r"rois must have shape \(R, 5\).*got shape \(3, 4\)"),
        (np.zeros(5, dtype=np.int64), r"rois must have shape \(R, 5\)"),
        (np.array([[0, 0, 0, 1, 1], [0, 0.5, 0, 1, 1]]), r"integer dtype.*float64.*row 1"),
        (np.array([[0, 0, 0, 1, 1], [2, 0, 0, 1, 1]]), r"row 1 = \[2, 0, 0, 1, 1\].*batch_index"),
        (np.array([[0, 0, 0, 1, 1], [0, 0, 0, 1, 1], [1, 3, 0, 2, 1]]), r"row 2 .*x1 < x0"),
        (np.array([[0, 0, 3, 1, 2]]), r"row 0 .*y1 < y0"),
        (np.array([[0, 0, 0, 8, 1]]), r"row 0 .*columns \[0, 7\]"),
        (np.array([[0, 0, -1, 1, 1]]), r"row 0 .*rows \[0, 5\]"),
    ],
)
def test_bad_rois_raise_naming_the_row(rois, pattern):
    with pytest.raises(ValueError, match=pattern):
        roi_spp_forward(np.ones((2, 3, 6, 8)), rois)


def test_bad_features_and_dout():
    with pytest.raises(ValueError, match=r"roi_spp_forward: features must be 4-D"):
        roi_spp_forward(np.ones((3, 6, 8)), np.zeros((1, 5), dtype=np.int64))
    with pytest.raises(TypeError, match=r"features must have a floating dtype"):
        roi_spp_forward(np.ones((1, 3, 6, 8), dtype=np.int32), np.zeros((1, 5), dtype=np.int64))
    _, cache = roi_spp_forward(np.ones((1, 3, 6, 8)), np.zeros((2, 5), dtype=np.int64), (1,))
    with pytest.raises(ValueError, match=r"roi_spp_backward: dout must have shape \(2, 3\)"):
        roi_spp_backward(np.ones((1, 3)), cache)


def test_pyramid_bench_section_runs_on_tiny_workloads(monkeypatch):
    from types import SimpleNamespace

    from tinyspp.bench import SECTIONS, pyramid

    assert "pyramid" in SECTIONS
    monkeypatch.setattr(pyramid, "SPP_SHAPES", [(2, 3, 5, 4)])
    monkeypatch.setattr(pyramid, "ROI_FEATURES", (1, 3, 6, 7))
    monkeypatch.setattr(pyramid, "ROI_COUNT", 6)
    rows = pyramid.run(SimpleNamespace(repeats=1, quick=True, torch=None, gpu=False))
    impls = [impl for impl, _ in pyramid.region_impls()]
    assert impls == (["cpu", "xp"] if cpu_kernel.available() else ["xp"])
    assert len(rows) == 1 + 2 * (len(impls) + 1) and all(r.ours_ms > 0 for r in rows)
    fast = [r for r in rows if r.workload.startswith("region")]
    assert len(fast) == 2 * len(impls) and all("x faster" in r.note for r in fast)
    assert sum("distinct" in r.workload for r in fast) == len(impls)


def test_bench_rois_are_valid():
    from tinyspp.bench.pyramid import proposal_rois, random_rois
    from tinyspp.ops.roi import check_rois

    rng = np.random.default_rng(0)
    for rois in (random_rois(rng, 300, 2, 38, 50), proposal_rois(rng, 300, 38, 50)):
        assert check_rois(rois, (2, 1, 38, 50), "test").shape == (300, 5)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_kernel_path_agrees_with_xp_path_with_duplicates(pool):
    from tinyspp.kernels import emulate

    if emulate.find_compiler() is None:
        pytest.skip("needs a C++ compiler for the CPU emulation of the CUDA kernels")
    features = np.random.default_rng(6).standard_normal((2, 3, 9, 11))
    rois = np.array([[1, 0, 0, 10, 8], [0, 2, 3, 5, 5], [1, 0, 0, 10, 8], [0, 7, 1, 7, 1]])
    out_k, cache_k = roi_spp_forward(features, rois, pool=pool, impl="emulate")
    out_x, cache_x = roi_spp_forward(features, rois, pool=pool, impl="xp")
    assert cache_k.impl == "emulate" and cache_x.impl == "xp"
    np.testing.assert_allclose(out_k, out_x, rtol=1e-12)
    if pool == "max":
        np.testing.assert_array_equal(cache_k.argmax, cache_x.argmax)
    dout = np.random.default_rng(7).standard_normal(out_x.shape)
    np.testing.assert_allclose(roi_spp_backward(dout, cache_k), roi_spp_backward(dout, cache_x),
                               rtol=1e-12, atol=1e-12)



def test_maps_over_65536_cells_use_64_bit_keys_or_int32_argmax(numpy_path):
    features = np.random.default_rng(10).standard_normal((1, 1, 257, 256))
    assert plane_keys(features).dtype == np.uint64
    assert cpu_kernel.argmax_dtype(257 * 256) == np.int32
    assert cpu_kernel.argmax_dtype(256 * 256) == np.uint16
    rois = np.array([[0, 0, 0, 255, 256], [0, 200, 250, 255, 256], [0, 3, 5, 3, 5]])
    out, cache = roi_spp_forward(features, rois, (3, 1))
    assert cache.impl == numpy_path
    ref, ref_arg, _ = roi_loop(features, rois, (3, 1))
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(cache.argmax, ref_arg)


# --- the compiled CPU kernel (tinyspp/kernels/region_max.cpp) --------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("levels", [(6, 3, 2, 1), (5, 4, 2, 2), (1, 7)])
def test_many_channels_and_rois_match_the_loop_oracle(numpy_path, levels, dtype):
    """Channel counts that fill whole SIMD registers and leave a remainder (37), ties, NaNs,
    infinities, several images, duplicates, non-nesting and repeated levels, against the
    contract."""
    rng = np.random.default_rng(11)
    features = np.round(rng.standard_normal((2, 37, 15, 19)) * 3)  # many ties
    features[1, 5, 7, 3] = features[0, 36, 0, 0] = np.nan
    features[0, 3, 2, 2], features[1, 7] = np.inf, -np.inf  # a whole -inf plane: first cell wins
    features = features.astype(dtype)
    rois = random_rois(rng, 150, 2, 15, 19)
    rois = np.concatenate([rois, rois[:20]])  # duplicates, pooled once
    out, cache = roi_spp_forward(features, rois, levels)
    assert cache.impl == numpy_path
    dout = rng.standard_normal(out.shape)
    ref, ref_arg, ref_dx = roi_loop(features.astype(np.float64), rois, levels, dout=dout)
    np.testing.assert_array_equal(out, ref.astype(dtype))
    np.testing.assert_array_equal(cache.argmax, ref_arg)
    dx = roi_spp_backward(dout, cache)  # float64 dout: accumulated in float64
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, ref_dx.astype(dtype), rtol=1e-6 if dtype == np.float32
                               else 1e-12, atol=1e-12)


def test_auto_takes_the_cpu_kernel_for_numpy_max_pooling_only(numpy_path):
    features = tie_free((1, 2, 6, 7), seed=12)
    rois = np.array([[0, 1, 1, 5, 4]])
    assert roi_spp_forward(features, rois)[1].impl == numpy_path
    assert roi_spp_forward(features, rois, pool="avg")[1].impl == "xp"
    assert roi_spp_forward(features, rois, impl="xp")[1].impl == "xp"


def test_cpu_impl_rejects_average_pooling_and_other_dtypes():
    rois = np.array([[0, 0, 0, 1, 1]])
    with pytest.raises(ValueError, match="impl='cpu' supports pool='max' only"):
        roi_spp_forward(np.ones((1, 1, 4, 4)), rois, pool="avg", impl="cpu")
    with pytest.raises(ValueError, match="impl='cpu' needs float32 or float64 features, got "
                                         "float16"):
        roi_spp_forward(np.ones((1, 1, 4, 4), dtype=np.float16), rois, impl="cpu")


def test_float16_features_take_the_numpy_path(numpy_path):
    features = tie_free((1, 3, 7, 6), seed=14).astype(np.float16)
    rois = np.array([[0, 1, 0, 5, 6], [0, 2, 2, 2, 2]])
    out, cache = roi_spp_forward(features, rois)
    assert cache.impl == "xp" and out.dtype == np.float16
    np.testing.assert_array_equal(out, roi_loop(features, rois)[0])


def test_without_a_compiler_auto_warns_once_and_uses_numpy(monkeypatch, numpy_path):
    from tinyspp.ops.roi import api as roi

    monkeypatch.setenv("TINYSPP_CPU_KERNEL", "1")
    monkeypatch.setattr(cpu_kernel, "available", lambda: False)
    roi._warn_no_cpu_kernel.cache_clear()
    features, rois = tie_free((1, 2, 6, 7), seed=13), np.array([[0, 0, 2, 6, 5]])
    with pytest.warns(UserWarning, match=r"no C\+\+ compiler.*NumPy path"):
        out, cache = roi_spp_forward(features, rois)
    assert cache.impl == "xp"
    np.testing.assert_array_equal(out, roi_loop(features, rois)[0])
    roi._warn_no_cpu_kernel.cache_clear()


def test_cpu_kernel_checks_every_array_before_calling_cpp():
    if not cpu_kernel.available():
        pytest.skip("needs a C++ compiler for the compiled CPU kernel")
    xt = np.zeros((1, 4, 4, 2), dtype=np.float32)
    plan = np.array([[1, 0, 0, 0, -1]], dtype=np.int64)
    edges = np.array([[0, 4, 0, 4]], dtype=np.int64)
    good = dict(xt=xt, batch=np.zeros(1, np.int64), edges=edges, rowmap=np.zeros(1, np.int64),
                plan=plan, out=np.empty((1, 2), np.float32), argmax=np.empty((1, 2), np.uint16))
    cpu_kernel.roi_max_forward(**good)
    assert good["out"].tolist() == [[0.0, 0.0]] and good["argmax"].tolist() == [[0, 0]]
    for name, bad in [("edges", edges.astype(np.int32)), ("out", np.empty((1, 2))),
                      ("argmax", np.empty((1, 2), np.int32)), ("rowmap", np.zeros(1))]:
        with pytest.raises(TypeError, match=f"tinyspp.kernels.cpu: {name} must be"):
            cpu_kernel.roi_max_forward(**{**good, name: bad})


@given(maps_and_rois(max_r=30))
def test_unique_rows_is_np_unique_over_rows(shape_rois):
    from tinyspp.ops.roi import unique_rows

    (N, C, H, W), rois = shape_rois
    rois = np.concatenate([rois, rois[::2]])  # some duplicates
    uniq, inverse = unique_rows(rois, (N, H, W))
    ref, ref_inverse = np.unique(rois, axis=0, return_inverse=True)
    np.testing.assert_array_equal(uniq, ref)
    np.testing.assert_array_equal(inverse, ref_inverse.reshape(-1))
    huge = unique_rows(rois, (2**20, 2**20, 2**20))  # keys would overflow: np.unique(axis=0)
    np.testing.assert_array_equal(huge[0], ref)
    np.testing.assert_array_equal(huge[1], inverse)



# --- implementation names, the choice, the bin rule's divisors ------------------------------

def test_old_impl_name_kernel_warns_and_means_emulate_on_numpy():
    features, rois = tie_free((1, 2, 5, 6), seed=15), np.array([[0, 1, 0, 4, 3]])
    with pytest.warns(DeprecationWarning, match="impl='kernel' is deprecated.*'emulate'"):
        out, cache = roi_spp_forward(features, rois, (2, 1), impl="kernel")
    assert cache.impl == "emulate"
    np.testing.assert_array_equal(out, roi_loop(features, rois, (2, 1))[0])
    with pytest.raises(ValueError, match="impl='cuda' runs on CuPy arrays.*'emulate'"):
        roi_spp_forward(features, rois, impl="cuda")


class _FakeCuPy:
    """Stands in for the cupy module in the choice (any module that is not numpy)."""


@pytest.mark.parametrize("dtype, mode, pool, want", [
    (np.float32, "adaptive", "max", "cuda"),
    (np.float64, "adaptive", "avg", "cuda"),
    (np.float16, "adaptive", "max", "xp"),   # the kernel takes float32/64 only: fall back
    (np.float32, "caffe", "max", "xp"),      # the kernel bins adaptively only
])
def test_auto_on_cupy_falls_back_where_the_cuda_kernel_does_not_apply(dtype, mode, pool, want):
    from tinyspp.ops.roi import choose_impl

    assert choose_impl("auto", _FakeCuPy(), mode, pool, 100, np.dtype(dtype), "f") == want


def test_explicit_kernel_impls_name_what_they_cannot_do():
    rois = np.array([[0, 0, 0, 1, 1]])
    with pytest.raises(ValueError, match="impl='emulate' needs float32 or float64.*float16"):
        roi_spp_forward(np.ones((1, 1, 4, 4), np.float16), rois, impl="emulate")
    with pytest.raises(ValueError, match="impl must be one of"):
        roi_spp_forward(np.ones((1, 1, 4, 4)), rois, impl="gpu")


def avg_oracle(features, rois, levels, mode):
    """Bin sums over the clipped bin divided by tinyspp.bins' divisor, one bin at a time."""
    from tinyspp.bins import bin_divisors, bin_edges

    rows = []
    for b, x0, y0, x1, y1 in rois.tolist():
        h, w = y1 - y0 + 1, x1 - x0 + 1
        row = []
        for n in levels:
            ey, ex = bin_edges(h, n, mode), bin_edges(w, n, mode)
            dy, dx = bin_divisors(h, n, mode), bin_divisors(w, n, mode)
            for c in range(features.shape[1]):
                for (ys, ye), hy in zip(ey, dy):
                    for (xs, xe), wx in zip(ex, dx):
                        cells = features[b, c, y0 + ys:y0 + ye, x0 + xs:x0 + xe]
                        row.append(cells.sum() / (hy * wx))
        rows.append(row)
    return np.array(rows)


def test_caffe_avg_divides_by_the_padded_window_worked_by_hand(numpy_path):
    """A 4 x 5 RoI at level 2, caffe: kernel 2 x 3, pad 0 x 1, so the columns are [-1, 2) and
    [2, 5): the left bins hold 2 x 2 cells but Caffe divides by 2 x 3 = 6."""
    features = np.arange(20.0).reshape(1, 1, 4, 5)
    out, _ = roi_spp_forward(features, np.array([[0, 0, 0, 4, 3]]), (2,), mode="caffe",
                             pool="avg")
    x = features[0, 0]
    want = [x[0:2, 0:2].sum() / 6, x[0:2, 2:5].sum() / 6, x[2:4, 0:2].sum() / 6,
            x[2:4, 2:5].sum() / 6]
    np.testing.assert_allclose(out[0], want, rtol=1e-12)
    adaptive, _ = roi_spp_forward(features, np.array([[0, 0, 0, 4, 3]]), (2,), pool="avg")
    assert adaptive[0, 0] == pytest.approx(x[0:2, 0:3].mean())  # the bin's own area


@given(maps_and_rois(max_hw=12, max_r=6), st.sampled_from(["paper", "caffe"]), seeds)
def test_avg_in_other_modes_equals_the_divisor_oracle(shape_rois, mode, seed):
    shape, rois = shape_rois
    features = np.random.default_rng(seed).standard_normal(shape)
    levels = (3, 2, 1)
    try:
        want = avg_oracle(features, rois, levels, mode)
    except ValueError:
        return  # a RoI this mode cannot bin: the max test checks the error
    out, cache = roi_spp_forward(features, rois, levels, mode=mode, pool="avg")
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    dout = np.random.default_rng(seed + 1).standard_normal(out.shape)
    num = numerical_grad_of_output(
        lambda f: roi_spp_forward(f, rois, levels, mode=mode, pool="avg")[0], features, dout,
        eps=1e-3)
    dfeatures = roi_spp_backward(dout, cache)
    num = np.where(dfeatures == 0, 0.0, num)  # cells in no bin (integral-image rounding)
    assert rel_error(dfeatures, num) < 1e-6


def test_one_argmax_format_from_every_implementation(numpy_path):
    """cpu, xp and emulate write the same (U, D) plane-flat argmax for the distinct RoIs."""
    features = np.round(np.random.default_rng(16).standard_normal((2, 5, 9, 11)) * 2)
    rois = np.array([[1, 0, 0, 10, 8], [0, 2, 3, 5, 5], [1, 0, 0, 10, 8], [0, 7, 1, 7, 1]])
    caches = {impl: roi_spp_forward(features, rois, (3, 2, 1), impl=impl)[1]
              for impl in (["cpu"] if cpu_kernel.available() else []) + ["xp", "emulate"]}
    ref = caches["xp"]
    assert ref.distinct_argmax.shape == (3, 5 * 14) and ref.inverse.tolist() == [2, 0, 2, 1]
    for impl, cache in caches.items():
        assert cache.impl == impl
        np.testing.assert_array_equal(cache.rois, ref.rois)
        np.testing.assert_array_equal(cache.distinct_argmax, ref.distinct_argmax)
        np.testing.assert_array_equal(cache.argmax, roi_loop(features, rois, (3, 2, 1))[1])


# --- blind spots of the strategies: values they never draw ----------------------------------

@pytest.mark.parametrize("pool", ["max", "avg"])
def test_many_chunks_and_a_single_nonzero_image(numpy_path, pool, monkeypatch):
    """The NumPy path builds flat indices a chunk of rows at a time (ops/argmax.py, 2**20
    elements): the small maps hypothesis draws always fit in one chunk, and RoIs of one image
    other than 0 take their own branch. Here chunks of 3 rows (the last one partial), and every
    RoI on image 2 of 3, with duplicates."""
    from tinyspp.ops import argmax

    levels = (3, 1)
    features = np.random.default_rng(17).standard_normal((3, 4, 8, 9))
    D = 4 * 10
    monkeypatch.setattr(argmax, "CHUNK", 3 * D)
    rois = random_rois(np.random.default_rng(18), 11, 1, 8, 9)
    rois[:, 0] = 2
    rois = np.concatenate([rois, rois[:3]])
    out, cache = roi_spp_forward(features, rois, levels, pool=pool)
    dout = np.random.default_rng(19).standard_normal(out.shape)
    ref, ref_arg, ref_dx = roi_loop(features, rois, levels, pool=pool, dout=dout)
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    if pool == "max":
        np.testing.assert_array_equal(out, ref)
        np.testing.assert_array_equal(cache.argmax, ref_arg)
    np.testing.assert_allclose(roi_spp_backward(dout, cache), ref_dx, rtol=1e-12, atol=1e-12)


def test_check_impl_names_the_array_type_each_implementation_needs():
    from tinyspp.validate import IMPLS, check_impl

    assert set(IMPLS) == {"auto", "xp", "cpu", "cuda", "emulate"}
    gpu_like = object()  # any array module that is not numpy
    for impl in ("cpu", "emulate"):
        with pytest.raises(ValueError, match=f"impl='{impl}' runs on NumPy arrays.*'cuda'"):
            check_impl(impl, "f", tuple(IMPLS), gpu_like)
    with pytest.warns(DeprecationWarning, match="means impl='cuda'"):
        assert check_impl("kernel", "f", tuple(IMPLS), gpu_like) == "cuda"


def test_a_kernel_that_fails_to_load_falls_back_with_one_warning_naming_why(monkeypatch):
    """Any failure to build or load the CPU kernel (here an AttributeError, as a library without
    its symbols used to raise on every call) makes "auto" use the NumPy path, warning once."""
    import warnings

    from tinyspp.ops.roi import api

    def broken():
        raise AttributeError("undefined symbol: roi_max_forward_f32_u16")

    monkeypatch.setenv("TINYSPP_CPU_KERNEL", "1")
    monkeypatch.setattr(cpu_kernel, "library", broken)
    cpu_kernel.available.cache_clear()
    api._warn_no_cpu_kernel.cache_clear()
    features, rois = tie_free((1, 2, 6, 7), seed=20), np.array([[0, 0, 2, 6, 5]])
    try:
        with pytest.warns(UserWarning, match=r"no loadable compiled CPU kernel \(AttributeError: "
                                             r"undefined symbol"):
            out, cache = roi_spp_forward(features, rois)
        assert cache.impl == "xp"
        np.testing.assert_array_equal(out, roi_loop(features, rois)[0])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            roi_spp_forward(features, rois)  # once only
    finally:
        cpu_kernel.available.cache_clear()
        cpu_kernel._UNAVAILABLE.clear()
        api._warn_no_cpu_kernel.cache_clear()
