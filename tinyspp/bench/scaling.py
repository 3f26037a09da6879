"""What a second thread buys each piece of one SGD step (section ``scaling``).

The step of :mod:`tinyspp.bench.training` (batch 32, 3x32x32 and 3x48x48) run whole, again and
again, with a timer around every layer's forward and backward, the loss and the update: each
piece's median time inside real steps (the activations a layer reads were just written by the
layer before it, maybe on another core), once on one thread (BLAS and tinyspp's passes) and
once on every thread tinyspp uses. Where the profile section times each piece alone on one
thread, this one shows which pieces a second thread speeds up and which it does not. Rows come
in pairs, ``"<piece>: 1 thread"`` and ``"<piece>: <n> threads"``; nothing is measured when
tinyspp runs on one thread (``--threads 1``). No torch here.
"""

from __future__ import annotations

import statistics
import time

from .common import Row, one_thread
from .training import BATCH, setup

SIZES = (32, 48)
WARMUP = 3  # untimed steps first (scratch buffers, caches, the threads' first wake-up)


def step_pieces(size: int, steps: int) -> dict[str, float]:
    """Median ms of every piece of ``steps`` timed SGD steps at ``size`` px, in step order."""
    from ..nn import Conv2d
    from ..ops import softmax_cross_entropy

    net, opt, x, y = setup(size)
    names = [f"{i} {type(layer).__name__}" for i, layer in enumerate(net)]
    times: dict[str, list[float]] = {}

    def timed(name, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        times.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)
        return out

    for k in range(WARMUP + steps):
        if k == WARMUP:
            times.clear()
        h = x
        for name, layer in zip(names, net):
            h = timed(f"{name} forward", layer.forward, h)
        _, d = timed("loss softmax_cross_entropy", softmax_cross_entropy, h, y)
        for i in range(len(net) - 1, -1, -1):
            layer, extra = net[i], {}
            if i == 0 and isinstance(layer, Conv2d):
                extra = {"need_dx": False}  # as net.backward(..., input_grad=False)
            d = timed(f"{names[i]} backward", layer.backward, d, **extra)
        timed("SGD.step", opt.step)
    return {name: statistics.median(t) for name, t in times.items()}


def run(opts) -> list[Row]:
    from ..ops import dispatch

    threads = dispatch.num_threads() if hasattr(dispatch, "num_threads") else 1
    if getattr(opts, "gpu", False) or threads < 2:
        return []
    steps = max(5, opts.repeats)
    rows = []
    for size in SIZES:
        with one_thread():
            one = step_pieces(size, steps)
        many = step_pieces(size, steps)
        for name in one:
            label = f"{BATCH}x3x{size}x{size}: {name}"
            rows.append(Row("scaling", f"{label}: 1 thread", one[name]))
            rows.append(Row("scaling", f"{label}: {threads} threads", many[name],
                            note=f"{one[name] / many[name]:.2f}x"))
    return rows
