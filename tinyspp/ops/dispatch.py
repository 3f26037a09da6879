"""``array_module``: pick NumPy or CuPy for an op, naming the arguments when they disagree.

``tinyspp.backend.get_array_module`` refuses a mix of NumPy and CuPy arrays; this wrapper adds
which argument lives where, so the error says what to move.

>>> import numpy as np
>>> array_module("linear_forward", x=np.ones(2), w=np.ones(2)) is np
True
"""

from __future__ import annotations

import os
import threading

import numpy as np

from ..backend import get_array_module, is_gpu_array


def array_module(func: str, **arrays):
    """``numpy`` or ``cupy`` for the keyword ``arrays``; TypeError naming each one's module."""
    try:
        return get_array_module(*arrays.values())
    except TypeError:
        where = ", ".join(
            f"{name} is {'cupy' if is_gpu_array(a) else 'numpy'}"
            for name, a in arrays.items() if a is not None and hasattr(a, "shape")
        )
        raise TypeError(
            f"{func}: arrays must all be NumPy or all CuPy, got {where}; move them to one "
            "device first (tinyspp.backend.to_device, or layer/net .to(device))"
        ) from None


# --- threads for NumPy's element-wise passes --------------------------------------------------
#
# NumPy runs a ufunc, a copy or a reduction on one core, but releases the GIL inside its loops,
# so a pass over a big array split into independent slices runs on several cores from Python
# threads. ``parallel_slices`` is that split: every slice writes only its own part of the output,
# so the result is bit for bit the one-thread result (tests run both). BLAS already threads the
# GEMMs; this is for the passes around them (im2col's copy, col2im's adds, pooling).

_pool = None
_threads = None
MIN_WORK = 1 << 18  # elements below which a pass stays in the calling thread (tests set 0)


def num_threads() -> int:
    """Threads ``parallel_slices`` uses: ``set_num_threads``, else ``$TINYSPP_NUM_THREADS``,
    else 1.

    One by default, because measuring said so: on the 2-core benchmark machine, splitting the
    passes made a training step about 10% *slower* (``python -m tinyspp.bench --only ideas``),
    as OpenBLAS's own threads still spin on the cores after each GEMM. Where BLAS is limited to
    one thread (``threadpoolctl``) or cores are plentiful, ``set_num_threads(n)`` may pay.
    """
    if _threads is not None:
        return _threads
    env = os.environ.get("TINYSPP_NUM_THREADS")
    if env:
        return max(1, int(env))
    return 1


def cpu_count() -> int:
    """The CPUs this process may run on (at most 4: beyond that the passes are memory-bound)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads for the element-wise passes (1: all in the calling thread; None: the
    default of :func:`num_threads`)."""
    global _threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"set_num_threads: n must be a positive int or None, got {n!r}")
    _threads = n


def parallel_slices(fn, length: int, work: int) -> None:
    """Call ``fn(start, stop)`` over contiguous slices of ``range(length)``, in parallel.

    ``work`` is the number of elements the whole pass touches: below ``MIN_WORK`` (or with one
    thread, or one slice) everything runs in the calling thread, where a thread hand-off would
    cost more than it saves. ``fn`` must write only the part of its output that its slice owns.
    """
    threads = min(num_threads(), length)
    nested = threading.current_thread().name.startswith("tinyspp")  # never wait on ourselves
    if threads <= 1 or work < MIN_WORK or nested:
        fn(0, length)
        return
    global _pool
    if _pool is None or _pool._max_workers < threads - 1:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(max_workers=max(threads - 1, 1),
                                   thread_name_prefix="tinyspp")
    bounds = [length * i // threads for i in range(threads + 1)]
    futures = [_pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, threads)]
    fn(bounds[0], bounds[1])  # the calling thread takes the first slice
    for f in futures:
        f.result()


def split_copyto(dst, src, axis: int = 0) -> None:
    """``np.copyto(dst, src)`` split along ``axis`` over :func:`parallel_slices` (NumPy only)."""

    def copy(a, b):
        index = (slice(None),) * axis + (slice(a, b),)
        np.copyto(dst[index], src[index])

    parallel_slices(copy, dst.shape[axis], dst.size)
