"""Timing helpers for the benchmarks: medians of repeats, torch side by side, a table."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass


@dataclass
class Row:
    """One benchmark line: our median time, torch's (None when not measured) and a note."""

    section: str
    workload: str
    ours_ms: float
    torch_ms: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """ours / torch: below 1 means tinyspp is faster."""
        return None if self.torch_ms is None else self.ours_ms / self.torch_ms


def median_ms(fn, repeats: int = 7, warmup: int = 1, sync=None) -> float:
    """Median wall time of ``fn()`` in milliseconds (``sync()`` after each call, e.g. CUDA)."""
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
    return statistics.median(times)


def try_torch():
    """The torch module when installed (the optional ``bench`` extra), else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def format_table(rows: list[Row], markdown: bool = True) -> str:
    head = ["section", "workload", "tinyspp ms", "torch ms", "ratio (ours/torch)", "note"]
    lines = []
    for r in rows:
        lines.append([
            r.section,
            r.workload,
            f"{r.ours_ms:.2f}",
            "-" if r.torch_ms is None else f"{r.torch_ms:.2f}",
            "-" if r.ratio is None else f"{r.ratio:.2f}",
            r.note,
        ])
    widths = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt(row) for row in lines]
    return "\n".join(out)
