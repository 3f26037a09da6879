"""GPU benchmark of the pyramid-pooling kernels (``python -m tinyspp.bench --gpu``).

Workloads (float32, max pooling, levels (6, 3, 2, 1)): image SPP forward and backward on
x(256, 256, 13, 13) and x(64, 256, 60, 80); region SPP forward and backward with 2000 RoIs on
features(1, 256, 38, 50). Each is timed through the ops with ``impl="cuda"`` (the CUDA kernels)
and ``impl="xp"`` (the generic CuPy path) in the same run, with CUDA events, medians of repeats.

Effective bandwidth = bytes that must move / kernel time: the input read once (for RoIs: the
cells inside the union of the RoIs), plus outputs (values and int64 argmax) for forward; ``dout``
and argmax read plus ``dx`` written for backward. It is compared with a device-to-device copy of
a buffer the size of the large map (read + write), measured in the same run.

Without a GPU the section prints one line saying so and returns no rows: no number is invented.
"""

from __future__ import annotations

import statistics
from functools import partial

import numpy as np

from .. import backend
from .common import Row
from .pyramid import random_rois

LEVELS = (6, 3, 2, 1)
IMAGE_SHAPES = ((256, 256, 13, 13), (64, 256, 60, 80))
ROI_SHAPE = (1, 256, 38, 50)
NUM_ROIS = 2000
KERNEL_IMPL = "cuda"  # the kernel path's impl (tests run the bookkeeping with "emulate")
IMPLS = ("kernel", "xp")  # the two contenders: the kernel path (KERNEL_IMPL) and the xp path


def event_ms(cp, fn, repeats: int) -> float:
    """Median GPU time of ``fn()`` in ms, between CUDA events (one warm-up call first)."""
    fn()
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(repeats):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end))
    return statistics.median(times)


def covered_cells(rois: np.ndarray, shape) -> int:
    """Number of (image, y, x) cells inside at least one RoI."""
    N, _, H, W = shape
    mask = np.zeros((N, H, W), dtype=bool)
    for b, x0, y0, x1, y1 in rois:
        mask[b, y0:y1 + 1, x0:x1 + 1] = True
    return int(mask.sum())


def _row(workload, ms, nbytes, copy_gbps):
    """A Row for the kernel path, with the xp time, speed-up and bandwidth in the note."""
    gbps = nbytes / ms["kernel"] / 1e6
    note = (f"xp path {ms['xp']:.2f} ms, speed-up {ms['xp'] / ms['kernel']:.1f}x; "
            f"{gbps:.0f} GB/s = {100 * gbps / copy_gbps:.0f}% of copy ({copy_gbps:.0f} GB/s)")
    return Row("gpu", workload, ms["kernel"], None, note)


def _copy(cp, shape, repeats):
    """Time and bandwidth (read + write) of a device-to-device copy of a float32 ``shape``."""
    src = cp.empty(shape, dtype=cp.float32)
    dst = cp.empty_like(src)
    ms = event_ms(cp, partial(cp.copyto, dst, src), repeats)
    return ms, 2 * src.nbytes / ms / 1e6


def _image_rows(cp, shape, rng, repeats, copy_gbps):
    from ..ops.spp import spp_backward, spp_forward

    x = cp.asarray(rng.standard_normal(shape, dtype=np.float32))
    ms, caches = {}, {}
    for impl in IMPLS:
        run = KERNEL_IMPL if impl == "kernel" else impl
        ms[impl] = event_ms(cp, partial(spp_forward, x, LEVELS, impl=run), repeats)
        out, caches[impl] = spp_forward(x, LEVELS, impl=run)
    rows = [_row(f"spp fwd x{shape}", ms, x.nbytes + out.nbytes + out.size * 8, copy_gbps)]
    dout = cp.asarray(rng.standard_normal(out.shape, dtype=np.float32))
    for impl in IMPLS:
        ms[impl] = event_ms(cp, partial(spp_backward, dout, caches[impl]), repeats)
    rows.append(_row(f"spp bwd x{shape}", ms, dout.nbytes + dout.size * 8 + x.nbytes, copy_gbps))
    return rows


def _roi_rows(cp, rng, repeats, copy_gbps):
    from ..ops.roi import roi_spp_backward, roi_spp_forward

    features = cp.asarray(rng.standard_normal(ROI_SHAPE, dtype=np.float32))
    N, _, H, W = ROI_SHAPE
    rois_host = random_rois(np.random.default_rng(0), NUM_ROIS, N, H, W)  # as the CPU bench
    # host rois, as tinyspp.detect passes them: validated on the host, one copy to the device
    # (CuPy rois would add a device-to-host copy, a sync, to every timed forward)
    rois = rois_host
    ms, caches = {}, {}
    for impl in IMPLS:
        run = KERNEL_IMPL if impl == "kernel" else impl
        ms[impl] = event_ms(cp, partial(roi_spp_forward, features, rois, LEVELS, impl=run),
                            repeats)
        out, caches[impl] = roi_spp_forward(features, rois, LEVELS, impl=run)
    read = covered_cells(rois_host, ROI_SHAPE) * ROI_SHAPE[1] * features.itemsize
    label = f"roi fwd {NUM_ROIS} RoIs on {ROI_SHAPE}"
    rows = [_row(label, ms, read + out.nbytes + out.size * 8, copy_gbps)]
    dout = cp.asarray(rng.standard_normal(out.shape, dtype=np.float32))
    for impl in IMPLS:
        ms[impl] = event_ms(cp, partial(roi_spp_backward, dout, caches[impl]), repeats)
    nbytes = dout.nbytes + dout.size * 8 + features.nbytes
    rows.append(_row(label.replace("fwd", "bwd"), ms, nbytes, copy_gbps))
    return rows


def run(opts) -> list[Row]:
    """The rows above on the current CUDA device; ``[]`` (and one printed line) without one."""
    if not backend.gpu_available():
        reason = "CuPy is not installed" if backend._cupy() is None else "no CUDA device answers"
        print(f"# gpu: no GPU ({reason}); no GPU numbers measured")
        return []
    cp = backend._cupy()
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    print(f"# gpu: {name}, CuPy {cp.__version__}; CUDA-event medians of {opts.repeats} repeats")
    rng = np.random.default_rng(0)
    copy_ms, copy_gbps = _copy(cp, IMAGE_SHAPES[-1], opts.repeats)
    rows = [Row("gpu", f"device-to-device copy {IMAGE_SHAPES[-1]} f32", copy_ms, None,
                f"{copy_gbps:.0f} GB/s (read + write)")]
    for shape in IMAGE_SHAPES:
        rows += _image_rows(cp, shape, rng, opts.repeats, copy_gbps)
    rows += _roi_rows(cp, rng, opts.repeats, copy_gbps)
    return rows


def render_results(results_dir) -> str:
    """Markdown for docs/kernels.md from ``results/gpu.json`` (written by ``make gpu-check``):
    the device, the test summary and the benchmark table; without the file, a line saying that
    no GPU run has been recorded (``apps.publish`` renderer ``gpu.check``)."""
    import json
    from pathlib import Path

    from .common import format_table, rows_from_json

    path = Path(results_dir) / "gpu.json"
    if not path.exists():
        return ("*No GPU run recorded yet: no GPU machine was available where this was written.* "
                "`make gpu-check` on a CUDA machine writes `results/gpu.json`; "
                "`python -m tinyspp.apps.publish` then fills this block.\n")
    record = json.loads(path.read_text())
    rows = rows_from_json(record.get("rows", []))
    head = (f"`{record.get('command', '?')}`, started {record.get('started', '?')}, "
            f"versions {record.get('versions', {})}:\n\n")
    return head + (format_table(rows) if rows else "*(the run recorded no GPU rows)*") + "\n"
