"""Run the benchmark sections, print one table (Markdown) and save it to a results file."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tinyspp.bench import SECTIONS
from tinyspp.bench.common import (
    HEAPS,
    Peer,
    blas_build,
    cpu_features,
    cpu_model,
    format_table,
    heap_status,
    load_average,
    numpy_threads,
    rows_to_json,
    torch_available,
    try_torch,
)
from tinyspp.ops import dispatch

RESULTS = Path(__file__).resolve().parents[2] / "results" / "bench.json"
TIMING = ("medians of all timed repeats; each workload alternates --rounds rounds between tinyspp "
          "(this process) and torch (a process of its own, idle while tinyspp runs), each "
          "round one untimed call then the timed ones, 50 ms pauses between sides")


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m tinyspp.bench", description=__doc__)
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only these sections")
    p.add_argument("--repeats", type=int, default=9, help="timed repeats per workload (median)")
    p.add_argument("--rounds", type=int, default=3,
                   help="alternating rounds per workload (the timed repeats are spread over "
                        "them; more rounds average a noisy machine's slow drifts better)")
    p.add_argument("--quick", action="store_true", help="fewer repeats, smaller workloads")
    p.add_argument("--gpu", action="store_true", help="also run the CuPy/CUDA benchmarks")
    p.add_argument("--no-torch", action="store_true", help="skip the torch comparison")
    p.add_argument("--torch-in-process", action="store_true",
                   help="also time torch inside this process (the unfair old way), as a column")
    p.add_argument("--out", type=Path, default=None,
                   help="results file (default: results/bench.json for a full, non-quick run)")
    p.add_argument("--no-save", action="store_true", help="write no results file")
    p.add_argument("--note", default="", help="recorded in the results file (e.g. which code)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for BOTH sides: NumPy's BLAS and tinyspp's element-wise passes "
                        "here, torch's intra-op threads in its process (default: each library's "
                        "own default)")
    p.add_argument("--torch-heap", choices=HEAPS, default="default",
                   help="glibc's heap settings in torch's process: its defaults (torch as "
                        "shipped) or the ones tinyspp sets at import (tinyspp.ops.heap)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    opts = parse(argv)
    if opts.quick:
        opts.repeats = min(opts.repeats, 3)
    started, t0, load_start = datetime.now(UTC), time.perf_counter(), load_average()
    use_torch = not opts.no_torch and torch_available()
    sections = [s for s in (opts.only or SECTIONS) if s != "gpu" or opts.gpu]
    limits = None
    if opts.threads:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(opts.threads)
        if hasattr(dispatch, "set_num_threads"):
            dispatch.set_num_threads(opts.threads)
    opts.peer = Peer(threads=opts.threads, heap=opts.torch_heap) if use_torch else None
    # sections not yet moved to the peer (pyramid's per-RoI loop) still get torch in-process
    opts.torch = try_torch() if use_torch and ("pyramid" in sections
                                               or opts.torch_in_process) else None
    opts.torch_inproc = opts.torch if opts.torch_in_process else None
    peer_info = opts.peer.info if opts.peer else None
    print(f"# tinyspp benchmarks: python {platform.python_version()}, numpy {np.__version__}, "
          f"torch {peer_info['torch'] if peer_info else 'not measured'} (own process, "
          f"{peer_info['threads'] if peer_info else '-'} threads), {cpu_model()}; "
          f"medians of {opts.repeats} repeats")
    rows = []
    try:
        for name in sections:
            rows += importlib.import_module(f"tinyspp.bench.{name}").run(opts)
            sys.stdout.flush()
    finally:
        if opts.peer:
            opts.peer.close()
        record_threads = {"numpy": numpy_threads(),
                          "tinyspp": getattr(dispatch, "num_threads", lambda: 1)(),
                          # (code from before tinyspp.ops.dispatch.pinning never pinned)
                          "tinyspp_pinned": getattr(dispatch, "pinning", lambda: False)()}
        if limits is not None:
            limits.restore_original_limits()
    print(format_table(rows))
    out = opts.out or (None if opts.quick or opts.only else RESULTS)
    if out and not opts.no_save:
        import tinyspp

        record = {
            "command": "python -m tinyspp.bench" + (" " + " ".join(argv or sys.argv[1:])).rstrip(),
            "started": started.isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - t0, 1),
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                        "platform": platform.platform(), "simd": cpu_features(),
                        "blas": blas_build()},
            "versions": {"python": platform.python_version(), "numpy": np.__version__,
                         "torch": peer_info["torch"] if peer_info else None,
                         "tinyspp": tinyspp.__version__},
            "threads": {**record_threads, "requested": opts.threads,
                        "torch_peer": peer_info["threads"] if peer_info else None,
                        "env": {k: os.environ.get(k) for k in
                                ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                 "TINYSPP_NUM_THREADS", "TINYSPP_PIN_THREADS")}},
            "heap": {"tinyspp": heap_status(),
                     "torch_peer": peer_info.get("heap") if peer_info else None},
            "load_average": {"start": load_start, "end": load_average()},
            "timing": TIMING + f"; {opts.rounds} rounds, {opts.repeats} repeats per side",
            "repeats": opts.repeats,
            "sections": sections,
            "note": opts.note,
            "commit": _commit(),
            "rows": rows_to_json(rows),
        }
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(record, indent=1) + "\n")
        print(f"# wrote {out}")
    return 0


def _commit() -> str | None:
    """The git commit of the code that ran (None outside a checkout), '+' when modified."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tinyspp"], cwd=root,
                               text=True, capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+" if dirty else "")


if __name__ == "__main__":
    sys.exit(main())
