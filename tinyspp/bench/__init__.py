"""Benchmarks: ``python -m tinyspp.bench [--only SECTION] [--quick] [--gpu]``.

Each section module in this package exposes ``run(opts) -> list[Row]``. Times are medians of
repeats; torch (CPU build, optional ``bench`` extra) runs the same workloads in the same process
so ratios are measured side by side.
"""

from .common import median_ms  # public timer for notebooks and docs: median of repeats, in ms

SECTIONS = ("layers", "pyramid", "gpu", "training")
__all__ = ["SECTIONS", "median_ms"]
