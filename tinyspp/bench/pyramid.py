"""SPP and region SPP, forward + backward, float32 on the CPU.

* Image SPP, levels (6, 3, 2, 1), on conv5-sized maps x(32, 256, 13, 13) and x(32, 256, 10, 10)
  against torch: ``adaptive_max_pool2d`` per level, flatten, concatenate, autograd backward.
* Region SPP: 2000 RoIs on a (1, 256, 38, 50) map (a ~600 x 800 image at stride 16), both CPU
  paths (the compiled kernel ``impl="cpu"``, what ``"auto"`` picks when a C++ compiler is
  present, and the NumPy sparse-table path ``impl="xp"``) against the straightforward per-RoI
  Python loop over ``spp_forward``/``spp_backward`` (the oracle of the tests) and, when torch is
  installed, the same per-RoI loop in torch.

Rounds alternate between the contenders so background load hits both alike. torch runs image
SPP with its default intra-op threads and with one thread, and the faster is reported (on a
busy 2-core machine its thread pool can be several times slower); its per-RoI loop runs with
one thread (each op is tiny; threads only add synchronisation). tinyspp is single-threaded
(NumPy, and the compiled region kernel).
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


def proposal_rois(rng, R, H, W, stride=16, objects=40, jitter=0.08):
    """``R`` image-0 RoIs from proposal-like pixel boxes mapped to cells by the paper's rule.

    Proposals cluster around objects (selective search merges regions into many near-identical
    windows): ``objects`` boxes with log-uniform sides 32..600 px on an ``H*stride x W*stride``
    image, each proposal one of them with corners jittered by ``jitter`` of its size. After
    mapping to the stride-16 map many coincide, which de-duplication exploits.
    """
    from ..detect.geometry import image_to_feature_boxes

    Hp, Wp = H * stride, W * stride
    size = np.minimum(np.exp(rng.uniform(np.log(32), np.log(600), (objects, 2))), [Wp, Hp])
    corner = rng.uniform(0, 1, (objects, 2)) * ([Wp, Hp] - size)
    pick = rng.integers(0, objects, R)
    lo = corner[pick] + rng.normal(0, jitter, (R, 2)) * size[pick]
    hi = corner[pick] + size[pick] + rng.normal(0, jitter, (R, 2)) * size[pick]
    lo, hi = np.clip(lo, 0, [Wp - 1, Hp - 1]), np.clip(hi, 0, [Wp - 1, Hp - 1])
    boxes = np.concatenate([np.minimum(lo, hi), np.maximum(lo, hi)], axis=1)
    cells = image_to_feature_boxes(boxes, stride, (H, W), method="paper")
    return np.concatenate([np.zeros((R, 1), np.int64), cells], axis=1)


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


def region_impls():
    """The CPU paths of region SPP to time: the compiled kernel (when a C++ compiler is here)
    and the NumPy sparse-table path."""
    from ..kernels import cpu

    impls = [("cpu", "compiled CPU kernel")] if cpu.available() else []
    return impls + [("xp", "NumPy path")]


def _roi_ours(features, rois, dout, impl="auto"):
    from ..ops import roi_spp_backward, roi_spp_forward

    def step():
        out, cache = roi_spp_forward(features, rois, LEVELS, impl=impl)
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


class _threads:
    """Context manager: torch with ``n`` intra-op threads, restored afterwards."""

    def __init__(self, torch, n):
        self.torch, self.n = torch, n

    def __enter__(self):
        self.saved = self.torch.get_num_threads()
        self.torch.set_num_threads(self.n or self.saved)

    def __exit__(self, *exc):
        self.torch.set_num_threads(self.saved)


def _in_threads(torch, n, fn):
    def step():
        with _threads(torch, n):
            fn()

    return step


def _region_rows(features, rois, dout, where, repeats, torch, rounds):
    """Each CPU path of region SPP and the per-RoI loop (and torch's loop), alternating rounds:
    the loop takes seconds, so it runs once per round."""
    impls = region_impls()
    fast = [_roi_ours(features, rois, dout, impl) for impl, _ in impls]
    loops = [_roi_loop(features, rois, dout)]
    if torch:
        loops.append(_in_threads(torch, 1, _roi_torch(torch, features, rois)))
    for fn in fast:
        fn()  # warm-up (and the one-off compilation of the CPU kernel)
    times = [[] for _ in fast + loops]
    for _ in range(rounds):
        # one untimed call per round: the first call after the seconds-long loop pays for
        # faulting in a few hundred MB of fresh output memory (on this project's VMs ~3x the
        # steady-state time, which a detector pooling image after image does not see)
        for t, fn in zip(times, fast):
            t.append(median_ms(fn, repeats=max(1, repeats // rounds), warmup=1))
        for t, fn in zip(times[len(fast):], loops):
            t.append(median_ms(fn, repeats=1, warmup=0))
    med = [float(np.median(t)) for t in times]
    looped = med[len(fast)]
    theirs = med[len(fast) + 1] if torch else None
    rows = [Row("pyramid", f"region SPP fwd+bwd ({label}, impl={impl!r}), {where}", ms, theirs,
                f"vs per-RoI spp loop {looped:.0f} ms: {looped / ms:.1f}x faster"
                + ("; torch = per-RoI adaptive_max_pool2d loop" if torch else ""))
            for (impl, label), ms in zip(impls, med)]
    rows.append(Row("pyramid", f"per-RoI spp_forward loop (baseline), {where}", looped, None,
                    "the test oracle"))
    return rows


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
        fns = [_spp_ours(x, dout)]
        if torch:
            fns += [_in_threads(torch, n, _spp_torch(torch, x)) for n in (None, 1)]
        for fn in fns:
            fn()  # warm-up
        times = _alternate(fns, opts.repeats)
        rows.append(Row("pyramid", f"SPP {LEVELS} fwd+bwd x{shape}", times[0],
                        min(times[1:]) if torch else None,
                        "channel-last, width then height" + (
                            f"; torch default threads {times[1]:.1f} ms, 1 thread "
                            f"{times[2]:.1f} ms" if torch else "")))

    R = min(ROI_COUNT, 200) if opts.quick else ROI_COUNT
    features = rng.standard_normal(ROI_FEATURES, dtype=np.float32)
    dout = np.ones((R, ROI_FEATURES[1] * sum(n * n for n in LEVELS)), np.float32)
    rois = random_rois(rng, R, *ROI_FEATURES[:1], *ROI_FEATURES[2:])
    rows += _region_rows(features, rois, dout, f"{R} RoIs on x{ROI_FEATURES}", opts.repeats,
                         torch, rounds=3)
    # proposal-like RoIs: the same count, but many map to identical cells (de-duplication)
    rois = proposal_rois(rng, R, *ROI_FEATURES[2:])
    distinct = len(np.unique(rois, axis=0))
    rows += _region_rows(features, rois, dout, f"{R} proposal-like RoIs ({distinct} distinct) "
                         f"on x{ROI_FEATURES}", opts.repeats, None, rounds=2)
    return rows


def render_results(results_dir) -> str:
    """Markdown for docs/kernels.md: the region-pooling rows of ``results/bench_pyramid.json``
    (``python -m tinyspp.bench --only pyramid --out results/bench_pyramid.json``), with the
    command, start time and load (``apps.publish`` renderer ``bench.pyramid``)."""
    import json
    from pathlib import Path

    from .common import format_table, rows_from_json

    path = Path(results_dir) / "bench_pyramid.json"
    if not path.exists():
        return ("*Not measured yet:* run `python -m tinyspp.bench --only pyramid --out "
                "results/bench_pyramid.json`, then `python -m tinyspp.apps.publish`.\n")
    record = json.loads(path.read_text())
    rows = [r for r in rows_from_json(record["rows"]) if "RoI" in r.workload]
    load = record.get("load_average", {})
    return (f"`{record['command']}` (started {record['started']}, {record['seconds']} s; "
            f"load average {load.get('start')} at the start, {load.get('end')} at the end; "
            f"{record['machine']['cpu']}, numpy threads {record['threads']['numpy']}):\n\n"
            + format_table(rows) + "\n")
