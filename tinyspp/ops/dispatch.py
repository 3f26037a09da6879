"""``array_module``: pick NumPy or CuPy for an op, naming the arguments when they disagree.

``tinyspp.backend.get_array_module`` refuses a mix of NumPy and CuPy arrays; this wrapper adds
which argument lives where, so the error says what to move.

>>> import numpy as np
>>> array_module("linear_forward", x=np.ones(2), w=np.ones(2)) is np
True
"""

from __future__ import annotations

import os
import queue
import threading
from contextlib import contextmanager, nullcontext

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


# --- threads for NumPy's element-wise passes, and one thread pool ----------------------------
#
# NumPy runs a ufunc, a copy or a reduction on one core, but releases the GIL inside its loops
# (BLAS calls included), so a pass over a big array split into independent slices runs on
# several cores from Python threads. ``parallel_slices`` is that split: every slice writes only
# its own part of the output, so the result is bit for bit the one-thread result (tests run
# both). ``parallel_map`` hands whole work items (a convolution's image blocks) to the threads.
#
# One thread pool: while a split runs, BLAS is held at one thread (``one_blas_thread``), so each
# of our threads runs its own GEMMs on its own core. Two pools on the same cores (OpenBLAS's
# workers spin for a while after each GEMM, waiting for the next) slow each other down.

_threads = None
_local = threading.local()  # .inside: this thread is running a slice of a split
MIN_WORK = 1 << 20  # elements below which a pass stays in the calling thread (tests set 0)


def num_threads() -> int:
    """Threads ``parallel_slices`` uses: ``set_num_threads``, else ``$TINYSPP_NUM_THREADS``,
    else :func:`cpu_count` (at most 4).
    """
    if _threads is not None:
        return _threads
    env = os.environ.get("TINYSPP_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"TINYSPP_NUM_THREADS must be a positive integer, got {env!r}")
        return n
    return cpu_count()


def cpu_count() -> int:
    """The CPUs this process may run on (at most 4: beyond that the passes are memory-bound).

    Read off the main thread (``os.getpid()``), so a pinned worker of ours gets the same answer
    as the thread that started it.
    """
    try:
        cpus = len(os.sched_getaffinity(os.getpid()))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads for the ops' passes (1: all in the calling thread, BLAS left to its own
    threads; None: the default of :func:`num_threads`)."""
    global _threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"set_num_threads: n must be a positive int or None, got {n!r}")
    _threads = n


@contextmanager
def using_threads(n: int | None):
    """``set_num_threads(n)`` inside the block, then the setting before it (None included)."""
    global _threads
    saved = _threads
    set_num_threads(n)
    try:
        yield
    finally:
        _threads = saved


_blas_lock = threading.Lock()
_blas_depth = 0
_blas_saved: list = []
_blas_libs = None


def _blas_libraries() -> list:
    """threadpoolctl's controllers of the BLAS libraries loaded in this process (found once)."""
    global _blas_libs
    if _blas_libs is None:
        try:
            from threadpoolctl import ThreadpoolController

            _blas_libs = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        except Exception:  # no threadpoolctl, or a BLAS it cannot drive: leave BLAS alone
            _blas_libs = []
    return _blas_libs


@contextmanager
def one_blas_thread():
    """Hold every loaded BLAS at one thread inside the block, then restore its setting.

    Re-entrant and shared between threads: the first to enter sets one thread, the last to
    leave restores (a few microseconds each way).
    """
    global _blas_depth, _blas_saved
    with _blas_lock:
        if _blas_depth == 0:
            libs = _blas_libraries()
            _blas_saved = [lib.get_num_threads() for lib in libs]
            for lib in libs:
                lib.set_num_threads(1)
        _blas_depth += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_depth -= 1
            if _blas_depth == 0:
                for lib, n in zip(_blas_libraries(), _blas_saved):
                    lib.set_num_threads(n)


SMALL_GEMM = 1 << 24  # multiply-adds below which a GEMM runs on one BLAS thread (see below)


def blas_for_ops(work: int | None = None):
    """The BLAS setting an op's GEMMs run under: one thread when tinyspp runs its own threads
    (``num_threads() > 1``) and the GEMMs are split over them, or are small (``work``
    multiply-adds below ``SMALL_GEMM``: a one-thread GEMM of that size takes well under a
    millisecond); BLAS's own setting otherwise (``work=None`` means "split by the caller").

    Why small GEMMs too: a GEMM on two BLAS threads wakes OpenBLAS's worker, which then spins
    on its core for a long while waiting for more work, and so competes with our second
    thread through the passes that follow.
    """
    if num_threads() > 1 and (work is None or work < SMALL_GEMM):
        return one_blas_thread()
    return nullcontext()


def _as_slice(fn, a, b):
    """Run ``fn(a, b)`` as a slice of a split: any split it asks for runs inline."""
    outer = getattr(_local, "inside", False)
    _local.inside = True
    try:
        fn(a, b)
    finally:
        _local.inside = outer


def parallel_slices(fn, length: int, work: int) -> None:
    """Call ``fn(start, stop)`` over contiguous slices of ``range(length)``, in parallel.

    ``work`` is the number of elements the whole pass touches: below ``MIN_WORK`` (or with one
    thread, or one slice, or from inside another split) everything runs in the calling thread,
    where a thread hand-off would cost more than it saves. ``fn`` must write only the part of
    its output that its slice owns. While the slices run, BLAS is held at one thread.

    Unpinned (see :func:`pinning`), the calling thread takes the first slice and the workers
    the rest; pinned, every slice goes to a worker that runs on a CPU of its own, and the
    calling thread waits.
    """
    threads = min(num_threads(), length)
    if threads <= 1 or work < MIN_WORK or getattr(_local, "inside", False):
        fn(0, length)
        return
    cpus = _pin_cpus(threads)
    mine = 0 if cpus else 1  # slices the calling thread takes itself
    workers = _workers(threads - mine)
    bounds = [length * i // threads for i in range(threads + 1)]
    done = queue.SimpleQueue()  # this call's answers (callers on several threads never mix)
    with one_blas_thread():
        for i in range(mine, threads):
            cpu = cpus[i - mine] if cpus else None
            workers[i - mine].jobs.put((fn, bounds[i], bounds[i + 1], done, cpu))
        try:
            if mine:
                _as_slice(fn, bounds[0], bounds[1])
        finally:
            errors = [done.get() for _ in range(mine, threads)]  # wait for every slice
        for err in errors:
            if err is not None:
                raise err


# --- pinning the workers to CPUs -------------------------------------------------------------
#
# Measured on a 2-CPU Linux VM: after a pause (a benchmark's turn, a data loader's wait), the
# scheduler wakes our worker on the CPU where the thread that woke it runs, and the two threads
# share ONE CPU for the next few dozen milliseconds -- a split then takes twice as long as
# doing the work in one thread, until the load balancer moves one of them (see
# docs/performance.md, "Threads that share a CPU"). A worker pinned to a CPU of its own cannot
# be moved there, and with the calling thread waiting instead of taking a slice, the CPUs a
# split uses are exactly its workers' own.

PIN_ENV = "TINYSPP_PIN_THREADS"


def pinning(threads: int | None = None) -> bool:
    """Whether a split over ``threads`` threads (default :func:`num_threads`) pins its workers.

    ``$TINYSPP_PIN_THREADS``: ``1`` always (worker ``i`` on the ``i``-th CPU this process may
    use, round robin), ``0`` never, unset or ``auto``: only when the split uses every CPU the
    process may use (then pinning gives no thread fewer CPUs than the process has; on a bigger
    machine, several processes pinning to the same first CPUs would crowd them). Linux only
    (``os.sched_setaffinity``); elsewhere never, and never for one thread.
    """
    return _pin_cpus(num_threads() if threads is None else threads) is not None


def _allowed_cpus() -> list:
    """The CPUs the process may use: its main thread's affinity (a pinned worker's own is one
    CPU), in order."""
    try:
        return sorted(os.sched_getaffinity(os.getpid()))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def _pin_cpus(threads: int) -> list | None:
    """The CPU of each of the ``threads`` workers of a split, or None: not pinned (see
    :func:`pinning`)."""
    env = os.environ.get(PIN_ENV, "auto").strip().lower()
    if env not in ("", "auto", "0", "1"):
        raise ValueError(f"{PIN_ENV} must be 0, 1 or auto, got {os.environ[PIN_ENV]!r}")
    if env == "0" or threads <= 1 or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = _allowed_cpus()
    if env != "1" and threads != len(cpus):
        return None
    return [cpus[i % len(cpus)] for i in range(threads)]


class _Worker:
    """A thread of tinyspp's pool: runs ``(fn, a, b, done, cpu)`` jobs from its queue and
    answers each on the caller's ``done`` queue (None, or the exception). C-level queues hand a
    job over faster than a ``concurrent.futures`` executor's futures (a split still costs tens
    of microseconds: the thread has to wake up). ``cpu``: the CPU to run the job on (the thread
    stays pinned there until a job asks otherwise), or None: any CPU of the process."""

    def __init__(self, index: int):
        self.jobs = queue.SimpleQueue()
        self.cpu = None  # where this thread is pinned (None: not pinned)
        threading.Thread(target=self._run, name=f"tinyspp-{index}", daemon=True).start()

    def _pin(self, cpu):
        if cpu == self.cpu:
            return
        try:
            os.sched_setaffinity(0, {cpu} if cpu is not None else _allowed_cpus())
        except (AttributeError, OSError, ValueError):  # the CPU went away: run unpinned
            cpu = None
        self.cpu = cpu

    def _run(self):
        while True:
            fn, a, b, done, cpu = self.jobs.get()
            try:
                self._pin(cpu)
                _as_slice(fn, a, b)
            except BaseException as err:  # noqa: BLE001 -- handed to the caller, re-raised there
                done.put(err)
            else:
                done.put(None)


_pool: list = []
_pool_lock = threading.Lock()
if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads: the
    # workers it inherited would never answer, so it starts its own on its first split
    os.register_at_fork(after_in_child=_pool.clear)


def _workers(n: int) -> list:
    """At least ``n`` started workers (started on first need, kept for the process)."""
    with _pool_lock:
        while len(_pool) < n:
            _pool.append(_Worker(len(_pool) + 1))
        return _pool


def parallel_map(fn, items, work: int) -> list:
    """``[fn(item) for item in items]``, the items split over threads in contiguous runs.

    Which item an element of work belongs to never depends on the number of threads, so a
    result assembled from the items in order is the same bit for bit for any thread count.
    ``work`` as for :func:`parallel_slices`.
    """
    results = [None] * len(items)

    def run(a, b):
        for i in range(a, b):
            results[i] = fn(items[i])

    parallel_slices(run, len(items), work)
    return results


def split_copyto(dst, src, axis: int = 0) -> None:
    """``np.copyto(dst, src)`` split along ``axis`` over :func:`parallel_slices` (NumPy only)."""

    def copy(a, b):
        index = (slice(None),) * axis + (slice(a, b),)
        np.copyto(dst[index], src[index])

    parallel_slices(copy, dst.shape[axis], dst.size)


# --- scratch buffers -------------------------------------------------------------------------
#
# A convolution's pieces need temporaries of the same few sizes step after step (the columns of
# a piece, their gradient). Allocating them afresh maps fresh pages from the OS, whose first
# touch costs a page fault each (about 2000 per training step of the small SPP-net); a buffer
# kept per thread and reused costs none. Only temporaries that never leave the op use it.

SCRATCH_MAX_BYTES = 1 << 23  # per thread and name (8 MiB); a bigger request is allocated fresh


def scratch(name: str, shape, dtype):
    """An uninitialised C-contiguous NumPy array of ``shape`` and ``dtype``, from a buffer this
    thread keeps under ``name`` and hands out again on the next call with that name (so the
    array must not outlive its use: never return or store it). Requests above
    ``SCRATCH_MAX_BYTES`` get a fresh array."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64))
    nbytes = size * dtype.itemsize
    if nbytes > SCRATCH_MAX_BYTES:
        return np.empty(shape, dtype=dtype)
    buffers = getattr(_local, "scratch", None)
    if buffers is None:
        buffers = _local.scratch = {}
    buf = buffers.get(name)
    if buf is None or buf.nbytes < nbytes:
        buf = buffers[name] = np.empty(max(nbytes, 1 << 16), dtype=np.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)
