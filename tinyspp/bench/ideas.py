"""Each speed-up of issue 14 against its plain twin (section ``ideas``).

Every fast path in the ops keeps the plain code it replaced (the tests compare the two bit for
bit); this section times both on the shapes of the small SPP-net's training step (batch 32,
48 x 48 images), alternating rounds, so ``docs/performance.md`` can say what each idea bought.
All but the threads ideas run on one thread (``common.one_thread``): the change of work, not the
machine's scheduling, is what they measure.
Rows come in pairs, ``"<idea>: plain"`` and ``"<idea>: fast"``.
"""

from __future__ import annotations

import contextlib
import statistics

import numpy as np

from .common import Row, one_thread, times_ms
from .layers import data
from .training import ours_step, setup, step_of


@contextlib.contextmanager
def _passes(impl: str):
    """The ops' ``PASSES_IMPL`` switch (compiled ReLU and pool-backward loops, or NumPy)."""
    from ..ops import basic, pool

    saved = basic.PASSES_IMPL, pool.PASSES_IMPL
    basic.PASSES_IMPL = pool.PASSES_IMPL = impl
    try:
        yield
    finally:
        basic.PASSES_IMPL, pool.PASSES_IMPL = saved


def _step_under(switch):
    """``build(fast)`` of an idea timed on whole SGD steps (48 px): the step run inside
    ``switch(fast)``, a context manager that turns the idea off (plain) or on (fast)."""
    def build(fast: bool):
        step = ours_step(48)

        def run():
            with switch(fast):
                step()

        return run

    return build


def _direct(impl: str):
    """The convolution's ``DIRECT_IMPL`` switch (the first layer's direct kernel, or not)."""
    from unittest import mock

    from ..ops import conv

    return mock.patch.object(conv, "DIRECT_IMPL", impl)


def _blocked(impl: str):
    """The convolution's ``BLOCKED_IMPL`` switch (the blocked kernel of deeper layers, or not)."""
    from unittest import mock

    from ..ops import conv

    return mock.patch.object(conv, "BLOCKED_IMPL", impl)


def _without_blocked(switch):
    """``switch(fast)`` with the blocked kernel off as well: the ideas that came before it,
    timed on the code they changed (im2col + GEMM or the first direct kernel)."""
    @contextlib.contextmanager
    def both(fast: bool):
        with _blocked("off"), switch(fast):
            yield

    return both


def _blocked_conv(x_shape, w_shape, pad: int, seed: int):
    """A convolution forward + backward (with dx) by the path it ran before the blocked kernel
    (plain: im2col + GEMM, or for up to ``DIRECT_MAX_CHANNELS`` channels the direct kernel's
    forward and dx) or by the blocked kernel (fast)."""
    from ..ops import conv2d_backward, conv2d_forward

    x, w = data(x_shape, seed), data(w_shape, seed + 1, 0.1)
    b = data(w_shape[:1], seed + 2)

    def build(fast: bool):
        out, _ = conv2d_forward(x, w, b, pad=pad)
        dout = data(out.shape, seed + 3)

        def step():
            with _blocked("auto" if fast else "off"):
                _, cache = conv2d_forward(x, w, b, pad=pad, keep_cols=False)
                conv2d_backward(dout, cache)

        return step

    return build


_blocked_step = _step_under(lambda fast: _blocked("auto" if fast else "off"))

DETECT_IMAGE = (120, 144)  # the detection experiment's image sizes are 96 to 144 px
DETECT_WINDOWS = 2000  # its timing_windows


def _detection_features(method: str):
    """``build(fast)``: one image's detection features as the detection experiment times them
    (``tinyspp.apps.detect_demo``: the small SPP-net trunk of widths 8/16/32, pool levels
    4/2/1, 2000 windows), ``method`` "spp" (SPP-net, the trunk once per scale 48/72/108) or
    "rcnn" (R-CNN, every window warped to 24 x 24 and through the trunk), with the blocked
    kernel off (plain) or as shipped (fast). Untrained weights: the time does not depend on
    them."""
    def build(fast: bool):
        from ..detect.features import SPPFeatures
        from ..detect.rcnn import RCNNFeatures
        from ..nn import small_spp_net
        from ..nn.models import split_trunk_head

        trunk, _ = split_trunk_head(small_spp_net(3, levels=(4, 2, 1), widths=(8, 16, 32),
                                                  hidden=64, seed=0))
        common = dict(levels=(4, 2, 1), input_size=24)
        extractor = (SPPFeatures(trunk, scales=(48, 72, 108), **common) if method == "spp"
                     else RCNNFeatures(trunk, **common))
        rng = np.random.default_rng(46)
        H, W = DETECT_IMAGE
        image = rng.random((H, W, 3)).astype(np.float32)
        x0, y0 = rng.uniform(0, W - 8, DETECT_WINDOWS), rng.uniform(0, H - 8, DETECT_WINDOWS)
        boxes = np.stack([x0, y0, x0 + rng.uniform(8, W - x0), y0 + rng.uniform(8, H - y0)], 1)

        def run():
            with _blocked("auto" if fast else "off"):
                extractor.pool(image, boxes)

        return run

    return build


def _first_conv(fast: bool):
    """The training step's first convolution (3 -> 16 channels, 5x5, pad 2, 48 x 48, batch
    32), forward + the backward a first layer runs (no dx): im2col + GEMM, or direct."""
    from ..ops import conv2d_backward, conv2d_forward

    x, w, b = data((32, 3, 48, 48), 14), data((16, 3, 5, 5), 15), data((16,), 16)
    dout = data((32, 16, 48, 48), 17)

    def step():
        with _direct("auto" if fast else "off"):
            _, cache = conv2d_forward(x, w, b, pad=2, keep_cols=False)
            conv2d_backward(dout, cache, need_dx=False)

    return step


def _few_channels(fast: bool):
    """The direct kernel's forward for layers with up to ``DIRECT_MAX_CHANNELS`` channels
    (fast), or only for first layers, up to ``DIRECT_DW_MAX_CHANNELS`` (plain)."""
    from unittest import mock

    from ..ops import conv

    limit = conv.DIRECT_MAX_CHANNELS if fast else conv.DIRECT_DW_MAX_CHANNELS
    return mock.patch.object(conv, "DIRECT_MAX_CHANNELS", limit)


def _second_conv(fast: bool):
    """The training step's second convolution (16 -> 32 channels, 3x3, pad 1, 24 x 24, batch
    32), forward: im2col + GEMM, or the direct kernel."""
    from ..ops import conv2d_forward

    x, w, b = data((32, 16, 24, 24), 23), data((32, 16, 3, 3), 24, 0.1), data((32,), 25)

    def step():
        with _blocked("off"), _few_channels(fast):
            conv2d_forward(x, w, b, pad=1, keep_cols=False)

    return step


_second_conv_step = _step_under(_without_blocked(_few_channels))


def _swap(fast: bool):
    """``Sequential``'s ``SWAP_RELU_POOL`` switch (a ReLU before max pooling run pooling first)."""
    from unittest import mock

    from ..nn import sequential

    return mock.patch.object(sequential, "SWAP_RELU_POOL", fast)


def _relu_pool(fast: bool):
    """A ReLU and the 2x2 max pooling after it, forward + backward, as ``Sequential`` runs them:
    in the written order (plain) or pooling first (fast)."""
    from ..nn import MaxPool2d, ReLU, Sequential

    x = data((32, 16, 48, 48), 26)
    pair = Sequential(ReLU(), MaxPool2d(2))
    dout = data((32, 16, 24, 24), 27)

    def step():
        with _swap(fast):
            pair.forward(x)
            pair.backward(dout)

    return step


_relu_pool_step = _step_under(_swap)


def _conv_dx(fast: bool):
    """The input gradient of the step's second convolution (16 -> 32 channels, 3x3, pad 1,
    24 x 24, batch 32) with its weight gradient: dx by dcols' GEMM + col2im, or by the direct
    kernel (``DIRECT_DX_MAX_FILTERS``)."""
    from unittest import mock

    from ..ops import conv, conv2d_backward, conv2d_forward

    x, w, b = data((32, 16, 24, 24), 28), data((32, 16, 3, 3), 29, 0.1), data((32,), 30)
    with _blocked("off"):
        _, cache = conv2d_forward(x, w, b, pad=1, keep_cols=False)
    dout = data((32, 32, 24, 24), 31)

    def step():
        limit = conv.DIRECT_DX_MAX_FILTERS if fast else 0
        with _blocked("off"), mock.patch.object(conv, "DIRECT_DX_MAX_FILTERS", limit):
            conv2d_backward(dout, cache)

    return step


_first_conv_step = _step_under(_without_blocked(lambda fast: _direct("auto" if fast else "off")))


def _relu(fast: bool):
    from ..ops import relu_forward
    from ..ops.basic import _masked_copy, relu_backward_plain

    _, cache = relu_forward(data((32, 16, 48, 48), 5))
    dout = data((32, 16, 48, 48), 6)
    if fast:
        return lambda: _masked_copy(dout, cache.positive)
    return lambda: relu_backward_plain(dout, cache)


def _relu_compiled(fast: bool):
    from ..ops import relu_backward, relu_forward

    x, dout = data((32, 16, 48, 48), 5), data((32, 16, 48, 48), 6)

    def step():
        with _passes("auto" if fast else "xp"):
            _, cache = relu_forward(x)
            relu_backward(dout, cache)

    return step


def _pool_backward(fast: bool):
    from ..ops import max_pool2d_backward, max_pool2d_forward

    out, cache = max_pool2d_forward(data((32, 16, 48, 48), 7), 2)
    dout = data(out.shape, 9)

    def step():
        with _passes("auto" if fast else "xp"):
            max_pool2d_backward(dout, cache)

    return step


def _pool(fast: bool):
    from ..ops import max_pool2d_backward, max_pool2d_forward, pool

    x = data((32, 16, 48, 48), 7)

    def step():  # both NumPy (the compiled loops are the next ideas)
        saved, pool.PHASES_ALWAYS = pool.PHASES_ALWAYS, not fast
        try:
            with _passes("xp"):
                out, cache = max_pool2d_forward(x, 2)
                max_pool2d_backward(np.ones_like(out), cache)
        finally:
            pool.PHASES_ALWAYS = saved

    return step


def _pool_forward(x_shape, ksize, stride):
    """Max pooling's forward: NumPy's running maximum over the offset views (plain) or the
    compiled window loop of ``tinyspp/kernels/passes.cpp`` (fast)."""
    def build(fast: bool):
        from ..ops import max_pool2d_forward

        x = data(x_shape, 18)

        def step():
            with _passes("auto" if fast else "xp"):
                max_pool2d_forward(x, ksize, stride)

        return step

    return build


def _spp(fast: bool):
    from ..ops import spp, spp_forward

    x = data((32, 256, 13, 13), 8)

    def step():
        saved, spp.NEST = spp.NEST, fast
        try:
            spp_forward(x, (6, 3, 2, 1), impl="xp")  # the array path (the kernel: next idea)
        finally:
            spp.NEST = saved

    return step


def _spp_kernel(fast: bool):
    """The SPP layer's forward on the array path (plain) or the region kernel, one region
    per image (fast)."""
    from ..ops import spp_forward

    x = data((32, 256, 13, 13), 8)
    return lambda: spp_forward(x, (6, 3, 2, 1), impl="cpu" if fast else "xp")


def _columns(which: str):
    """im2col or col2im of the training step's second convolution (16 -> 32 channels, 3x3,
    24 x 24 maps, batch 32): the NumPy code (plain) or the compiled loop (fast)."""
    def build(fast: bool):
        from ..ops.conv import col2im, im2col

        impl = "cpu" if fast else "xp"
        x = data((32, 16, 24, 24), 9)
        if which == "im2col":
            return lambda: im2col(x, 3, 3, 1, 1, impl=impl)
        cols = im2col(x, 3, 3, 1, 1)
        return lambda: col2im(cols, x.shape, 3, 3, 1, 1, impl=impl)

    return build


def _one_gemm(x_shape, w_shape):
    """A convolution's forward with a GEMM per image into its plane (plain) or one GEMM per
    piece and a transposing pass (fast), whatever ``ops.conv.ONE_GEMM_RATIO`` would pick."""
    def build(fast: bool):
        from ..ops import conv

        x, w, b = data(x_shape, 11), data(w_shape, 12), data(w_shape[:1], 13)

        def forward():
            saved = conv.ONE_GEMM_RATIO
            conv.ONE_GEMM_RATIO = 0 if fast else 1 << 30  # 0: always one GEMM per piece
            try:
                with _blocked("off"):  # im2col + GEMM, whose GEMMs this idea groups
                    conv.conv2d_forward(x, w, b, pad=1, keep_cols=False)
            finally:
                conv.ONE_GEMM_RATIO = saved

        return forward

    return build


def _sum_transposed(fast: bool):
    """The end of a convolution's backward (the layers benchmark's second shape, w(256, 96,
    5, 5)): the two image blocks' (2400, 256) weight-gradient parts summed and transposed to
    (256, 2400), in one band (NumPy's whole transposing copy) or in bands of
    ``TRANSPOSE_ROWS`` rows."""
    from unittest import mock

    from ..ops import conv

    parts = [data((2400, 256), 18), data((2400, 256), 19)]
    rows = conv.TRANSPOSE_ROWS if fast else 1 << 30

    def run():
        with mock.patch.object(conv, "TRANSPOSE_ROWS", rows):
            conv.sum_transposed(parts)

    return run


def _one_image_filters(fast: bool):
    """A first convolution of one image (the detector's: 3 -> 16 channels, 5x5, 240 x 320),
    forward, on one thread (plain: a batch of one image is one block) or with its filters
    split over tinyspp's threads (fast)."""
    from ..ops import conv2d_forward, dispatch

    x, w, b = data((1, 3, 240, 320), 20), data((16, 3, 5, 5), 21), data((16,), 22)

    def run():
        with dispatch.using_threads(dispatch.cpu_count() if fast else 1):
            conv2d_forward(x, w, b, pad=2)

    return run


def _threads_switch(fast: bool):
    from ..ops import dispatch

    return dispatch.using_threads(dispatch.cpu_count() if fast else 1)


_threads = _step_under(_threads_switch)


def _with_keep_cols(keep: bool):
    """One SGD step whose conv layers keep (``True``) or re-gather (``False``) the columns."""
    from ..nn import Conv2d

    net, opt, x, y = setup(48)
    for layer in net:
        if isinstance(layer, Conv2d):
            layer.keep_cols = keep
    return step_of(net, opt, x, y)


IDEAS = [
    ("ReLU backward x(32, 16, 48, 48): np.where -> one bitwise AND", _relu),
    ("ReLU fwd+bwd x(32, 16, 48, 48): NumPy's passes -> one compiled pass each", _relu_compiled),
    ("max-pool 2/2 bwd x(32, 16, 48, 48): index arrays + np.add.at -> compiled scatter",
     _pool_backward),
    ("max-pool 2/2 fwd+bwd x(32, 16, 48, 48): padded phase copy -> views of x", _pool),
    ("max-pool 3/2 fwd x(8, 96, 55, 55): running max over phase-split views -> compiled "
     "window loop", _pool_forward((8, 96, 55, 55), 3, 2)),
    ("max-pool 2/2 fwd x(32, 16, 48, 48): running max over views of x -> compiled window loop",
     _pool_forward((32, 16, 48, 48), 2, 2)),
    ("SPP (6, 3, 2, 1) fwd x(32, 256, 13, 13): every level scanned -> nested levels merged",
     _spp),
    ("SPP (6, 3, 2, 1) fwd x(32, 256, 13, 13): array path -> region kernel, one region per "
     "image", _spp_kernel),
    ("im2col x(32, 16, 24, 24) 3x3 pad 1: padded copy + strided view -> compiled loop",
     _columns("im2col")),
    ("col2im x(32, 16, 24, 24) 3x3 pad 1: 9 strided adds -> compiled loop",
     _columns("col2im")),
    ("conv fwd x(8, 256, 13, 13) w(384, 256, 3, 3) pad 1: a GEMM per image -> one per piece "
     "(2304-long columns, 169 positions: ONE_GEMM_RATIO picks it)",
     _one_gemm((8, 256, 13, 13), (384, 256, 3, 3))),
    ("conv fwd x(32, 32, 8, 8) w(64, 32, 3, 3) pad 1: a GEMM per image -> one per piece "
     "(288-long columns, 64 positions: ONE_GEMM_RATIO keeps a GEMM per image)",
     _one_gemm((32, 32, 8, 8), (64, 32, 3, 3))),
    ("conv fwd+bwd (no dx) x(32, 3, 48, 48) w(16, 3, 5, 5) pad 2: im2col + GEMM -> direct "
     "kernel", _first_conv),
    ("conv bwd w(256, 96, 5, 5): dw's two (2400, 256) parts summed and transposed in one band "
     "-> in bands of 64 rows", _sum_transposed),
    ("SGD step 32x3x48x48, blocked kernel off: direct kernel off (im2col + GEMM everywhere) -> "
     "on (conv1; conv2's forward)", _first_conv_step),
    ("conv fwd x(32, 16, 24, 24) w(32, 16, 3, 3) pad 1 (the step's conv2), blocked kernel off: "
     "im2col + GEMM -> direct kernel (its backward stays im2col + GEMM)", _second_conv),
    ("SGD step 32x3x48x48, the machine's threads, blocked kernel off: conv2's forward by im2col "
     "+ GEMM -> direct kernel", _second_conv_step),
    ("ReLU + max-pool 2/2 fwd+bwd x(32, 16, 48, 48): in the written order -> pooling first, "
     "ReLU on the pooled map", _relu_pool),
    ("SGD step 32x3x48x48, the machine's threads: ReLU, then pooling -> pooling, then ReLU",
     _relu_pool_step),
    ("conv bwd x(32, 16, 24, 24) w(32, 16, 3, 3) pad 1, blocked kernel off: dx by dcols' GEMM "
     "+ col2im -> by the direct kernel", _conv_dx),
    ("conv fwd+bwd x(8, 96, 27, 27) w(256, 96, 5, 5) pad 2: im2col + GEMM -> blocked kernel",
     _blocked_conv((8, 96, 27, 27), (256, 96, 5, 5), 2, 32)),
    ("conv fwd+bwd x(8, 256, 13, 13) w(384, 256, 3, 3) pad 1: im2col + GEMM -> blocked kernel",
     _blocked_conv((8, 256, 13, 13), (384, 256, 3, 3), 1, 36)),
    ("conv fwd+bwd x(32, 16, 24, 24) w(32, 16, 3, 3) pad 1 (the step's conv2): direct kernel "
     "forward and dx, dw by im2col + GEMM -> blocked kernel",
     _blocked_conv((32, 16, 24, 24), (32, 16, 3, 3), 1, 40)),
    ("conv fwd+bwd x(32, 32, 12, 12) w(64, 32, 3, 3) pad 1 (the step's conv3): im2col + GEMM "
     "-> blocked kernel", _blocked_conv((32, 32, 12, 12), (64, 32, 3, 3), 1, 44)),
    ("SGD step 32x3x48x48, the machine's threads: blocked kernel off -> on (conv2, conv3)",
     _blocked_step),
    ("detection features, one 120x144 image, 2000 windows, SPP-net at 3 scales: blocked "
     "kernel off -> on (conv3)", _detection_features("spp")),
    ("detection features, one 120x144 image, 2000 windows, R-CNN (warped 24x24 windows): "
     "blocked kernel off -> on (conv3)", _detection_features("rcnn")),
    ("SGD step 32x3x48x48: 1 thread + BLAS's own threads -> our threads, BLAS on 1 (one pool)",
     _threads),
    ("conv fwd one image x(1, 3, 240, 320) w(16, 3, 5, 5), direct kernel: one thread -> its "
     "filters split over the threads", _one_image_filters),
]
THREAD_IDEAS = (_threads, _one_image_filters, _second_conv_step, _relu_pool_step,
                _blocked_step)  # timed with
# the machine's threads, not one


def run(opts) -> list[Row]:
    rows = []
    rounds = getattr(opts, "rounds", None) or 3
    per = max(1, opts.repeats // rounds)
    cases = IDEAS + [("SGD step 32x3x48x48: conv columns kept -> re-gathered (memory)",
                      _with_keep_cols)]
    for label, build in cases:
        if build is _with_keep_cols:
            steps = [build(True), build(False)]  # "plain" = the columns kept (the old way)
        else:
            steps = [build(False), build(True)]
        times = [[], []]
        with contextlib.nullcontext() if build in THREAD_IDEAS else one_thread():
            for r in range(rounds):
                for t, fn in zip(times, steps):
                    t += times_ms(fn, per, warmup=1 if r == 0 else 0)
        plain, fast = (statistics.median(t) for t in times)
        rows.append(Row("ideas", f"{label}: plain", plain))
        rows.append(Row("ideas", f"{label}: fast", fast, note=f"{plain / fast:.2f}x"))
    return rows
