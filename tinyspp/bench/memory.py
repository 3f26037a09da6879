"""Peak memory of one training step of the small SPP-net, tinyspp vs torch (section ``memory``).

The measurement is described in :mod:`tinyspp.bench.training`; this module only makes it a
section of its own, so timing rows and memory rows stay apart.
"""

from __future__ import annotations

from .common import Row
from .training import memory_rows


def run(opts) -> list[Row]:
    return memory_rows(opts)
