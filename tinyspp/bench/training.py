"""Training throughput and memory of the small SPP-net: one SGD step (forward, backward, update)
on a batch of 32 images at two input sizes, tinyspp vs the same network built in torch (CPU).

Memory: the peak of array memory live during one step (after a warm-up step), counting
everything the training holds -- parameters, gradients, momentum, the batch, the layers' caches and
the step's temporaries. tinyspp: ``tracemalloc`` (NumPy reports every array buffer to it), from
before the network is built. torch: the bytes of its parameters, gradients, momentum buffers and
batch, plus the highest running total of the allocations and frees that ``torch.profiler``
(``profile_memory=True``) records during the step.
"""

from __future__ import annotations

import numpy as np

from .common import Row, heap_status, median_ms, side_by_side

BATCH = 32
SIZES = (32, 48)
NUM_CLASSES = 10
LEVELS = (4, 2, 1)
MIB = 2.0 ** 20


def batch(size: int):
    """The float32 batch ``(BATCH, 3, size, size)`` and int64 labels, from seed 0."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 3, size, size), dtype=np.float32)
    return x, rng.integers(0, NUM_CLASSES, BATCH)


def setup(size: int, gpu: bool = False):
    """``(net, opt, x, y)``: the small SPP-net (seed 0) in training mode, its SGD (lr 0.01,
    momentum 0.9, weight decay 5e-4) and the batch of :func:`batch`, on the GPU if ``gpu``:
    what every section that times our training step starts from."""
    from ..nn import SGD, small_spp_net

    net = small_spp_net(NUM_CLASSES, 3, levels=LEVELS, seed=0)
    net.to("gpu" if gpu else "cpu")
    opt = SGD(net, lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = batch(size)
    if gpu:
        from ..backend import to_device

        x, y = to_device(x, "gpu"), to_device(y, "gpu")
    return net.train(), opt, x, y


def step_of(net, opt, x, y):
    """``step()``: one SGD step (forward, loss, backward without the input's gradient,
    update) of ``net`` on ``(x, y)``."""
    from ..ops import softmax_cross_entropy

    def step():
        _, dlogits = softmax_cross_entropy(net.forward(x), y)
        net.backward(dlogits, input_grad=False)
        opt.step()

    return step


def ours_step(size: int, gpu: bool = False):
    """``step()`` of one SGD step of the small SPP-net on a fixed batch (and the net)."""
    return step_of(*setup(size, gpu))


def ours_peak_bytes(size: int) -> int:
    """Peak traced bytes during one step (after a warm-up step), counting the whole training.

    Meant for a fresh process (:func:`ours_peak_bytes_fresh`): memory a step keeps from one step
    to the next -- the per-thread scratch buffers of ``tinyspp.ops.dispatch``, allocated in the
    first step -- is traced only if it is allocated after ``tracemalloc.start()``. The modules a
    step imports on first use are imported before, so their objects are not counted.
    """
    import tracemalloc

    _import_what_a_step_imports()
    tracemalloc.start()
    try:
        step = ours_step(size)
        step()  # warm-up: gradients, momentum and caches exist from now on, as in training
        tracemalloc.reset_peak()
        step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def torch_spp_net(torch, num_classes: int = NUM_CLASSES, levels=LEVELS):
    """The same architecture as :func:`tinyspp.nn.small_spp_net` in torch."""
    nn = torch.nn

    class SPP(nn.Module):
        def forward(self, x):
            N = x.shape[0]
            return torch.cat([nn.functional.adaptive_max_pool2d(x, n).reshape(N, -1)
                              for n in levels], dim=1)

    M = sum(n * n for n in levels)
    return nn.Sequential(
        nn.Conv2d(3, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        SPP(), nn.Linear(64 * M, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, num_classes))


def _torch_training(torch, size):
    torch.manual_seed(0)
    net = torch_spp_net(torch)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = (torch.from_numpy(a) for a in batch(size))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()

    return net, opt, x, y, step


def torch_step(torch, size: int):
    """torch's ``step()`` (built in the peer process)."""
    return _torch_training(torch, size)[-1]


def allocation_peak(prof) -> int:
    """Highest running total of the allocations minus frees in a torch profile (bytes).

    Every allocation and free is an instant ``[memory]`` event of the Chrome trace, with its
    signed size in ``args["Bytes"]``. Frees of blocks allocated before profiling started are not
    recorded (torch warns about them), so the total can only over-estimate torch's peak.
    """
    import json
    import os
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
    finally:
        os.unlink(path)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    sizes = sorted((e["ts"], e["args"]["Bytes"]) for e in events if e.get("name") == "[memory]")
    running = peak = 0
    for _, nbytes in sizes:
        running += nbytes
        peak = max(peak, running)
    return peak


def torch_peak_bytes(torch, size: int):
    """A function returning torch's peak bytes during one step (see the module docstring)."""
    net, opt, x, y, step = _torch_training(torch, size)

    def measure():
        step()  # warm-up: momentum buffers exist from now on
        held = sum(p.numel() * p.element_size() for p in net.parameters())  # parameters
        held += sum(p.grad.numel() * p.grad.element_size() for p in net.parameters()
                    if p.grad is not None)  # gradients still held from the warm-up step
        held += sum(b.numel() * b.element_size() for s in opt.state.values()
                    for b in s.values() if torch.is_tensor(b))  # momentum
        held += x.numel() * x.element_size() + y.numel() * y.element_size()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                    profile_memory=True) as prof:
            step()
        return int(held + allocation_peak(prof))

    return measure


FAULT_STEPS = 10  # steps whose page faults are counted (after 3 warm-up steps)


def faults_per_step(step) -> float:
    """Minor page faults of this process per call of ``step`` (``resource.getrusage``), after
    three warm-up calls: memory mapped in afresh on first touch, see ``tinyspp.ops.heap``."""
    import resource

    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(FAULT_STEPS):
        step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / FAULT_STEPS


def _short(status: str) -> str:
    """``tinyspp.ops.heap``'s status in a few words, for a row's note."""
    return "thresholds set (tinyspp.ops.heap)" if status.startswith("applied") else "defaults"


def torch_faults(torch, size: int):
    """A function returning torch's page faults per SGD step in its process."""
    step = _torch_training(torch, size)[-1]
    return lambda: faults_per_step(step)


def run(opts) -> list[Row]:
    rows, faults = [], []
    peer = getattr(opts, "peer", None)
    for size in SIZES:
        step = ours_step(size, gpu=opts.gpu)
        if not opts.gpu:  # counted first, in the state the timed steps then run in
            ours = faults_per_step(step)
            theirs = peer.call((__name__, "torch_faults", [size])) if peer else None
            torch_heap = peer.info.get("heap", "") if peer else ""
            faults.append(Row("training", f"page faults per SGD step, {BATCH}x3x{size}x{size}",
                              ours, theirs, f"glibc heap: tinyspp {_short(heap_status())}, "
                              f"torch {_short(torch_heap)}", unit="faults"))
        if opts.gpu:
            from ..backend import synchronize

            ours, theirs, inproc = median_ms(step, repeats=opts.repeats,
                                             sync=lambda: synchronize("gpu")), None, None
        else:
            ours, theirs, inproc = side_by_side(step, (__name__, "torch_step", [size]), opts)
        note = f"ours {BATCH / ours * 1e3:.0f} img/s"
        if theirs is not None:
            note += f", torch {BATCH / theirs * 1e3:.0f} img/s"
        rows.append(Row("training", f"SGD step, small SPP-net, {BATCH}x3x{size}x{size}", ours,
                        theirs, note + (" (GPU)" if opts.gpu else ""), torch_inproc_ms=inproc))
    return rows + faults + handoff_rows(opts)


HANDOFFS = 200  # empty splits per timed call of handoff_rows


def handoff_rows(opts) -> list[Row]:
    """What one hand-off to tinyspp's threads costs (section ``training``, unit ``us``): an
    empty ``parallel_slices`` split over every thread, so its time is the wake-up of the
    workers and the wait for their answers, nothing else. A 2-thread SGD step pays it at every
    split (each big convolution, each pass above ``dispatch.MIN_WORK``); torch's OpenMP
    workers spin for a while between parallel regions before they sleep. None on one thread,
    on the GPU, and for code from before tinyspp had threads."""
    from ..ops import dispatch

    if opts.gpu or not hasattr(dispatch, "parallel_slices") or dispatch.num_threads() < 2:
        return []
    n = dispatch.num_threads()

    def splits():
        for _ in range(HANDOFFS):
            dispatch.parallel_slices(lambda a, b: None, n, 1 << 62)

    us = median_ms(splits, repeats=max(3, opts.repeats // 3)) * 1e3 / HANDOFFS
    pinning = getattr(dispatch, "pinning", None)  # (older code never pinned)
    pinned = "workers pinned" if pinning and pinning(n) else "workers not pinned"
    return [Row("training", f"thread hand-off: one empty split over {n} threads", us,
                note=f"{pinned}; median of {HANDOFFS}-split batches", unit="us")]


def _import_what_a_step_imports() -> None:
    """The modules building the net and a training step import on first use (numpy.random,
    threadpoolctl, the compiled kernels): imported, and the kernels loaded, outside the
    measurement."""
    import importlib

    import numpy.random  # noqa: F401  (NumPy imports it on first use: the net's initialisation)

    from ..ops import dispatch

    if hasattr(dispatch, "_blas_libraries"):
        dispatch._blas_libraries()
    for name in ("columns", "passes"):  # (code from before issue 14 has neither)
        try:
            importlib.import_module(f"tinyspp.kernels.{name}").available()
        except ImportError:
            pass


def ours_peak_bytes_fresh(size: int) -> int:
    """:func:`ours_peak_bytes` in a fresh Python process (nothing allocated before it starts)."""
    import subprocess
    import sys

    code = f"from tinyspp.bench.training import ours_peak_bytes as f; print(f({int(size)}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=600)
    if proc.returncode:
        raise RuntimeError(f"ours_peak_bytes_fresh({size}): the child failed:\n{proc.stderr}")
    return int(proc.stdout.split()[-1])


def memory_rows(opts) -> list[Row]:
    """Peak memory of one SGD step at each size, ours and torch's (section ``memory``)."""
    peer = getattr(opts, "peer", None)
    rows = []
    for size in SIZES:
        ours = ours_peak_bytes_fresh(size) / MIB
        theirs = peer.call((__name__, "torch_peak_bytes", [size])) / MIB if peer else None
        rows.append(Row("memory", f"peak memory, one SGD step, {BATCH}x3x{size}x{size}", ours,
                        theirs, "tracemalloc vs torch.profiler; model state included",
                        unit="MiB"))
    return rows
