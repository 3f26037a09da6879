"""Command-line options shared by several applications (``demo``, ``train``, ``experiment``).

The dispatcher (:mod:`tinyspp.apps.cli`) imports the applications, and the applications import
this module, so the imports run one way: ``cli`` -> application -> ``options``.
"""

from __future__ import annotations

import argparse


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--threads`` and ``--no-progress``: shared by demo, train and experiment."""
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for BLAS and for tinyspp's own passes (default: all; 1 is "
                             "fastest on a busy machine; results do not depend on it)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
