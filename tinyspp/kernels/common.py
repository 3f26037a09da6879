"""What the CuPy launcher and the CPU emulation share: the kernel source, entry names, launch sizes.

Examples
--------
>>> "extern \\"C\\" __global__ void spp_forward_f32" in kernel_source()
True
>>> entry_name("spp_forward", np.float64)
'spp_forward_f64'
>>> launch_config(1000)                 # (blocks, threads): one thread per output element
(4, 256)
>>> launch_config(10**9, max_blocks=4096)
(4096, 256)
"""

from __future__ import annotations

import importlib.resources
import re

import numpy as np

SOURCE_NAME = "pyramid_pool.cu"
POOLS = ("max", "avg")
THREADS = 256
MAX_BLOCKS = 65535  # the grid-stride loop covers whatever one launch of this size does not

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def kernel_source() -> str:
    """The text of ``pyramid_pool.cu`` (package data, read next to this module)."""
    return importlib.resources.files(__package__).joinpath(SOURCE_NAME).read_text()


def entry_name(kernel: str, dtype) -> str:
    """The ``extern "C"`` entry point of ``kernel`` for a float32/float64 ``dtype``."""
    return f"{kernel}_{_SUFFIX[np.dtype(dtype)]}"


def launch_config(total: int, threads: int = THREADS, max_blocks: int = MAX_BLOCKS):
    """``(blocks, threads)`` for ``total`` work items: ``min(ceil(total / threads), max_blocks)``
    blocks; the kernels' grid-stride loop handles the rest."""
    blocks = max(1, min(-(-total // threads), max_blocks))
    return blocks, threads


# `extern "C" __global__ void name(params)`: the entry points, parsed by the emulation so it can
# generate one host wrapper per kernel without a hand-kept list of signatures.
_ENTRY = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')


def entry_points(source: str | None = None) -> dict[str, list[tuple[str, str]]]:
    """Map each entry point of the source to its ``[(type, name), ...]`` parameters.

    >>> params = entry_points()["roi_spp_backward_f64"]
    >>> params[0], params[-1]
    (('const double*', 'dout'), ('double*', 'dfeatures'))
    """
    source = kernel_source() if source is None else source
    out = {}
    for name, params in _ENTRY.findall(source):
        pairs = []
        for p in params.split(","):
            p = " ".join(p.split())
            ctype, pname = p.rsplit(" ", 1)
            if pname.startswith("*"):  # "float *x" spelling
                ctype, pname = ctype + "*", pname[1:]
            pairs.append((ctype.replace(" *", "*"), pname))
        out[name] = pairs
    return out
