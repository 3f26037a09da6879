"""The convolution's fast paths against their plain twins (issue 14).

* the compiled im2col / col2im (``tinyspp/kernels/columns.cpp``, ``impl="cpu"``) against the
  NumPy code (``impl="xp"``), bit for bit, on data with NaN, infinities and -0.0;
* the image blocks and pieces of ``conv2d_forward`` / ``conv2d_backward``: the result does not
  depend on the number of threads, on kept or re-gathered columns, or on which im2col ran;
* the one thread pool of ``tinyspp.ops.dispatch``: BLAS held at one thread while our threads
  split the work, and restored after.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyspp.kernels import columns
from tinyspp.ops import conv, dispatch
from tinyspp.ops.conv import col2im, conv2d_backward, conv2d_forward, conv_output_size, im2col

needs_kernel = pytest.mark.skipif(not columns.available(),
                                  reason=f"no compiled kernel: {columns.why_unavailable()}")


def awkward(shape, seed, dtype):
    """Normals with a NaN, +-inf and -0.0 planted, in ``dtype``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    flat = x.reshape(-1)
    for i, v in zip(rng.choice(flat.size, size=min(4, flat.size), replace=False),
                    (np.nan, np.inf, -np.inf, -0.0)):
        flat[i] = v
    return x.astype(dtype)


def same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.ascontiguousarray(a).view(np.uint8),
                                  np.ascontiguousarray(b).view(np.uint8))


geometry = st.tuples(
    st.integers(1, 3), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9),  # N C H W
    st.integers(1, 5), st.integers(1, 5), st.integers(1, 3), st.integers(0, 4),  # kh kw s pad
).filter(lambda g: g[2] + 2 * g[7] >= g[4] and g[3] + 2 * g[7] >= g[5])


@needs_kernel
@given(g=geometry, seed=st.integers(0, 2**16), double=st.booleans())
def test_compiled_im2col_and_col2im_equal_numpy_bit_for_bit(g, seed, double):
    N, C, H, W, kh, kw, s, pad = g
    dtype = np.float64 if double else np.float32
    x = awkward((N, C, H, W), seed, dtype)
    same_bits(im2col(x, kh, kw, s, pad, impl="cpu"), im2col(x, kh, kw, s, pad, impl="xp"))
    oh, ow = conv_output_size(H, kh, s, pad), conv_output_size(W, kw, s, pad)
    cols = awkward((C * kh * kw, N * oh * ow), seed + 1, dtype)
    # every pixel sums its terms in the same order: the same floats, NaN and -0.0 included
    with np.errstate(invalid="ignore"):  # inf + -inf: NumPy warns, C++ does not
        same_bits(col2im(cols, x.shape, kh, kw, s, pad, impl="cpu"),
                  col2im(cols, x.shape, kh, kw, s, pad, impl="xp"))


@needs_kernel
@pytest.mark.parametrize("impl", ["cpu", "xp"])
def test_im2col_and_col2im_work_on_a_block_of_columns_of_a_larger_matrix(impl):
    """What a convolution's image blocks do: gather into, and scatter from, the columns of some
    images of the batch's matrix, leaving every other column alone."""
    x = awkward((5, 3, 7, 6), 1, np.float32)
    whole = im2col(x, 3, 3, 1, 1, impl="xp")
    P = 7 * 6
    big = np.full_like(whole, 9.0)
    im2col(x[1:3], 3, 3, 1, 1, out=big[:, 1 * P:3 * P], impl=impl)
    same_bits(big[:, P:3 * P], whole[:, P:3 * P])
    assert (big[:, :P] == 9).all() and (big[:, 3 * P:] == 9).all()
    dx = np.empty((2, 3, 7, 6), np.float32)
    col2im(whole[:, P:3 * P], dx.shape, 3, 3, 1, 1, out=dx, impl=impl)
    same_bits(dx, col2im(np.ascontiguousarray(whole[:, P:3 * P]), dx.shape, 3, 3, 1, 1,
                         impl="xp"))


def test_impl_errors_name_the_argument(monkeypatch):
    x = np.ones((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"im2col: impl must be one of \('auto', 'xp', 'cpu'\)"):
        im2col(x, 3, 3, impl="gpu")
    with pytest.raises(ValueError, match="col2im: impl must be one of"):
        col2im(np.ones((9, 4), np.float32), x.shape, 3, 3, pad=1, impl="fast")
    with pytest.raises(TypeError, match="im2col: impl='cpu' takes NumPy float32 or float64"):
        im2col(x.astype(np.float16), 3, 3, impl="cpu")
    monkeypatch.setattr(columns, "available", lambda: False)
    monkeypatch.setattr(columns, "why_unavailable", lambda: "RuntimeError: no compiler")
    with pytest.raises(RuntimeError, match="impl='cpu' needs the compiled kernel.*no compiler"):
        im2col(x, 3, 3, impl="cpu")
    # "auto" without the kernel is the NumPy code, with the same numbers
    same_bits(im2col(x, 3, 3, pad=1), im2col(x, 3, 3, pad=1, impl="xp"))


def test_im2col_into_a_column_major_buffer(monkeypatch):
    """The NumPy code writes through any (C*kh*kw, N*oh*ow) buffer; the compiled loop takes
    row-major blocks only, so "auto" gives a column-major one to the NumPy code."""
    x = awkward((2, 2, 4, 3), 4, np.float64)
    want = im2col(x, 2, 2, pad=1, impl="xp")
    for impl in ("xp", "auto"):
        column_major = np.zeros(want.shape, order="F")
        assert im2col(x, 2, 2, pad=1, out=column_major, impl=impl) is column_major
        same_bits(np.ascontiguousarray(column_major), want)
    if columns.available():
        with pytest.raises(TypeError, match="out must be a float64 block of whole columns"):
            im2col(x, 2, 2, pad=1, out=np.zeros(want.shape, order="F"), impl="cpu")


@pytest.fixture
def split_everything(monkeypatch):
    monkeypatch.setattr(dispatch, "MIN_WORK", 0)
    yield
    dispatch.set_num_threads(None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,F,k,stride,pad", [((9, 3, 8, 7), 4, 3, 1, 1),
                                                   ((6, 2, 11, 9), 3, 5, 2, 2),
                                                   ((5, 4, 5, 5), 2, 1, 1, 0),
                                                   # long columns, small map: one forward
                                                   # GEMM per piece (ONE_GEMM_RATIO)
                                                   ((5, 32, 3, 3), 4, 3, 1, 1)])
@pytest.mark.parametrize("direct", ["auto", "off"])  # the direct kernel where it applies, or not
def test_conv_result_is_the_same_for_any_threads_pieces_columns_and_impl(
        split_everything, monkeypatch, dtype, shape, F, k, stride, pad, direct):
    """The image blocks and the pieces inside them are fixed by the shapes alone, so the
    output and all three gradients are the same bit for bit whatever runs them."""
    monkeypatch.setattr(conv, "DIRECT_IMPL", direct)
    rng = np.random.default_rng(2)
    x = awkward(shape, 3, dtype)
    x[np.isnan(x) | np.isinf(x)] = 0.5  # keep the GEMMs' sums finite, compare all bits
    w = rng.standard_normal((F, shape[1], k, k)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)

    def run(threads, keep, impl="auto"):
        dispatch.set_num_threads(threads)
        monkeypatch.setattr(conv, "COLUMNS_IMPL", impl)
        out, cache = conv2d_forward(x, w, b, stride=stride, pad=pad, keep_cols=keep)
        return (out,) + conv2d_backward(np.cos(out), cache)

    monkeypatch.setattr(conv, "PIECE_ELEMENTS", 2 * shape[1] * k * k * 9)  # several pieces
    monkeypatch.setattr(conv, "PIECE_COLUMNS", 1)  # (small maps would merge them again)
    monkeypatch.setattr(conv, "BLOCKS", 4)  # as on a 4-CPU machine: up to 4 threads at work
    reference = run(1, True, "xp")
    for threads, keep, impl in [(1, False, "xp"), (3, True, "auto"), (3, False, "auto"),
                                (2, False, "auto"), (4, True, "xp")]:
        for got, want in zip(run(threads, keep, impl), reference, strict=True):
            same_bits(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (1, 70), (70, 1), (63, 5), (64, 3), (65, 130),
                                   (200, 129)])
def test_sum_in_bands_is_the_sum_then_the_transpose_bit_for_bit(split_everything, dtype, shape):
    """``sum_transposed`` adds and copies in bands of rows, split over threads: the same values
    as summing in list order then copying ``.T`` (NaN, infinities and -0.0 included),
    C-contiguous, for sizes around the band height and for strided inputs."""
    a = awkward(shape, 5, dtype)
    for threads in (1, 3):
        dispatch.set_num_threads(threads)
        for src in (a, np.asfortranarray(a),
                    awkward((shape[0], 2 * shape[1]), 6, dtype)[:, ::2]):
            got = conv.sum_transposed([src])
            assert got.flags.c_contiguous
            same_bits(got, src.T)
        parts = [awkward(shape, seed, dtype) for seed in (7, 8, 9)]
        want = parts[0].copy()
        for part in parts[1:]:
            want += part
        for n in (2, 3):
            got = conv.sum_transposed(parts[:n])
            same_bits(got, (want if n == 3 else parts[0] + parts[1]).T)


@pytest.mark.parametrize("rows", [1, 7, 10 ** 9])  # 10**9: one band, NumPy's whole copy
def test_weight_gradient_does_not_depend_on_the_transpose_bands(monkeypatch, rows):
    """The weight gradient, summed in the GEMMs' (C*kh*kw, F) layout and transposed once,
    is the same bit for bit whatever the bands of the transpose (the plain twin: one band)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 5, 9, 9)).astype(np.float32)
    w = rng.standard_normal((7, 5, 3, 3)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    monkeypatch.setattr(conv, "DIRECT_IMPL", "off")
    monkeypatch.setattr(conv, "PIECE_ELEMENTS", 5 * 9 * 81)  # pieces and blocks to sum
    monkeypatch.setattr(conv, "PIECE_COLUMNS", 1)
    monkeypatch.setattr(conv, "BLOCKS", 3)
    out, cache = conv2d_forward(x, w, b, pad=1)
    dout = np.cos(out)
    _, want, _ = conv2d_backward(dout, cache)
    monkeypatch.setattr(conv, "TRANSPOSE_ROWS", rows)
    _, got, _ = conv2d_backward(dout, cache)
    assert got.flags.c_contiguous and got.shape == w.shape
    same_bits(got, want)
    d2 = dout.transpose(1, 0, 2, 3).reshape(7, -1).astype(np.float64)
    np.testing.assert_allclose(got.reshape(7, -1), d2 @ cache.cols.astype(np.float64).T,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_forward_gemm_per_image_and_per_piece_agree_with_the_naive_twin(monkeypatch, dtype,
                                                                       rtol):
    """Both forward layouts (a GEMM per image into its plane; one GEMM per piece and a
    transposing pass with the bias) give the convolution formula's result."""
    from tinyspp.ops import conv2d_forward_naive

    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 16, 4, 5)).astype(dtype)
    w = rng.standard_normal((5, 16, 3, 3)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    want = conv2d_forward_naive(x, w, b, pad=1)
    assert want.dtype == dtype
    for ratio in (10**9, 0):  # never one GEMM per piece, always (pieces of several images)
        monkeypatch.setattr(conv, "ONE_GEMM_RATIO", ratio)
        out, _ = conv2d_forward(x, w, b, pad=1)
        np.testing.assert_allclose(out, want, rtol=rtol, atol=rtol * float(np.abs(want).max()))
    assert any(b - a > 1 for blk in conv.image_blocks(6, 144 * 20, 20) for a, b in blk)


def test_image_blocks_cover_the_batch_in_small_pieces(monkeypatch):
    monkeypatch.setattr(conv, "BLOCKS", None)
    assert len(conv.image_blocks(10, 30)) == dispatch.cpu_count()  # the default: one per CPU
    monkeypatch.setattr(conv, "BLOCKS", 4)
    monkeypatch.setattr(conv, "PIECE_ELEMENTS", 100)
    blocks = conv.image_blocks(10, 30)  # 3 images per piece
    assert len(blocks) == 4
    pieces = [p for block in blocks for p in block]
    assert [n for a, b in pieces for n in range(a, b)] == list(range(10))
    assert all(b - a <= 3 for a, b in pieces)
    assert conv.image_blocks(2, 10**9) == [[(0, 1)], [(1, 2)]]  # huge images: one per piece
    # small maps: enough images per piece for PIECE_COLUMNS output positions
    monkeypatch.setattr(conv, "PIECE_ELEMENTS", 30)  # one image per piece by size ...
    assert conv.image_blocks(10, 30)[0] == [(0, 1), (1, 2)]
    monkeypatch.setattr(conv, "PIECE_COLUMNS", 8)  # ... but 2 positions each: 4 per piece
    assert conv.image_blocks(10, 30, positions=2) == [[(0, 2)], [(2, 5)], [(5, 7)], [(7, 10)]]


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_conv_in_small_pieces_matches_one_piece_to_rounding(monkeypatch, dtype, rtol):
    """Pieces of a few images sum dw in another order than one piece per block: the
    gradients agree to rounding (not bit for bit)."""
    monkeypatch.setattr(conv, "DIRECT_IMPL", "off")  # the columns path's pieces
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 3, 8, 9)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    out, cache = conv2d_forward(x, w, b, pad=1)
    whole = (out,) + conv2d_backward(np.sin(out), cache)
    monkeypatch.setattr(conv, "PIECE_ELEMENTS", 27 * 72)  # one image per piece
    monkeypatch.setattr(conv, "PIECE_COLUMNS", 1)
    assert sum(len(block) for block in conv.image_blocks(7, 27 * 72)) == 7
    out, cache = conv2d_forward(x, w, b, pad=1, keep_cols=False)
    pieces = (out,) + conv2d_backward(np.sin(out), cache)
    for a, c in zip(whole, pieces, strict=True):
        np.testing.assert_allclose(c, a, rtol=rtol, atol=rtol * float(np.abs(a).max()))


# ------------------------------------------------------------------------ one thread pool

def blas_threads():
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_one_blas_thread_holds_blas_at_one_and_restores_it():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        assert before and all(n == 2 for n in before)
        with dispatch.one_blas_thread():
            assert all(n == 1 for n in blas_threads())
            with dispatch.one_blas_thread():  # re-entrant
                assert all(n == 1 for n in blas_threads())
            assert all(n == 1 for n in blas_threads())
        assert blas_threads() == before


def test_blas_for_ops_only_when_our_threads_split_the_work():
    from contextlib import nullcontext

    try:
        dispatch.set_num_threads(1)
        assert isinstance(dispatch.blas_for_ops(), nullcontext)
        dispatch.set_num_threads(2)
        assert not isinstance(dispatch.blas_for_ops(), nullcontext)
        assert not isinstance(dispatch.blas_for_ops(dispatch.SMALL_GEMM - 1), nullcontext)
        assert isinstance(dispatch.blas_for_ops(dispatch.SMALL_GEMM), nullcontext)  # big GEMM
    finally:
        dispatch.set_num_threads(None)


def test_a_split_runs_blas_on_one_thread_and_waits_for_every_slice(split_everything):
    from threadpoolctl import threadpool_limits

    dispatch.set_num_threads(3)
    seen, done = [], []

    def work(a, b):
        seen.append(blas_threads())
        done.append((a, b))
        if a == 0:
            raise KeyError("slice 0 failed")

    with threadpool_limits(2, user_api="blas"):
        with pytest.raises(KeyError, match="slice 0 failed"):
            dispatch.parallel_slices(work, 6, 10)
        assert sorted(done) == [(0, 2), (2, 4), (4, 6)]  # the other slices still finished
        assert all(n == 1 for threads in seen for n in threads)
        assert all(n == 2 for n in blas_threads())  # restored after the error
    assert dispatch.parallel_map(lambda i: i * i, list(range(7)), 10) == [i * i for i in range(7)]


def test_thread_count_default_and_a_bad_environment_value(monkeypatch):
    dispatch.set_num_threads(None)
    monkeypatch.delenv("TINYSPP_NUM_THREADS", raising=False)
    assert dispatch.num_threads() == dispatch.cpu_count()
    monkeypatch.setenv("TINYSPP_NUM_THREADS", "3")
    assert dispatch.num_threads() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("TINYSPP_NUM_THREADS", bad)
        with pytest.raises(ValueError, match="TINYSPP_NUM_THREADS must be a positive integer"):
            dispatch.num_threads()


def test_pinning_setting_and_its_automatic_rule(monkeypatch):
    monkeypatch.setattr(dispatch, "_allowed_cpus", lambda: [0, 1])
    monkeypatch.setattr(dispatch.os, "sched_setaffinity", lambda *a: None, raising=False)
    monkeypatch.delenv("TINYSPP_PIN_THREADS", raising=False)
    assert dispatch.pinning(2) and not dispatch.pinning(3) and not dispatch.pinning(1)
    monkeypatch.setenv("TINYSPP_PIN_THREADS", "auto")
    assert dispatch.pinning(2) and not dispatch.pinning(3)
    monkeypatch.setenv("TINYSPP_PIN_THREADS", "0")
    assert not dispatch.pinning(2)
    monkeypatch.setenv("TINYSPP_PIN_THREADS", "1")
    assert dispatch.pinning(3) and dispatch._pin_cpus(3) == [0, 1, 0]  # round robin
    monkeypatch.setenv("TINYSPP_PIN_THREADS", "yes")
    with pytest.raises(ValueError, match="TINYSPP_PIN_THREADS must be 0, 1 or auto, got 'yes'"):
        dispatch.pinning(2)
    monkeypatch.delattr(dispatch.os, "sched_setaffinity")  # not Linux: never pinned
    monkeypatch.setenv("TINYSPP_PIN_THREADS", "1")
    assert not dispatch.pinning(2)


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"), reason="Linux only")
def test_a_pinned_split_runs_every_slice_on_a_worker_of_its_own_cpu(split_everything,
                                                                     monkeypatch):
    """Pinned, the calling thread waits and worker i runs slice i on CPU i (round robin);
    unpinned again, the workers may use every CPU and the caller takes the first slice."""
    import os
    import threading

    allowed = sorted(os.sched_getaffinity(os.getpid()))
    dispatch.set_num_threads(2)
    out = np.zeros(10)

    def run():
        seen = {}

        def work(a, b):
            out[a:b] = np.arange(a, b)
            seen[a] = (threading.current_thread().name, sorted(os.sched_getaffinity(0)))

        out[:] = 0
        dispatch.parallel_slices(work, 10, 10)
        assert out.tolist() == list(range(10))
        return [seen[a] for a in sorted(seen)]

    monkeypatch.setenv("TINYSPP_PIN_THREADS", "1")
    (name0, cpus0), (name1, cpus1) = run()
    assert name0 != "MainThread" and name1 != "MainThread" and name0 != name1
    assert cpus0 == [allowed[0]] and cpus1 == [allowed[1 % len(allowed)]]
    monkeypatch.setenv("TINYSPP_PIN_THREADS", "0")
    (name0, _), (_, cpus1) = run()
    assert name0 == "MainThread" and cpus1 == allowed  # the worker was unpinned
    assert dispatch.cpu_count() == min(len(allowed), 4)


@pytest.mark.parametrize("pin", ["0", "1"])
def test_training_steps_do_not_depend_on_pinning(monkeypatch, pin):
    """The slices are the same pinned or not: so are the results, bit for bit."""
    monkeypatch.setenv("TINYSPP_PIN_THREADS", pin)
    test_training_steps_do_not_depend_on_the_number_of_threads()


def test_training_steps_do_not_depend_on_the_number_of_threads():
    """Three SGD steps of the small SPP-net at 48 px (big enough for every convolution to be
    split over threads) end with the same weights, bit for bit, on 1 thread and on 2."""
    from tinyspp.bench.training import batch
    from tinyspp.nn import SGD, small_spp_net
    from tinyspp.ops import softmax_cross_entropy
    from tinyspp.train import blas_threads

    x, y = batch(48)

    def train(threads):
        net = small_spp_net(10, 3, levels=(4, 2, 1), seed=0).train()
        opt = SGD(net, lr=0.01, momentum=0.9, weight_decay=5e-4)
        with blas_threads(threads):
            for _ in range(3):
                _, dlogits = softmax_cross_entropy(net.forward(x), y)
                net.backward(dlogits, input_grad=False)
                opt.step()
        return [p.copy() for layer in net for p in getattr(layer, "params", {}).values()]

    saved = dispatch._threads
    one, two = train(1), train(2)
    assert dispatch._threads == saved  # blas_threads restored tinyspp's setting
    assert len(one) == 10
    for a, b in zip(one, two, strict=True):
        same_bits(a, b)


FORKED_SPLIT = """
import multiprocessing, sys
import numpy as np
from tinyspp.ops import dispatch

dispatch.MIN_WORK = 0
out = np.zeros(8)

def fill(a, b):
    out[a:b] = np.arange(a, b)

def child(q):
    fill_out = np.zeros(8)
    def fill2(a, b):
        fill_out[a:b] = 1
    with dispatch.using_threads(2):
        dispatch.parallel_slices(fill2, 8, 8)
    q.put(fill_out.sum())

with dispatch.using_threads(2):
    dispatch.parallel_slices(fill, 8, 8)  # the parent's worker thread exists from here on
ctx = multiprocessing.get_context("fork")
q = ctx.Queue()
p = ctx.Process(target=child, args=(q,))
p.start()
print(q.get(timeout=60))
p.join(timeout=60)
sys.exit(p.exitcode)
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork on this platform")
def test_a_forked_child_splits_on_threads_of_its_own():
    """The workers a forked child inherits have no threads behind them; it must start its own
    instead of waiting forever for an answer."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", FORKED_SPLIT], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "8.0"


def test_the_one_gemm_benchmark_idea_runs_both_layouts_and_restores_the_rule(monkeypatch):
    from tinyspp.bench import ideas

    seen = []
    real = conv.conv2d_forward

    def spy(*args, **kwargs):
        seen.append(conv.ONE_GEMM_RATIO)
        return real(*args, **kwargs)

    monkeypatch.setattr(conv, "conv2d_forward", spy)
    build = ideas._one_gemm((3, 8, 4, 4), (5, 8, 3, 3))
    build(False)()
    build(True)()
    assert seen == [1 << 30, 0]  # a GEMM per image, then one per piece
    assert conv.ONE_GEMM_RATIO == 8  # the rule is back
