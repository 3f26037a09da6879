"""Benchmarks: ``python -m tinyspp.bench [--only SECTION] [--quick] [--gpu]``.

Each section module in this package exposes ``run(opts) -> list[Row]``. Times are medians of
repeats. torch (CPU build, optional ``bench`` extra) runs the same workloads in a process of its
own, alternating with ours (``tinyspp.bench.common.Peer``), so neither library's thread pool
competes with the other's; ``--torch-in-process`` also times torch inside this process, as a
third column. A full CPU run writes its table, the machine, versions, thread settings and load
to ``results/bench.json`` (quoted by ``docs/performance.md``).
"""

from .common import median_ms  # public timer for notebooks and docs: median of repeats, in ms

SECTIONS = ("layers", "pyramid", "gpu", "training", "memory", "profile", "scaling", "ideas")
__all__ = ["SECTIONS", "median_ms"]
