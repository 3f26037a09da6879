"""SPP and region SPP, forward + backward, float32 on the CPU.

* Image SPP, levels (6, 3, 2, 1), on conv5-sized maps x(32, 256, 13, 13) and x(32, 256, 10, 10)
  against torch: ``adaptive_max_pool2d`` per level, flatten, concatenate, autograd backward.
* Region SPP: 2000 RoIs on a (1, 256, 38, 50) map (a ~600 x 800 image at stride 16) against the
  straightforward per-RoI Python loop over ``spp_forward``/``spp_backward`` (the oracle of the
  tests) and, when torch is installed, the same per-RoI loop in torch.

Rounds alternate between the contenders so background load hits both alike.
"""

from __future__ import annotations

import numpy as np

from .common import Row, median_ms

LEVELS = (6, 3, 2, 1)
SPP_SHAPES = [(32, 256, 13, 13), (32, 256, 10, 10)]
ROI_FEATURES = (1, 256, 38, 50)
ROI_COUNT = 2000


def random_rois(rng, R, N, H, W):
    """``R`` RoIs ``[b, x0, y0, x1, y1]`` with corners drawn uniformly over the map's cells."""
    xs, ys = rng.integers(0, W, (2, R)), rng.integers(0, H, (2, R))
    return np.stack([rng.integers(0, N, R), xs.min(0), ys.min(0), xs.max(0), ys.max(0)], axis=1)


def _spp_ours(x, dout):
    from ..ops import spp_backward, spp_forward

    def step():
        out, cache = spp_forward(x, LEVELS)
        spp_backward(dout, cache)

    return step


def _spp_torch(torch, x):
    tx = torch.from_numpy(x).requires_grad_()
    N = x.shape[0]

    def step():
        pooled = [torch.nn.functional.adaptive_max_pool2d(tx, n).reshape(N, -1) for n in LEVELS]
        out = torch.cat(pooled, dim=1)
        out.backward(torch.ones_like(out))

    return step


def _roi_ours(features, rois, dout):
    from ..ops import roi_spp_backward, roi_spp_forward

    def step():
        out, cache = roi_spp_forward(features, rois, LEVELS)
        roi_spp_backward(dout, cache)

    return step


def _roi_loop(features, rois, dout):
    """The baseline: one ``spp_forward`` + ``spp_backward`` per RoI."""
    from ..ops import spp_backward, spp_forward

    def step():
        dfeatures = np.zeros_like(features)
        for r, (b, x0, y0, x1, y1) in enumerate(rois):
            crop = (slice(b, b + 1), slice(None), slice(y0, y1 + 1), slice(x0, x1 + 1))
            out, cache = spp_forward(features[crop], LEVELS)
            dfeatures[crop] += spp_backward(dout[r:r + 1], cache)

    return step


def _roi_torch(torch, features, rois):
    """The fair torch analogue: a per-RoI loop of adaptive_max_pool2d (torch has no region SPP)."""
    tf = torch.from_numpy(features).requires_grad_()

    def step():
        outs = []
        for b, x0, y0, x1, y1 in rois.tolist():
            crop = tf[b:b + 1, :, y0:y1 + 1, x0:x1 + 1]
            outs += [torch.nn.functional.adaptive_max_pool2d(crop, n).reshape(1, -1)
                     for n in LEVELS]
        out = torch.cat(outs, dim=1)
        out.backward(torch.ones_like(out))

    return step


def _alternate(fns, repeats, rounds=3):
    """Median ms of each callable, measured in alternating rounds."""
    per = max(1, repeats // rounds)
    times = [[] for _ in fns]
    for _ in range(rounds):
        for t, fn in zip(times, fns):
            t.append(median_ms(fn, repeats=per, warmup=0))
    return [float(np.median(t)) for t in times]


def run(opts) -> list[Row]:
    rng = np.random.default_rng(0)
    torch = opts.torch
    rows = []
    for shape in SPP_SHAPES:
        if opts.quick:
            shape = (4,) + shape[1:]
        x = rng.standard_normal(shape, dtype=np.float32)
        dout = np.ones((shape[0], shape[1] * sum(n * n for n in LEVELS)), np.float32)
        fns = [_spp_ours(x, dout)] + ([_spp_torch(torch, x)] if torch else [])
        fns[0]()  # warm-up
        times = _alternate(fns, opts.repeats)
        rows.append(Row("pyramid", f"SPP {LEVELS} fwd+bwd x{shape}", times[0],
                        times[1] if torch else None, "channel-last, width then height"))

    R = 200 if opts.quick else ROI_COUNT
    features = rng.standard_normal(ROI_FEATURES, dtype=np.float32)
    rois = random_rois(rng, R, *ROI_FEATURES[:1], *ROI_FEATURES[2:])
    dout = np.ones((R, ROI_FEATURES[1] * sum(n * n for n in LEVELS)), np.float32)
    fast, loop = _roi_ours(features, rois, dout), _roi_loop(features, rois, dout)
    fast()  # warm-up
    # the loop takes seconds: one timed run per round, three rounds, alternating with ours
    fns = [fast, loop] + ([_roi_torch(torch, features, rois)] if torch else [])
    times = [[] for _ in fns]
    for _ in range(3):
        times[0].append(median_ms(fast, repeats=max(1, opts.repeats // 3), warmup=0))
        for t, fn in zip(times[1:], fns[1:]):
            t.append(median_ms(fn, repeats=1, warmup=0))
    ours, looped = float(np.median(times[0])), float(np.median(times[1]))
    theirs = float(np.median(times[2])) if torch else None
    where = f"{R} RoIs on x{ROI_FEATURES}"
    rows.append(Row("pyramid", f"region SPP fwd+bwd, {where}", ours, theirs,
                    f"vs per-RoI spp loop {looped:.0f} ms: {looped / ours:.1f}x faster; "
                    "torch = per-RoI adaptive_max_pool2d loop"))
    rows.append(Row("pyramid", f"per-RoI spp_forward loop (baseline), {where}", looped, None,
                    "the test oracle"))
    return rows
