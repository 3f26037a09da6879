"""The CUDA kernel source (pyramid_pool.cu), run through its CPU emulation and, where a GPU is
present, through CuPy: equal to the NumPy path bit for bit in the forward pass (values and argmax)
and to 1e-12 (float64) in the backward pass."""

import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import level_sets, nchw_shapes, roi_rows, seeds

from tinyspp import kernels
from tinyspp.backend import asnumpy, gpu_available
from tinyspp.bins import MODES, bin_table
from tinyspp.kernels import common, emulate

GPU_REASON = "needs CuPy and a CUDA device (none here); run `make test-gpu` on a GPU machine"
NVCC = shutil.which("nvcc")
TOL = {np.float64: 1e-12, np.float32: 1e-5}

# The CPU emulation compiles pyramid_pool.cu with the host C++ compiler.
pytestmark = pytest.mark.skipif(
    emulate.find_compiler() is None,
    reason="needs a C++ compiler ($CXX, g++, c++ or clang++) for the CPU emulation of the kernels",
)


# --- a plain NumPy loop reference: one bin at a time ---------------------------------------------

def ref_spp_forward(x, table, pool):
    """(N, C*M) values and flat argmax, straight from the layout definition."""
    N, C, H, W = x.shape
    out = np.zeros((N, 0), x.dtype)
    arg = np.zeros((N, 0), np.int64)
    m = 0
    for n in table.levels:
        vals = np.zeros((N, C, n * n), x.dtype)
        args = np.zeros((N, C, n * n), np.int64)
        for k in range(n * n):
            y0, y1, x0, x1 = (int(e[m + k]) for e in (table.y0, table.y1, table.x0, table.x1))
            cells = x[:, :, y0:y1, x0:x1].reshape(N, C, -1)
            if pool == "max":
                a = np.argmax(cells, axis=-1)  # first maximum; the first NaN when there is one
                vals[:, :, k] = np.take_along_axis(cells, a[..., None], -1)[..., 0]
                args[:, :, k] = (y0 + a // (x1 - x0)) * W + x0 + a % (x1 - x0)
            else:  # the sum over the bin's cells / its divisor (caffe: Caffe's padded window)
                vals[:, :, k] = cells.sum(axis=-1) / table.area[m + k]
        out = np.concatenate([out, vals.reshape(N, -1)], axis=1)
        arg = np.concatenate([arg, args.reshape(N, -1)], axis=1)
        m += n * n
    return out, (arg if pool == "max" else None)


def ref_spp_backward(dout, argmax, x_shape, table, pool):
    N, C, H, W = x_shape
    dx = np.zeros(x_shape, dout.dtype)
    col = 0
    m = 0
    for n in table.levels:
        for c in range(C):
            for k in range(n * n):
                y0, y1, x0, x1 = (int(e[m + k]) for e in (table.y0, table.y1, table.x0, table.x1))
                for i in range(N):
                    if pool == "max":
                        a = argmax[i, col]
                        dx[i, c, a // W, a % W] += dout[i, col]
                    else:
                        dx[i, c, y0:y1, x0:x1] += dout[i, col] / table.area[m + k]
                col += 1
        m += n * n
    return dx


def ref_roi_forward(features, rois, levels, pool):
    """Region SPP of a RoI is, by definition, image SPP of its crop (adaptive bins)."""
    N, C, H, W = features.shape
    outs, args = [], []
    for b, x0, y0, x1, y1 in rois.tolist():
        crop = features[b:b + 1, :, y0:y1 + 1, x0:x1 + 1]
        w = x1 - x0 + 1
        out, arg = ref_spp_forward(crop, bin_table(y1 - y0 + 1, w, levels), pool)
        outs.append(out[0])
        if pool == "max":
            args.append((y0 + arg[0] // w) * W + x0 + arg[0] % w)
    D = C * sum(n * n for n in levels)
    out = np.array(outs, features.dtype).reshape(len(rois), D)
    return out, (np.array(args, np.int64).reshape(len(rois), D) if pool == "max" else None)


def ref_roi_backward(dout, argmax, rois, shape, levels, pool):
    N, C, H, W = shape
    df = np.zeros(shape, dout.dtype)
    for r, (b, x0, y0, x1, y1) in enumerate(rois.tolist()):
        h, w = y1 - y0 + 1, x1 - x0 + 1
        table = bin_table(h, w, levels)
        if pool == "max":
            a = argmax[r:r + 1]
            local = ((a // W) - y0) * w + (a % W) - x0  # back to crop coordinates
            df[b:b + 1, :, y0:y1 + 1, x0:x1 + 1] += ref_spp_backward(
                dout[r:r + 1], local, (1, C, h, w), table, pool)
        else:
            df[b:b + 1, :, y0:y1 + 1, x0:x1 + 1] += ref_spp_backward(
                dout[r:r + 1], None, (1, C, h, w), table, pool)
    return df


# --- strategies ---------------------------------------------------------------------------------

def tied_values(shape, seed, dtype, nan_fraction=0.0):
    """Small integers (many ties, -inf included) and optionally some NaNs."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, size=shape).astype(dtype)
    x[rng.random(shape) < 0.05] = -np.inf
    if nan_fraction:
        x[rng.random(shape) < nan_fraction] = np.nan
    return x


@st.composite
def image_cases(draw):
    shape = draw(nchw_shapes(max_n=2, max_c=3, max_hw=11))
    levels = draw(level_sets(max_level=7, max_len=4))
    mode = draw(st.sampled_from(MODES))
    try:
        table = bin_table(shape[2], shape[3], levels, mode)
    except ValueError:  # paper/caffe cannot bin this size: the adaptive rule always can
        table = bin_table(shape[2], shape[3], levels, "adaptive")
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    nan = draw(st.sampled_from([0.0, 0.0, 0.1]))
    return tied_values(shape, draw(seeds), dtype, nan), table


@st.composite
def roi_cases(draw):
    N, C, H, W = draw(nchw_shapes(max_n=3, max_c=2, max_hw=10))
    levels = draw(level_sets(max_level=6, max_len=3))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    nan = draw(st.sampled_from([0.0, 0.0, 0.1]))
    features = tied_values((N, C, H, W), draw(seeds), dtype, nan)
    return features, draw(roi_rows(N, H, W)), levels


def assert_same(a, b):
    """Bitwise-equal values, NaN where NaN."""
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


def assert_close(a, b, dtype):
    np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype])


# --- the emulated kernels equal the reference ---------------------------------------------------

@given(image_cases(), st.sampled_from(["max", "avg"]))
def test_spp_forward_equals_reference(case, pool):
    x, table = case
    out, arg = kernels.spp_forward(x, table, pool)
    ref, ref_arg = ref_spp_forward(x, table, pool)
    if pool == "max":  # max is a selection: bit-exact, argmax included
        assert_same(out, ref)
        assert_same(arg, ref_arg)
    else:  # a sum: the order of additions may differ in the last bit
        assert arg is None
        assert_close(out, ref, x.dtype.type)


@given(image_cases(), st.sampled_from(["max", "avg"]), seeds)
def test_spp_backward_equals_reference(case, pool, seed):
    x, table = case
    out, arg = kernels.spp_forward(x, table, pool)
    dout = np.random.default_rng(seed).standard_normal(out.shape).astype(x.dtype)
    dx = kernels.spp_backward(dout, arg, x.shape, table, pool)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    assert_close(dx, ref_spp_backward(dout, arg, x.shape, table, pool), x.dtype.type)


@given(roi_cases(), st.sampled_from(["max", "avg"]), seeds)
def test_roi_spp_equals_reference(case, pool, seed):
    features, rois, levels = case
    out, arg = kernels.roi_spp_forward(features, rois, levels, pool)
    ref, ref_arg = ref_roi_forward(features, rois, levels, pool)
    if pool == "max":
        assert_same(out, ref)
        assert_same(arg, ref_arg)
    else:
        assert_close(out, ref, features.dtype.type)
    dout = np.random.default_rng(seed).standard_normal(out.shape).astype(features.dtype)
    df = kernels.roi_spp_backward(dout, arg, rois, features.shape, levels, pool)
    ref_df = ref_roi_backward(dout, arg, rois, features.shape, levels, pool)
    assert_close(df, ref_df, features.dtype.type)


def test_roi_special_boxes():
    """1x1 RoIs, RoIs on every border, RoIs smaller than the finest level, many per image."""
    rng = np.random.default_rng(3)
    features = rng.standard_normal((2, 3, 7, 9))
    rois = np.array([[0, 0, 0, 0, 0], [1, 8, 6, 8, 6], [0, 0, 0, 8, 6], [1, 0, 6, 8, 6],
                     [1, 8, 0, 8, 6], [0, 2, 3, 4, 4], [0, 2, 3, 4, 4], [1, 1, 1, 3, 2]])
    levels = (6, 3, 2, 1)
    out, arg = kernels.roi_spp_forward(features, rois, levels)
    ref, ref_arg = ref_roi_forward(features, rois, levels, "max")
    assert_same(out, ref)
    assert_same(arg, ref_arg)
    # a 1x1 RoI: every bin of every level is that one cell
    chan = np.concatenate([np.repeat(np.arange(3), n * n) for n in levels])
    assert_same(out[0], features[0, chan, 0, 0])
    assert np.all(arg[0] == 0)
    assert np.all(arg[1] == 6 * 9 + 8)


def test_grid_stride_loop_covers_every_output():
    """Few blocks of few threads: each thread loops over many outputs; results are identical."""
    x = tied_values((2, 3, 9, 7), 1, np.float64, 0.05)
    table = bin_table(9, 7, (4, 2, 1), "adaptive")
    out, arg = kernels.spp_forward(x, table)
    small = dict(threads=5, max_blocks=3)
    out2, arg2 = kernels.spp_forward(x, table, **small)
    assert_same(out, out2)
    assert_same(arg, arg2)
    dout = np.random.default_rng(0).standard_normal(out.shape)
    assert_same(kernels.spp_backward(dout, arg, x.shape, table),
                kernels.spp_backward(dout, arg, x.shape, table, **small))
    rois = np.array([[0, 1, 2, 5, 8], [1, 0, 0, 6, 8]])
    assert_same(kernels.roi_spp_forward(x, rois, (3, 1))[0],
                kernels.roi_spp_forward(x, rois, (3, 1), **small)[0])


def test_ties_go_to_the_first_cell_in_row_major_order():
    x = np.zeros((1, 2, 5, 6))
    table = bin_table(5, 6, (3, 2, 1), "adaptive")
    _, arg = kernels.spp_forward(x, table)
    first = np.tile(table.y0 * 6 + table.x0, 1)  # per bin, channel-major: same for both channels
    expect = np.concatenate([np.tile(first[s:s + n * n], 2)
                             for s, n in zip((0, 9, 13), (3, 2, 1))])
    assert_same(arg[0], expect)
    rois = np.array([[0, 1, 1, 4, 3]])
    _, arg = kernels.roi_spp_forward(x, rois, (1,))
    assert arg.tolist() == [[1 * 6 + 1, 1 * 6 + 1]]


def test_nan_propagates_and_the_first_nan_wins():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 1, 2] = np.nan
    x[0, 0, 3, 0] = np.nan
    out, arg = kernels.spp_forward(x, bin_table(4, 4, (1,)))
    assert np.isnan(out[0, 0]) and arg[0, 0] == 1 * 4 + 2
    x[0, 0, 0, 0] = np.nan  # a NaN in the very first cell stays the maximum
    _, arg = kernels.spp_forward(x, bin_table(4, 4, (1,)))
    assert arg[0, 0] == 0
    out, _ = kernels.spp_forward(x, bin_table(4, 4, (1,)), "avg")
    assert np.isnan(out[0, 0])
    x = np.full((1, 1, 2, 3), -np.inf)
    out, arg = kernels.spp_forward(x, bin_table(2, 3, (1,)))
    assert out[0, 0] == -np.inf and arg[0, 0] == 0


def test_empty_roi_set():
    features = np.ones((1, 2, 3, 3), np.float32)
    out, arg = kernels.roi_spp_forward(features, np.zeros((0, 5), np.int64), (2, 1))
    assert out.shape == arg.shape == (0, 10)
    df = kernels.roi_spp_backward(out, arg, np.zeros((0, 5), np.int64), features.shape, (2, 1))
    assert df.shape == features.shape and not df.any()


# --- bad input -----------------------------------------------------------------------------------

def test_bad_input_raises_clear_errors():
    x = np.zeros((1, 2, 4, 4))
    table = bin_table(4, 4, (2, 1))
    with pytest.raises(TypeError, match="kernels.spp_forward: x must be float32 or float64"):
        kernels.spp_forward(x.astype(np.float16), table)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        kernels.spp_forward(x.transpose(0, 1, 3, 2), table)
    with pytest.raises(ValueError, match="pool must be one of"):
        kernels.spp_forward(x, table, "sum")
    with pytest.raises(ValueError, match="inside the \\(3, 4\\) map"):
        kernels.spp_forward(x[:, :, :3].copy(), table)
    with pytest.raises(TypeError, match="table must be a tinyspp.bins.BinTable"):
        kernels.spp_forward(x, (2, 1))
    with pytest.raises(ValueError, match="table.y0 must be 5 integers"):
        kernels.spp_forward(x, table._replace(y0=table.y0[:3]))
    with pytest.raises(ValueError, match="not a grid of bins"):
        kernels.spp_forward(x, table._replace(x1=np.array([2, 4, 4, 4, 4])))
    with pytest.raises(ValueError, match="argmax must be a C-contiguous int64"):
        kernels.spp_backward(np.zeros((1, 10)), np.zeros((1, 10), np.int32), x.shape, table)
    with pytest.raises(ValueError, match="dout must have shape \\(1, 10\\)"):
        kernels.spp_backward(np.zeros((1, 9)), None, x.shape, table, "avg")
    # one RoI validator for the ops and the kernels (tinyspp.validate.check_rois)
    with pytest.raises(ValueError, match="kernels.roi_spp_forward: rois row 0 .* x1 < x0"):
        kernels.roi_spp_forward(x, np.array([[0, 2, 0, 1, 3]]), (1,))
    with pytest.raises(ValueError, match="rois row 0 .* batch_index outside"):
        kernels.roi_spp_forward(x, np.array([[1, 0, 0, 1, 1]]), (1,))
    with pytest.raises(ValueError, match="rois must have shape \\(R, 5\\)"):
        kernels.roi_spp_forward(x, np.zeros((2, 4), np.int64), (1,))
    with pytest.raises(ValueError, match="argmax values must lie in \\[0, 16\\)"):
        kernels.roi_spp_backward(np.zeros((1, 2)), np.array([[0, 16]]),
                                 np.array([[0, 0, 0, 3, 3]]), x.shape, (1,))
    # the kernel itself never writes outside dfeatures for a bad argmax (the GPU's only guard)
    df = np.zeros((1, 2, 4, 4))
    emulate.launch("roi_spp_backward_f64", 2,
                   [np.ones((1, 2)), np.array([[-1, 16]]), np.array([[0, 0, 0, 3, 3]]), 1, 2, 4,
                    4, 1, np.array([1]), np.array([0]), 1, 1, df])
    assert not df.any()
    with pytest.raises(TypeError, match="emulate.launch: spp_forward_f64 argument x must be"):
        emulate.launch("spp_forward_f64", 1, [np.zeros(3, np.float32)]
                       + [0] * (len(common.entry_points()["spp_forward_f64"]) - 1))


# --- the emulation harness ----------------------------------------------------------------------

def test_every_entry_point_is_parsed_and_wrapped():
    source = common.kernel_source()
    entries = common.entry_points(source)
    assert len(entries) == source.count('extern "C" __global__') == 8
    assert {e.rsplit("_", 1)[0] for e in entries} == {
        "spp_forward", "spp_backward", "roi_spp_forward", "roi_spp_backward"}
    lib = emulate.library()
    for name in entries:
        assert hasattr(lib, f"emulate_{name}")


def test_library_is_cached_in_the_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYSPP_CACHE_DIR", str(tmp_path / "cache"))
    assert emulate.cache_dir() == tmp_path / "cache"
    emulate.compile_library()
    built = list((tmp_path / "cache").glob("pyramid_pool_emulate_*.so"))
    assert len(built) == 1
    # a second load finds the file and needs no compiler
    monkeypatch.setattr(emulate, "find_compiler", lambda: None)
    emulate.compile_library()


def test_emulation_source_compiles_without_warnings(tmp_path):
    compiler = emulate.find_compiler()
    src = tmp_path / "emulate.cpp"
    src.write_text(emulate.emulation_source())
    proc = subprocess.run([compiler, "-std=c++14", "-Wall", "-Wextra", "-fsyntax-only", str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr


def test_cpu_kernel_is_available_wherever_a_compiler_is():
    """Guards the suite: a CPU kernel that fails to build would otherwise just skip its tests
    (tests/test_roi.py runs the compiled path only when it is available)."""
    from tinyspp.kernels import cpu

    cpu.library()  # raises with the compiler's message if the source does not build
    assert cpu.available()


def test_cpu_kernel_source_compiles_without_warnings(tmp_path):
    from tinyspp.kernels import cpu

    compiler = emulate.find_compiler()
    src = tmp_path / "region_max.cpp"
    src.write_text(common.kernel_source(cpu.SOURCE_NAME))
    proc = subprocess.run([compiler, *cpu.flags(), "-Wall", "-Wextra", "-fsyntax-only", str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr


def test_missing_compiler_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(emulate, "find_compiler", lambda: None)
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler found .*install g\\+\\+"):
        emulate.compile_library(tmp_path)


def test_compile_errors_are_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(emulate, "emulation_source", lambda: "this is not C++;")
    with pytest.raises(RuntimeError, match="failed to compile"):
        emulate.compile_library(tmp_path)
    assert not list(tmp_path.glob("*.so"))


# --- nvcc: the source is valid CUDA for the targets we claim ------------------------------------

@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH (install the CUDA toolkit)")
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_cu_compiles_to_ptx_without_warnings(arch, tmp_path):
    src = tmp_path / common.SOURCE_NAME
    src.write_text(common.kernel_source())
    proc = subprocess.run([NVCC, "-ptx", f"-arch={arch}", "-o", str(tmp_path / "k.ptx"),
                           str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower(), proc.stderr
    ptx = (tmp_path / "k.ptx").read_text()
    assert all(f".entry {name}" in ptx for name in common.entry_points())


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH (install the CUDA toolkit)")
def test_cu_assembles_for_sm_80_without_spills(tmp_path):
    src = tmp_path / common.SOURCE_NAME
    src.write_text(common.kernel_source())
    proc = subprocess.run([NVCC, "-cubin", "-arch=sm_80", "-Xptxas", "-v", "-o",
                           str(tmp_path / "k.cubin"), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower(), proc.stderr
    spills = [ln for ln in proc.stderr.splitlines() if "spill" in ln]
    assert len(spills) == 8 and all("0 bytes spill stores, 0 bytes spill loads" in ln
                                    for ln in spills), proc.stderr


# --- on a GPU: the kernels through CuPy equal the emulation and the NumPy reference -------------

@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason=GPU_REASON)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("mode", MODES)
def test_gpu_kernels_equal_emulation(dtype, pool, mode):
    import cupy as cp

    x = tied_values((3, 4, 17, 23), 5, dtype, 0.02)
    table = bin_table(17, 23, (6, 3, 2, 1), mode)  # a size every mode can bin
    out, arg = kernels.spp_forward(x, table, pool)
    gout, garg = kernels.spp_forward(cp.asarray(x), table, pool)
    assert_same(out, asnumpy(gout))
    if pool == "max":
        assert_same(arg, asnumpy(garg))
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    dx = kernels.spp_backward(dout, arg, x.shape, table, pool)
    gdx = kernels.spp_backward(cp.asarray(dout), garg, x.shape, table, pool)
    assert_close(dx, asnumpy(gdx), dtype)
    rois = np.array([[0, 0, 0, 22, 16], [2, 3, 4, 3, 4], [1, 2, 2, 9, 11], [1, 2, 2, 9, 11]])
    rout, rarg = kernels.roi_spp_forward(x, rois, (6, 3, 2, 1), pool)
    grout, grarg = kernels.roi_spp_forward(cp.asarray(x), cp.asarray(rois), (6, 3, 2, 1), pool)
    assert_same(rout, asnumpy(grout))
    rd = np.random.default_rng(2).standard_normal(rout.shape).astype(dtype)
    df = kernels.roi_spp_backward(rd, rarg, rois, x.shape, (6, 3, 2, 1), pool)
    gdf = kernels.roi_spp_backward(cp.asarray(rd), grarg, cp.asarray(rois), x.shape,
                                   (6, 3, 2, 1), pool)
    assert_close(df, asnumpy(gdf), dtype)


# --- through the ops: impl="emulate" (the CUDA source on the CPU) equals impl="xp" -------------

@given(nchw_shapes(max_n=2, max_c=3, max_hw=11), level_sets(max_level=7, max_len=4),
       st.sampled_from(MODES), st.sampled_from(["max", "avg"]),
       st.sampled_from([np.float32, np.float64]), st.sampled_from([0.0, 0.1]), seeds)
def test_ops_spp_kernel_equals_xp(shape, levels, mode, pool, dtype, nan, seed):
    from tinyspp.ops.spp import spp_backward, spp_forward

    if mode != "adaptive" and min(shape[2:]) < max(levels):
        mode = "adaptive"  # paper/caffe cannot bin a map smaller than a level
    x = tied_values(shape, seed, dtype, nan)
    try:
        out_xp, cache_xp = spp_forward(x, levels, mode=mode, pool=pool, impl="xp")
    except ValueError:  # caffe rejects some sizes; the adaptive rule takes every one
        mode = "adaptive"
        out_xp, cache_xp = spp_forward(x, levels, mode=mode, pool=pool, impl="xp")
    out_k, cache_k = spp_forward(x, levels, mode=mode, pool=pool, impl="emulate")
    assert cache_k.impl == "emulate" and cache_xp.impl == "xp"
    if pool == "max":
        assert_same(out_k, out_xp)
        np.testing.assert_array_equal(cache_k.argmax, cache_xp.argmax)
    else:
        assert_close(out_k, out_xp, dtype)
    dout = np.random.default_rng(seed).standard_normal(out_xp.shape).astype(dtype)
    dx_k, dx_xp = spp_backward(dout, cache_k), spp_backward(dout, cache_xp)
    assert dx_k.dtype == dx_xp.dtype == dtype
    assert_close(dx_k, dx_xp, dtype)


@given(roi_cases(), st.sampled_from(["max", "avg"]), seeds)
def test_ops_roi_spp_kernel_equals_xp(case, pool, seed):
    from tinyspp.ops.roi import roi_spp_backward, roi_spp_forward

    features, rois, levels = case
    out_xp, cache_xp = roi_spp_forward(features, rois, levels, pool=pool, impl="xp")
    out_k, cache_k = roi_spp_forward(features, rois, levels, pool=pool, impl="emulate")
    assert cache_xp.impl == "xp" and cache_k.impl == ("emulate" if len(rois) else "xp")
    if pool == "max":
        assert_same(out_k, out_xp)
        np.testing.assert_array_equal(cache_k.argmax, cache_xp.argmax)
    else:
        assert_close(out_k, out_xp, features.dtype.type)
    dout = np.random.default_rng(seed).standard_normal(out_xp.shape).astype(features.dtype)
    df_k, df_xp = roi_spp_backward(dout, cache_k), roi_spp_backward(dout, cache_xp)
    assert df_k.dtype == df_xp.dtype == features.dtype
    assert_close(df_k, df_xp, features.dtype.type)


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason=GPU_REASON)
@pytest.mark.parametrize("impl", ["cuda", "xp"])
@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_ops_equal_numpy(impl, pool, dtype):
    """The ops on CuPy arrays, through the kernel and through the generic xp path, equal NumPy."""
    import cupy as cp

    from tinyspp.ops.roi import roi_spp_backward, roi_spp_forward
    from tinyspp.ops.spp import spp_backward, spp_forward

    def assert_gpu_matches_cpu(cpu, gpu, backward, seed):
        """Forward (bitwise for max, argmax too) and the gradient of one random dout."""
        (out, cache), (gout, gcache) = cpu, gpu
        if pool == "max":
            assert_same(out, asnumpy(gout))
            np.testing.assert_array_equal(cache.argmax, asnumpy(gcache.argmax))
        else:
            assert_close(out, asnumpy(gout), dtype)
        dout = np.random.default_rng(seed).standard_normal(out.shape).astype(dtype)
        gdx = backward(cp.asarray(dout), gcache)
        assert_close(backward(dout, cache), asnumpy(gdx), dtype)

    x = tied_values((2, 5, 17, 23), 7, dtype, 0.01)
    for mode in MODES:
        assert_gpu_matches_cpu(
            spp_forward(x, (6, 3, 2, 1), mode=mode, pool=pool, impl="xp"),
            spp_forward(cp.asarray(x), (6, 3, 2, 1), mode=mode, pool=pool, impl=impl),
            spp_backward, seed=0)
    rng = np.random.default_rng(1)
    x0, y0 = rng.integers(0, 23, 300), rng.integers(0, 17, 300)
    rois = np.stack([rng.integers(0, 2, 300), x0, y0, rng.integers(x0, 23), rng.integers(y0, 17)],
                    axis=1)
    assert_gpu_matches_cpu(roi_spp_forward(x, rois, pool=pool, impl="xp"),
                           roi_spp_forward(cp.asarray(x), cp.asarray(rois), pool=pool, impl=impl),
                           roi_spp_backward, seed=2)


# --- the GPU benchmark ---------------------------------------------------------------------------

def test_gpu_bench_without_a_gpu_reports_nothing(monkeypatch, capsys):
    from types import SimpleNamespace

    from tinyspp import backend
    from tinyspp.bench import SECTIONS, gpu

    assert "gpu" in SECTIONS
    monkeypatch.setattr(backend, "gpu_available", lambda: False)
    assert gpu.run(SimpleNamespace(repeats=1, quick=True, gpu=True, torch=None)) == []
    assert "no GPU" in capsys.readouterr().out


class _Event:
    """Stand-in CUDA event: records wall time."""

    def record(self):
        import time

        self.t = time.perf_counter()

    def synchronize(self):
        pass


def test_gpu_bench_logic_runs_on_a_stand_in_device(monkeypatch):
    """The bench's bookkeeping, run with NumPy standing in for CuPy (the kernel path is then the
    emulation): one row per workload plus the copy, bandwidth and speed-up in every note."""
    from types import SimpleNamespace

    from tinyspp import backend
    from tinyspp.bench import gpu

    fake_cp = SimpleNamespace(
        __version__="stand-in", float32=np.float32, asarray=np.asarray, empty=np.empty,
        empty_like=np.empty_like, copyto=np.copyto,
        cuda=SimpleNamespace(
            Event=_Event, get_elapsed_time=lambda a, b: max((b.t - a.t) * 1e3, 1e-6),
            Device=lambda: SimpleNamespace(id=0, synchronize=lambda: None),
            runtime=SimpleNamespace(getDeviceProperties=lambda i: {"name": b"stand-in"})),
    )
    monkeypatch.setattr(backend, "gpu_available", lambda: True)
    monkeypatch.setattr(backend, "_cupy", lambda: fake_cp)
    monkeypatch.setattr(gpu, "IMAGE_SHAPES", ((4, 3, 13, 13), (2, 3, 20, 24)))
    monkeypatch.setattr(gpu, "ROI_SHAPE", (1, 3, 12, 14))
    monkeypatch.setattr(gpu, "NUM_ROIS", 30)
    monkeypatch.setattr(gpu, "KERNEL_IMPL", "emulate")  # NumPy arrays: the CUDA source emulated
    rows = gpu.run(SimpleNamespace(repeats=1, quick=True, gpu=True, torch=None))
    assert [r.workload.split(" ")[:2] for r in rows] == [
        ["device-to-device", "copy"], ["spp", "fwd"], ["spp", "bwd"], ["spp", "fwd"],
        ["spp", "bwd"], ["roi", "fwd"], ["roi", "bwd"]]
    assert all(r.ours_ms > 0 for r in rows)
    assert all("speed-up" in r.note and "% of copy" in r.note for r in rows[1:])


def test_covered_cells_counts_the_union_of_rois():
    from tinyspp.bench.gpu import covered_cells
    from tinyspp.bench.pyramid import random_rois

    rois = np.array([[0, 0, 0, 1, 1], [0, 1, 1, 2, 2], [1, 0, 0, 0, 0]])
    assert covered_cells(rois, (2, 8, 3, 3)) == 4 + 4 - 1 + 1
    r = random_rois(np.random.default_rng(1), 50, 2, 9, 11)
    assert r.shape == (50, 5) and r.dtype == np.int64
    assert np.all((r[:, 1] <= r[:, 3]) & (r[:, 3] < 11) & (r[:, 2] <= r[:, 4]) & (r[:, 4] < 9))


def test_cuda_launcher_without_a_gpu_says_so(monkeypatch):
    from tinyspp import backend
    from tinyspp.kernels import cuda

    monkeypatch.setattr(backend, "gpu_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs CuPy and a CUDA device; with NumPy arrays"):
        cuda.launch("spp_forward_f32", 1, [])


# --- the compiled-library cache (tinyspp/kernels/build.py) ---------------------------------------

PROBE = 'extern "C" int tinyspp_probe() { return 7; }\n'
PROBE_FLAGS = ("-O0", "-shared", "-fPIC")


def _probe(folder, source=PROBE, symbols=("tinyspp_probe",)):
    from tinyspp.kernels import build

    return build.shared_library("probe", source, PROBE_FLAGS, folder, find=emulate.find_compiler,
                                who="test", why="a test", symbols=symbols)


def _plant(path, source):
    """Compile ``source`` straight to ``path`` (a library the cache did not build)."""
    src = path.with_suffix(".plant.cpp")
    src.write_text(source)
    subprocess.run([emulate.find_compiler(), *PROBE_FLAGS, "-o", str(path), str(src)],
                   check=True)
    src.unlink()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".so"))


def test_concurrent_first_builds_all_succeed_and_leave_one_good_library(tmp_path):
    """Several processes compile the CPU kernel at once into an empty cache: each builds from
    its own temporary source, checks the symbols and renames atomically, so all of them load a
    good library (no warning: -W error), one file stays and no temporary file is left."""
    import os
    import sys

    env = {**os.environ, "TINYSPP_CACHE_DIR": str(tmp_path)}
    code = ("from tinyspp.kernels import cpu; lib = cpu.library(); "
            "assert all(hasattr(lib, s) for s in cpu.symbols()); print('ok')")
    procs = [subprocess.Popen([sys.executable, "-W", "error", "-c", code], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], results
    assert all(out.strip() == "ok" and not err for out, err in results), results
    assert len(list(tmp_path.glob("region_max_*.so"))) == 1
    assert _leftovers(tmp_path) == []


def test_cached_library_without_its_symbols_is_rebuilt(tmp_path):
    from tinyspp.kernels import build

    path = build.library_path("probe", PROBE, PROBE_FLAGS, tmp_path)
    _plant(path, "int unrelated = 1;\n")  # what g++ makes of an empty or truncated source
    lib = _probe(tmp_path)
    assert lib.tinyspp_probe() == 7
    # the file on disk is the good one now: a fresh process loads it without rebuilding
    import sys

    check = f"import ctypes; print(ctypes.CDLL({str(path)!r}).tinyspp_probe())"
    assert subprocess.run([sys.executable, "-c", check], capture_output=True,
                          text=True).stdout.strip() == "7"
    assert _leftovers(tmp_path) == []


def test_cached_library_that_does_not_load_is_rebuilt(tmp_path):
    from tinyspp.kernels import build

    path = build.library_path("probe", PROBE, PROBE_FLAGS, tmp_path)
    path.write_bytes(b"\x7fELF truncated")
    assert _probe(tmp_path).tinyspp_probe() == 7


def test_a_build_without_the_symbols_is_never_cached(tmp_path):
    with pytest.raises(RuntimeError, match="unusable .*missing.*tinyspp_missing.*not caching"):
        _probe(tmp_path, symbols=("tinyspp_probe", "tinyspp_missing"))
    assert list(tmp_path.iterdir()) == []  # no library, no temporary source


def test_compiler_gets_a_timeout_and_leaves_no_files(tmp_path, monkeypatch):
    from tinyspp.kernels import build

    slow = tmp_path / "slow-cxx"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    cache = tmp_path / "cache"
    monkeypatch.setenv("TINYSPP_COMPILE_TIMEOUT", "0.5")
    with pytest.raises(RuntimeError, match="did not finish compiling probe within 0.5 s"):
        build.shared_library("probe", PROBE, PROBE_FLAGS, cache, find=lambda: str(slow),
                             who="test", why="a test", symbols=("tinyspp_probe",))
    assert list(cache.iterdir()) == []


def test_fallback_cache_folder_is_private_and_refused_when_not(tmp_path, monkeypatch):
    import os
    import stat
    import tempfile

    from tinyspp.kernels import build

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("TINYSPP_CACHE_DIR")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # ~/.cache-like folder cannot be made
    folder = build.cache_dir()
    assert folder == tmp_path / f"tinyspp-{os.getuid()}"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    folder.chmod(0o777)
    with pytest.raises(RuntimeError, match="refusing the cache folder .*others may write"):
        build.cache_dir()
    folder.chmod(0o700)
    monkeypatch.setattr(os, "getuid", lambda: 54321)  # as seen by another user
    (tmp_path / "tinyspp-54321").symlink_to(folder)
    with pytest.raises(RuntimeError, match="not a directory"):
        build.temp_cache_dir()
    (tmp_path / "tinyspp-54321").unlink()
    (tmp_path / "tinyspp-54321").mkdir(mode=0o700)  # planted by the real user, not by 54321
    with pytest.raises(RuntimeError, match=rf"owned by uid {folder.stat().st_uid}, not by this "
                                           r"user \(uid 54321\)"):
        build.temp_cache_dir()


def test_available_answers_false_with_the_reason_on_any_load_failure(monkeypatch):
    from tinyspp.kernels import cpu

    def broken():
        raise AttributeError("region_max: undefined symbol roi_max_forward_f32_u16")

    monkeypatch.setattr(cpu, "library", broken)
    cpu.available.cache_clear()
    try:
        assert cpu.available() is False
        assert "AttributeError" in cpu.why_unavailable()
        assert "undefined symbol" in cpu.why_unavailable()
    finally:
        cpu.available.cache_clear()
        cpu._UNAVAILABLE.clear()


# --- per-launch work done once -------------------------------------------------------------------

def test_bin_table_is_checked_and_packed_once_per_geometry():
    from tinyspp.kernels import pyramid_pool

    pyramid_pool._TABLES.clear()
    x = tied_values((2, 3, 9, 7), 2, np.float64)
    out, arg = kernels.spp_forward(x, bin_table(9, 7, (3, 1)))
    kernels.spp_backward(np.ones_like(out), arg, x.shape, bin_table(9, 7, (3, 1)))
    kernels.spp_forward(x, bin_table(9, 7, (3, 1), "caffe"))  # other bins: another entry
    assert sum(k[0] == "table" for k in pyramid_pool._TABLES) == 2
    bad = bin_table(9, 7, (3, 1))._replace(x1=np.array([3, 5, 8, 3, 5, 8, 3, 5, 8, 7]))
    with pytest.raises(ValueError, match="inside the \\(9, 7\\) map"):  # never cached as good
        kernels.spp_forward(x, bad)
    with pytest.raises(ValueError, match="inside the \\(9, 7\\) map"):
        kernels.spp_forward(x, bad)


def test_entry_points_are_parsed_once_per_process():
    common._parse_entry_points.cache_clear()
    first = common.entry_points()
    assert common.entry_points() is first
    assert common._parse_entry_points.cache_info().hits == 1


def test_image_kernel_caffe_avg_divides_by_the_padded_window():
    x = np.arange(20.0).reshape(1, 1, 4, 5)
    out, _ = kernels.spp_forward(x, bin_table(4, 5, (2,), "caffe"), "avg")
    g = x[0, 0]
    assert out[0].tolist() == [g[0:2, 0:2].sum() / 6, g[0:2, 2:5].sum() / 6,
                               g[2:4, 0:2].sum() / 6, g[2:4, 2:5].sum() / 6]
    dx = kernels.spp_backward(np.ones((1, 4)), None, x.shape, bin_table(4, 5, (2,), "caffe"),
                              "avg")
    assert np.allclose(dx[0, 0], 1 / 6)  # every cell is in one bin whose divisor is 6


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason=GPU_REASON)
def test_gpu_region_pooling_takes_host_rois_and_float16():
    import cupy as cp

    from tinyspp.ops.roi import roi_spp_backward, roi_spp_forward

    x = tied_values((1, 3, 9, 11), 8, np.float32)
    rois = np.array([[0, 0, 0, 10, 8], [0, 2, 3, 5, 5], [0, 2, 3, 5, 5]])
    out, cache = roi_spp_forward(cp.asarray(x), rois)  # NumPy rois, CuPy features
    assert cache.impl == "cuda"
    ref, ref_cache = roi_spp_forward(x, rois, impl="xp")
    assert_same(asnumpy(out), ref)
    np.testing.assert_array_equal(asnumpy(cache.argmax), ref_cache.argmax)
    dx = roi_spp_backward(cp.ones(out.shape, cp.float32), cache)
    assert_close(asnumpy(dx), roi_spp_backward(np.ones(out.shape, np.float32), ref_cache),
                 np.float32)
    half, hcache = roi_spp_forward(cp.asarray(x.astype(np.float16)), rois)  # auto falls back
    assert hcache.impl == "xp" and half.dtype == np.float16
