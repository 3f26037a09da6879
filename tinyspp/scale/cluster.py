"""Where the per-image tasks run: a local Dask cluster, an existing one, or this process.

:func:`connect` is the one place that starts or joins a cluster; :func:`run_tasks` submits one
task per item and yields results as they complete, whichever of the three it got. Tasks must be
deterministic: Dask re-runs the task of a worker that died (``distributed.scheduler.
allowed-failures`` times, 3 by default) and the re-run must give the same bytes.

Examples
--------
>>> with connect(workers=0) as client:           # in-process: no Dask at all
...     sorted(r for _, r in run_tasks(client, abs, [-2, 1], progress=False))
[1, 2]
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from ..backend import check_device, gpu_count, use_gpu
from ..validate import check_choice


def machine_workers(device: str = "cpu") -> int:
    """Default worker count: one per CPU core this process may use, or one per GPU."""
    if device == "gpu":
        return gpu_count()
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:       # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def connect(workers: int | None = None, scheduler: str | None = None, device: str = "cpu",
            memory_limit="auto", log=print):
    """A ``distributed.Client`` for the tasks, or ``None`` to run them in this process.

    Parameters
    ----------
    workers : int, optional
        ``None``: a ``LocalCluster`` sized to the machine (:func:`machine_workers`); ``0``: no
        cluster, tasks run here one after the other (for debugging: breakpoints work); ``n``: a
        ``LocalCluster`` of ``n`` worker processes. Every local worker has one thread (the
        numerics are single-threaded per worker: ``OMP_NUM_THREADS=1``, Dask's default, and
        ``TINYSPP_NUM_THREADS=1`` unless this process's environment sets it).
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``): use its workers, start nothing.
        Excludes ``workers``.
    device : {"cpu", "gpu"}
        ``"gpu"``: the local cluster gets one worker per GPU, and each task runs on the GPU of
        its worker (:func:`use_worker_gpu`).
    memory_limit : str or int
        Per local worker (Dask's meaning; ``"auto"`` = the machine's memory / workers).
    log : callable
        Receives the dashboard address.
    """
    func = "connect"
    check_choice(device, "device", func, ("cpu", "gpu"))
    if device == "gpu" and scheduler is None:
        check_device("gpu", func)  # a local GPU cluster needs a device here
    if scheduler is not None and workers is not None:
        raise ValueError(f"{func}: give --scheduler (an existing cluster) or --workers (a local "
                         f"one), not both")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool)
                                or workers < 0):
        raise ValueError(f"{func}: workers must be an int >= 0 (0 = in-process), got {workers!r}")
    if workers == 0:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as err:
            raise ConnectionError(f"{func}: no Dask scheduler answers at {scheduler!r} "
                                  f"({err}); start one with `dask scheduler`") from None
        with client:
            log(f"Dask: scheduler {scheduler}, {len(client.scheduler_info()['workers'])} "
                f"workers; dashboard {client.dashboard_link}")
            yield client
        return
    n = machine_workers(device) if workers is None else workers
    # one thread of numerics per worker for tinyspp's own splits too (tinyspp.ops.dispatch),
    # unless the caller chose a number: n workers already fill n CPUs
    env = {} if "TINYSPP_NUM_THREADS" in os.environ else {"TINYSPP_NUM_THREADS": "1"}
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           memory_limit=memory_limit, dashboard_address=":0",
                           silence_logs=logging.ERROR, env=env)
    with cluster, Client(cluster) as client:
        log(f"Dask: local cluster of {n} worker process{'es' if n > 1 else ''}; dashboard "
            f"{client.dashboard_link}")
        yield client


def use_worker_gpu() -> None:
    """Make this worker's GPU current: worker ``i`` of a local cluster uses GPU ``i mod n``.

    A worker started by hand (``CUDA_VISIBLE_DEVICES=1 dask worker ...``) sees one GPU, device 0.
    """
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):        # not inside a Dask worker
        return
    if isinstance(name, int) or str(name).isdigit():
        use_gpu(int(name) % gpu_count())


def run_tasks(client, fn, items, *args, progress: bool = True, desc: str = "images",
              key: str = "task", **kwargs):
    """Run ``fn(item, *args, **kwargs)`` for every item; yield ``(item, result)`` as each ends.

    With a client, one Dask task per item (``pure=False``: never served from a cache; the key
    names the item, so the dashboard shows which image runs). A task that raises is reported
    (``(item, exception)``) and the others go on; a worker that dies has its task re-run by the
    scheduler. Without a client (``None``), the items run here in order. A tqdm bar counts the
    items completed.
    """
    from tqdm.auto import tqdm

    items = list(items)
    bar = tqdm(total=len(items), desc=desc, unit="image", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    with bar:
        if client is None:
            for item in items:
                try:
                    result = fn(item, *args, **kwargs)
                except Exception as err:  # noqa: BLE001 -- reported to the caller, run goes on
                    result = err
                bar.update(1)
                yield item, result
            return
        from distributed import as_completed

        futures = {client.submit(fn, item, *args, key=f"{key}-{item}", pure=False, **kwargs): item
                   for item in items}
        for future in as_completed(futures):
            item = futures[future]
            try:
                result = future.result()
            except Exception as err:  # noqa: BLE001 -- reported to the caller, run goes on
                result = err
            bar.update(1)
            yield item, result
