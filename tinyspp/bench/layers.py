"""Conv and max-pool layers, forward + backward, float32 on the CPU: tinyspp vs torch.

Workloads are the issue's (ZF-5-like conv1, conv2, conv3/4 shapes and pool1). torch runs
``torch.nn.functional`` plus an autograd ``backward`` on the same arrays, in the same process,
interleaved with ours, so the ratio is measured side by side.
"""

from __future__ import annotations

import numpy as np

from .common import Row, median_ms

# (x shape, w shape, pad): conv forward + backward
CONV = [
    ((16, 3, 64, 64), (32, 3, 5, 5), 2),
    ((8, 96, 27, 27), (256, 96, 5, 5), 2),
    ((8, 256, 13, 13), (384, 256, 3, 3), 1),
]
# (x shape, ksize, stride): max-pool forward + backward
POOL = [((8, 96, 55, 55), 3, 2)]


def _shape(shape, quick):
    return (min(shape[0], 2),) + shape[1:] if quick else shape


def _conv_ours(x, w, b, pad):
    from ..ops import conv2d_backward, conv2d_forward

    def step():
        out, cache = conv2d_forward(x, w, b, pad=pad)
        conv2d_backward(np.ones_like(out), cache)

    return step


def _conv_torch(torch, x, w, b, pad):
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))

    def step():
        out = torch.nn.functional.conv2d(tx, tw, tb, padding=pad)
        out.backward(torch.ones_like(out))

    return step


def _pool_ours(x, k, s):
    from ..ops import max_pool2d_backward, max_pool2d_forward

    def step():
        out, cache = max_pool2d_forward(x, k, stride=s)
        max_pool2d_backward(np.ones_like(out), cache)

    return step


def _pool_torch(torch, x, k, s):
    tx = torch.from_numpy(x).requires_grad_()

    def step():
        out = torch.nn.functional.max_pool2d(tx, k, s)
        out.backward(torch.ones_like(out))

    return step


def _time_pair(ours, theirs, repeats):
    """Median ms of ``ours`` and ``theirs``, alternating rounds so load hits both alike."""
    rounds = 3
    per = max(1, repeats // rounds)
    a, b = [], []
    for _ in range(rounds):
        a.append(median_ms(ours, repeats=per))
        if theirs is not None:
            b.append(median_ms(theirs, repeats=per))
    return float(np.median(a)), (float(np.median(b)) if b else None)


def run(opts) -> list[Row]:
    rng = np.random.default_rng(0)
    torch = opts.torch
    threads = f"; torch threads {torch.get_num_threads()}" if torch else ""
    rows = []
    for x_shape, w_shape, pad in CONV:
        x_shape = _shape(x_shape, opts.quick)
        x = rng.standard_normal(x_shape, dtype=np.float32)
        w = rng.standard_normal(w_shape, dtype=np.float32) * 0.05
        b = np.zeros(w_shape[0], np.float32)
        ours, theirs = _time_pair(_conv_ours(x, w, b, pad),
                                  torch and _conv_torch(torch, x, w, b, pad), opts.repeats)
        rows.append(Row("layers", f"conv fwd+bwd x{x_shape} w{w_shape} pad {pad}", ours, theirs,
                        "im2col + 1 GEMM" + threads))
    for x_shape, k, s in POOL:
        x_shape = _shape(x_shape, opts.quick)
        x = rng.standard_normal(x_shape, dtype=np.float32)
        ours, theirs = _time_pair(_pool_ours(x, k, s), torch and _pool_torch(torch, x, k, s),
                                  opts.repeats)
        rows.append(Row("layers", f"max-pool {k}/{s} fwd+bwd x{x_shape}", ours, theirs,
                        "running max over k*k views" + threads))
    return rows
