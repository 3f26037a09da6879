"""Timing helpers for the benchmarks: medians, torch in a process of its own, a results file.

Fairness. NumPy's BLAS and torch each keep a thread pool sized to the machine; run in one process
on a 2-core machine, the idle pool of one still spins while the other works, and both get slower
(the issue measured torch 51 ms in-process vs 34 ms alone on the same conv). So torch runs in a
**peer process** (:class:`Peer`, ``python -m tinyspp.bench.peer``) that idles, blocked
on a pipe, while NumPy works, and the parent idles while the peer works. Each workload alternates
``rounds`` times between the two sides (so slow drifts in the machine's load hit both alike),
and the reported time is the median of all timed repeats of a side. ``--torch-in-process`` adds
the old in-process measurement as a third column, for comparison.

A torch workload is named, not passed: ``(module, builder, args)`` where
``getattr(importlib.import_module(module), builder)(torch, *args)`` returns the step to time, and
``args`` are JSON values (shapes, seeds), so both sides build their data from the same seeds.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PAUSE_S = 0.05  # between the two sides: lets a spinning thread pool go to sleep


@dataclass
class Row:
    """One benchmark line: our median, torch's (peer process; None when not measured), a note.

    ``torch_inproc_ms`` is torch timed inside this process (``--torch-in-process``), ``unit`` is
    ``"ms"`` for times, ``"MiB"`` for memory rows and ``"faults"`` for page-fault counts.
    """

    section: str
    workload: str
    ours_ms: float
    torch_ms: float | None = None
    note: str = ""
    torch_inproc_ms: float | None = None
    unit: str = "ms"

    @property
    def ratio(self) -> float | None:
        """ours / torch: below 1 means tinyspp is faster (or smaller)."""
        if self.unit == "faults" or not self.torch_ms:  # counts: a ratio says nothing there
            return None
        return self.ours_ms / self.torch_ms


def median_ms(fn, repeats: int = 7, warmup: int = 1, sync=None) -> float:
    """Median wall time of ``fn()`` in milliseconds (``sync()`` after each call, e.g. CUDA)."""
    return statistics.median(times_ms(fn, repeats, warmup, sync))


def times_ms(fn, repeats: int = 7, warmup: int = 1, sync=None) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn()`` in ms, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


class one_thread:
    """Context manager: BLAS and tinyspp's element-wise passes on one thread (then restored).

    For the profile and the plain-vs-fast comparisons: on one thread a piece's time is its own
    work, not a wait for a second thread that another job holds off its core."""

    def __enter__(self):
        from threadpoolctl import threadpool_limits

        from ..ops import dispatch

        self.limits = threadpool_limits(1)
        self.saved = getattr(dispatch, "_threads", None)
        if hasattr(dispatch, "set_num_threads"):  # (older code had no threads of its own)
            dispatch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        from ..ops import dispatch

        if hasattr(dispatch, "set_num_threads"):
            dispatch._threads = self.saved
        self.limits.restore_original_limits()


def try_torch():
    """The torch module when installed (the optional ``bench`` extra), else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_available() -> bool:
    """Whether torch can be imported (checked without importing it here)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def build(torch, spec):
    """The step of a named torch workload ``spec = (module, builder, args)``."""
    module, builder, args = spec
    return getattr(importlib.import_module(module), builder)(torch, *args)


HEAPS = ("default", "tinyspp")  # the torch peer's glibc heap: its defaults, or tinyspp's settings


class Peer:
    """torch in a child process, driven over a pipe; one request at a time.

    ``times(spec, repeats, warmup)`` builds the workload once (cached by ``spec``) and returns
    the wall times of ``repeats`` calls; ``call(spec)`` returns what the builder's function
    returns when called once (for measurements that are not times, e.g. memory). The child
    waits on its pipe between requests, so it never runs while this process times NumPy.
    """

    def __init__(self, threads: int | None = None, heap: str = "default"):
        cmd = [sys.executable, "-m", "tinyspp.bench.peer"]
        if threads:
            cmd += ["--threads", str(threads)]
        if heap not in HEAPS:
            raise ValueError(f"Peer: heap must be one of {HEAPS}, got {heap!r}")
        # the peer imports tinyspp, whose import sets glibc's heap thresholds (tinyspp.ops.heap)
        # unless told not to: torch runs as shipped ("default") unless asked otherwise
        env = {**os.environ, "TINYSPP_KEEP_FREED": "0" if heap == "default" else "1"}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1, env=env)
        self.info = self._request({"op": "info"})

    def _request(self, msg: dict):
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench peer: the torch process exited ({self.proc.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"bench peer: {reply['error']}")
        time.sleep(PAUSE_S)
        return reply["result"]

    def times(self, spec, repeats: int, warmup: int = 1) -> list[float]:
        return self._request({"op": "times", "spec": list(spec), "repeats": repeats,
                              "warmup": warmup})

    def call(self, spec):
        return self._request({"op": "call", "spec": list(spec)})

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def side_by_side(ours, spec, opts, repeats: int | None = None, rounds: int | None = None):
    """Median ms of ``ours`` and of torch workload ``spec``: ``(ours, torch, torch_inproc)``.

    The sides alternate for ``rounds`` rounds of one untimed and ``repeats // rounds`` timed
    calls each, with a pause between sides: our step in this process, torch's in the peer
    process (``opts.peer``; None: not measured) and,
    when ``opts.torch_inproc`` is set, torch in this process too. Medians are over all timed
    calls of a side.
    """
    repeats = repeats or opts.repeats
    rounds = rounds or getattr(opts, "rounds", None) or 3
    per = max(1, repeats // rounds)
    peer, inproc = getattr(opts, "peer", None), getattr(opts, "torch_inproc", None)
    inproc_step = build(inproc, spec) if inproc is not None else None
    a, b, c = [], [], []
    for _ in range(rounds):  # every round starts with one untimed call on each side (its
        a += times_ms(ours, per, warmup=1)  # caches and pages are cold after the other's turn)
        if peer is not None:
            time.sleep(PAUSE_S)
            b += peer.times(spec, per, warmup=1)
            time.sleep(PAUSE_S)  # and torch's threads in the peer go back to sleep
        if inproc_step is not None:
            c += times_ms(inproc_step, per, warmup=1)
            time.sleep(PAUSE_S)  # torch's threads in this process go back to sleep
    med = lambda t: statistics.median(t) if t else None
    return med(a), med(b), med(c)


# --- machine description and the results file ----------------------------------------------

def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


SIMD_FLAGS = ("fma", "avx2", "avx512f", "amx_tile")  # the vector units that set BLAS's pace


def cpu_features() -> list[str]:
    """Which of :data:`SIMD_FLAGS` the CPU reports (Linux ``/proc/cpuinfo``; [] elsewhere):
    OpenBLAS and torch's oneDNN pick their kernels by them, so two machines with the same
    number of cores can rank the libraries differently."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    flags = set(line.split(":", 1)[-1].split())
    return [f for f in SIMD_FLAGS if f in flags]


def blas_build() -> str:
    """NumPy's BLAS as ``threadpoolctl`` sees it: library, version and the kernels it chose
    for this CPU (OpenBLAS's ``architecture``), e.g. ``openblas 0.3.31 (SkylakeX kernels)``."""
    from threadpoolctl import threadpool_info

    found = [f"{p['internal_api']} {p.get('version') or '?'}"
             + (f" ({p['architecture']} kernels)" if p.get("architecture") else "")
             for p in threadpool_info() if p["user_api"] == "blas"]
    return ", ".join(found) or "none found"


def heap_status() -> str:
    """What ``tinyspp.ops.heap`` did to glibc's heap in this process ("glibc's defaults" for
    code from before that module existed)."""
    try:
        from tinyspp.ops import heap
    except ImportError:
        return "glibc's defaults (this tinyspp has no tinyspp.ops.heap)"
    return heap.status()


def numpy_threads() -> dict:
    """Thread pools NumPy's process uses (``threadpoolctl``): ``{"blas": n, ...}``."""
    from threadpoolctl import threadpool_info

    return {f"{p['user_api']} ({p['internal_api']})": p["num_threads"]
            for p in threadpool_info()}


def load_average() -> list[float] | None:
    """1-, 5- and 15-minute load averages, or None where the OS has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def rows_to_json(rows: list[Row]) -> list[dict]:
    return [dict(asdict(r), ratio=None if r.ratio is None else round(r.ratio, 3)) for r in rows]


def rows_from_json(items: list[dict]) -> list[Row]:
    return [Row(**{k: v for k, v in item.items() if k != "ratio"}) for item in items]


def _fmt(v, unit="ms"):
    if v is None:
        return "-"
    if unit == "faults":
        return f"{v:.0f}"
    return f"{v:.1f}" if unit == "MiB" or v >= 100 else f"{v:.2f}"


def format_table(rows: list[Row], markdown: bool = True) -> str:
    """The rows as a Markdown table (the torch-in-process column only when measured)."""
    inproc = any(r.torch_inproc_ms is not None for r in rows)
    head = ["section", "workload", "unit", "tinyspp", "torch", "ratio (ours/torch)"]
    if inproc:
        head.append("torch in-process")
    head.append("note")
    lines = []
    for r in rows:
        cells = [r.section, r.workload, r.unit, _fmt(r.ours_ms, r.unit),
                 _fmt(r.torch_ms, r.unit), "-" if r.ratio is None else f"{r.ratio:.2f}"]
        if inproc:
            cells.append(_fmt(r.torch_inproc_ms, r.unit))
        lines.append(cells + [r.note])
    widths = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt(row) for row in lines]
    return "\n".join(out)
