"""Benchmarks: ``python -m tinyspp.bench [--only SECTION] [--quick] [--gpu]``.

Each section module in this package exposes ``run(opts) -> list[Row]``. Times are medians of
repeats; torch (CPU build, optional ``bench`` extra) runs the same workloads in the same process
so ratios are measured side by side.
"""

SECTIONS = ("layers", "pyramid", "gpu", "training")
