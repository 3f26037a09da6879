"""Conv, max-pool and SPP layers, forward + backward, float32 on the CPU: tinyspp vs torch.

Workloads are the issue's: ZF-5-like conv1, conv2 and conv3/4 shapes, pool1 (3/2) and the small
SPP-net trunk's 2/2 pool, and the SPP layer (levels (6, 3, 2, 1)) on conv5-sized maps. torch runs
``torch.nn.functional`` plus an autograd ``backward`` on the same data (built from the same seed)
in a process of its own (:class:`tinyspp.bench.common.Peer`), alternating with ours, so neither
library's thread pool competes with the other's.
"""

from __future__ import annotations

import numpy as np

from .common import Row, blas_build, side_by_side

# (x shape, w shape, pad): conv forward + backward
CONV = [
    ((16, 3, 64, 64), (32, 3, 5, 5), 2),
    ((8, 96, 27, 27), (256, 96, 5, 5), 2),
    ((8, 256, 13, 13), (384, 256, 3, 3), 1),
]
# the small SPP-net's im2col convolutions in its training step (batch 32 at 32 and 48 px; its
# first layer runs the direct kernel): where the step's gap to torch lies
STEP_CONV = [
    ((32, 16, 16, 16), (32, 16, 3, 3), 1, "conv2 of the 32 px step"),
    ((32, 32, 8, 8), (64, 32, 3, 3), 1, "conv3 of the 32 px step"),
    ((32, 16, 24, 24), (32, 16, 3, 3), 1, "conv2 of the 48 px step"),
    ((32, 32, 12, 12), (64, 32, 3, 3), 1, "conv3 of the 48 px step"),
]
# (x shape, ksize, stride): max-pool forward + backward
POOL = [((8, 96, 55, 55), 3, 2), ((32, 16, 32, 32), 2, 2)]
# x shape: SPP forward + backward
SPP_LEVELS = (6, 3, 2, 1)
SPP = [(32, 256, 13, 13), (32, 256, 10, 10)]


def _shape(shape, quick):
    return (min(shape[0], 2),) + tuple(shape[1:]) if quick else tuple(shape)


def data(shape, seed, scale=1.0):
    """float32 standard-normal data of ``shape`` from ``seed`` (the same on both sides)."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32) * np.float32(scale)


def conv_data(x_shape, w_shape):
    return data(x_shape, 1), data(w_shape, 2, 0.05), np.zeros(w_shape[0], np.float32)


# --- our steps -------------------------------------------------------------------------------

def conv_ours(x_shape, w_shape, pad):
    from ..ops import conv2d_backward, conv2d_forward

    x, w, b = conv_data(x_shape, w_shape)

    def step():
        out, cache = conv2d_forward(x, w, b, pad=pad)
        conv2d_backward(np.ones_like(out), cache)

    return step


def gemm_operands(x_shape, w_shape, pad):
    """``(w2, cols, d)``: the operands of a conv's three GEMMs, as ``conv2d_backward`` forms them
    (``w2 (F, C*k*k)``, ``cols (C*k*k, N*oh*ow)``, ``d (N*oh*ow, F)``, a row per position)."""
    from ..ops.conv import conv_output_size, im2col

    x, w, _ = conv_data(x_shape, w_shape)
    F, _, k, _ = w_shape
    N, _, H, W = x_shape
    positions = N * conv_output_size(H, k, 1, pad) * conv_output_size(W, k, 1, pad)
    return w.reshape(F, -1), im2col(x, k, k, 1, pad), np.ones((positions, F), np.float32)


def conv_gemms_ours(x_shape, w_shape, pad):
    """The three GEMMs of one conv forward + backward alone, whole batch, BLAS's own threads:
    what im2col + GEMM cannot go below (``dw`` and ``dcols`` as ``conv2d_backward`` forms them)."""
    w2, cols, d = gemm_operands(x_shape, w_shape, pad)

    def step():
        w2 @ cols
        cols @ d
        w2.T @ d.T

    return step


def pool_ours(x_shape, k, s):
    from ..ops import max_pool2d_backward, max_pool2d_forward

    x = data(x_shape, 3)

    def step():
        out, cache = max_pool2d_forward(x, k, stride=s)
        max_pool2d_backward(np.ones_like(out), cache)

    return step


def spp_ours(x_shape):
    from ..ops import spp_backward, spp_forward

    x = data(x_shape, 4)

    def step():
        out, cache = spp_forward(x, SPP_LEVELS)
        spp_backward(np.ones_like(out), cache)

    return step


# --- torch's steps (built in the peer process by name) --------------------------------------

def conv_torch(torch, x_shape, w_shape, pad):
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in conv_data(x_shape, w_shape))

    def step():
        out = torch.nn.functional.conv2d(tx, tw, tb, padding=pad)
        out.backward(torch.ones_like(out))

    return step


def conv_gemms_torch(torch, x_shape, w_shape, pad):
    """The same three products by ``torch.mm`` (torch's BLAS) on the same matrices: the two
    libraries' GEMMs side by side, nothing else."""
    w2, cols, d = (torch.from_numpy(a) for a in gemm_operands(x_shape, w_shape, pad))

    def step():
        torch.mm(w2, cols)
        torch.mm(cols, d)
        torch.mm(w2.T, d.T)

    return step


def pool_torch(torch, x_shape, k, s):
    tx = torch.from_numpy(data(x_shape, 3)).requires_grad_()

    def step():
        out = torch.nn.functional.max_pool2d(tx, k, s)
        out.backward(torch.ones_like(out))

    return step


def spp_torch(torch, x_shape):
    """torch's SPP: ``adaptive_max_pool2d`` per level, flattened and concatenated."""
    tx = torch.from_numpy(data(x_shape, 4)).requires_grad_()
    N = x_shape[0]

    def step():
        pooled = [torch.nn.functional.adaptive_max_pool2d(tx, n).reshape(N, -1)
                  for n in SPP_LEVELS]
        out = torch.cat(pooled, dim=1)
        out.backward(torch.ones_like(out))

    return step


def _spec(builder, *args):
    return (__name__, builder, [list(a) if isinstance(a, tuple) else a for a in args])


def blas_name() -> str:
    """NumPy's BLAS library in a few words (``OpenBLAS``), for the notes of the GEMM rows."""
    build = blas_build() or "NumPy's BLAS"
    return "OpenBLAS" if build.startswith("openblas") else build.split(" (")[0]


def _conv_method(x_shape, w_shape, pad: int) -> str:
    """What ``conv2d_forward`` runs on this shape: the blocked or the direct kernel, or
    im2col + GEMM."""
    try:
        from ..ops.conv import _use_direct
    except ImportError:  # the "before" tree of docs/performance.md: im2col + GEMM only
        return "im2col + GEMM"
    from ..ops import conv

    x, w = np.empty((1, *x_shape[1:]), np.float32), np.empty(w_shape, np.float32)
    if hasattr(conv, "_use_blocked") and conv._use_blocked(x, w, 1, pad):
        return "blocked kernel (no columns)"
    if not _use_direct(x, w, 1):
        return "im2col + GEMM"
    if x_shape[1] <= getattr(conv, "DIRECT_DW_MAX_CHANNELS", x_shape[1]):  # older trees: all
        return "direct kernel (no columns)"
    return "direct kernel forward, im2col + GEMM backward"


def run(opts) -> list[Row]:
    rows = []
    for x_shape, w_shape, pad in CONV:
        x_shape = _shape(x_shape, opts.quick)
        t = side_by_side(conv_ours(x_shape, w_shape, pad),
                         _spec("conv_torch", x_shape, w_shape, pad), opts)
        rows.append(Row("layers", f"conv fwd+bwd x{x_shape} w{tuple(w_shape)} pad {pad}", t[0],
                        t[1], _conv_method(x_shape, w_shape, pad), torch_inproc_ms=t[2]))
    for x_shape, w_shape, pad in CONV:  # the bound: the same GEMMs with nothing around them
        x_shape = _shape(x_shape, opts.quick)
        t = side_by_side(conv_gemms_ours(x_shape, w_shape, pad),
                         _spec("conv_torch", x_shape, w_shape, pad), opts)
        rows.append(Row("layers", f"conv x{x_shape} w{tuple(w_shape)}: its 3 GEMMs alone", t[0],
                        t[1], "OpenBLAS, whole batch; torch: its whole conv fwd+bwd",
                        torch_inproc_ms=t[2]))
    for x_shape, w_shape, pad, label in STEP_CONV:  # the small SPP-net's, as in its step
        x_shape = _shape(x_shape, opts.quick)
        t = side_by_side(conv_ours(x_shape, w_shape, pad),
                         _spec("conv_torch", x_shape, w_shape, pad), opts)
        rows.append(Row("layers", f"conv fwd+bwd x{x_shape} w{tuple(w_shape)} pad {pad}", t[0],
                        t[1], f"{label}; {_conv_method(x_shape, w_shape, pad)}",
                        torch_inproc_ms=t[2]))
    for x_shape, w_shape, pad in CONV + [c[:3] for c in STEP_CONV]:  # the BLAS libraries alone
        x_shape = _shape(x_shape, opts.quick)
        t = side_by_side(conv_gemms_ours(x_shape, w_shape, pad),
                         _spec("conv_gemms_torch", x_shape, w_shape, pad), opts)
        rows.append(Row("layers", f"GEMMs of conv x{x_shape} w{tuple(w_shape)}: np.matmul vs "
                        "torch.mm", t[0], t[1], f"{blas_name()} vs torch's BLAS, same matrices",
                        torch_inproc_ms=t[2]))
    for x_shape, k, s in POOL:
        x_shape = _shape(x_shape, opts.quick)
        t = side_by_side(pool_ours(x_shape, k, s), _spec("pool_torch", x_shape, k, s), opts)
        how = "reshape + reduce" if k == s else "running max over k*k views"
        rows.append(Row("layers", f"max-pool {k}/{s} fwd+bwd x{x_shape}", t[0], t[1], how,
                        torch_inproc_ms=t[2]))
    for x_shape in SPP:
        x_shape = _shape(x_shape, opts.quick)
        t = side_by_side(spp_ours(x_shape), _spec("spp_torch", x_shape), opts)
        rows.append(Row("layers", f"SPP {SPP_LEVELS} fwd+bwd x{x_shape}", t[0], t[1],
                        "channel-last, width then height; torch: adaptive_max_pool2d per level",
                        torch_inproc_ms=t[2]))
    return rows
