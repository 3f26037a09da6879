"""Run the benchmark sections and print one table (Markdown)."""

from __future__ import annotations

import argparse
import importlib
import platform
import sys

import numpy as np

from tinyspp.bench import SECTIONS
from tinyspp.bench.common import format_table, try_torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tinyspp.bench", description=__doc__)
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only these sections")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per workload (median)")
    p.add_argument("--quick", action="store_true", help="fewer repeats, smaller workloads")
    p.add_argument("--gpu", action="store_true", help="also run the CuPy/CUDA benchmarks")
    p.add_argument("--no-torch", action="store_true", help="skip the torch comparison")
    opts = p.parse_args(argv)
    if opts.quick:
        opts.repeats = min(opts.repeats, 3)
    torch = None if opts.no_torch else try_torch()
    opts.torch = torch
    print(f"# tinyspp benchmarks: python {platform.python_version()}, numpy {np.__version__}, "
          f"torch {torch.__version__ if torch else 'not installed'}, "
          f"{platform.processor() or platform.machine()}; medians of {opts.repeats} repeats, ms")
    rows = []
    for name in opts.only or SECTIONS:
        if name == "gpu" and not opts.gpu:
            continue
        rows += importlib.import_module(f"tinyspp.bench.{name}").run(opts)
        sys.stdout.flush()
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
