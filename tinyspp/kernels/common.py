"""What the CuPy launcher and the CPU emulation share: kernel sources, entry points, launch sizes,
and the check of every argument before a pointer reaches compiled code.

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

import functools
import importlib.resources
import re

import numpy as np

SOURCE_NAME = "pyramid_pool.cu"
POOLS = ("max", "avg")
THREADS = 256
MAX_BLOCKS = 65535  # the grid-stride loop covers whatever one launch of this size does not

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}

# Element type of each pointer parameter of pyramid_pool.cu.
POINTEE = {"float": np.float32, "double": np.float64, "index_t": np.int64}


@functools.cache
def kernel_source(name: str = SOURCE_NAME) -> str:
    """The text of a kernel source shipped with the package (``pyramid_pool.cu`` by default,
    or ``region_max.cpp``): package data next to this module, read once per process."""
    return importlib.resources.files(__package__).joinpath(name).read_text()


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
    """Map each entry point of the source to its ``[(type, name), ...]`` parameters (the
    package's ``pyramid_pool.cu`` when ``source`` is None: parsed once per process).

    >>> params = entry_points()["roi_spp_backward_f64"]
    >>> params[0], params[-1]
    (('const double*', 'dout'), ('double*', 'dfeatures'))
    """
    return _parse_entry_points(kernel_source() if source is None else source)


@functools.lru_cache(maxsize=4)
def _parse_entry_points(source: str):
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


def check_launch_args(who: str, entry: str, args, is_array, kind: str):
    """Check ``args`` against ``entry``'s parameter list before anything is launched.

    Every pointer argument must satisfy ``is_array(a)`` (``kind`` names what that is in the
    message, e.g. "NumPy") and be C-contiguous with the declared element type; scalars must be
    integers. Returns the parameter list. Both the CUDA launcher and the CPU emulation call
    this, so a wrong dtype or a strided view never reaches the kernel as a raw pointer.
    """
    params = entry_points()[entry]
    if len(args) != len(params):
        raise TypeError(f"{who}: {entry} takes {len(params)} arguments, got {len(args)}")
    for (ctype, pname), a in zip(params, args):
        if ctype.endswith("*"):
            want = np.dtype(POINTEE[ctype.replace("const ", "").rstrip("*")])
            if not is_array(a):
                raise TypeError(f"{who}: {entry} argument {pname} must be a C-contiguous {kind} "
                                f"{want} array, got {type(a).__name__}")
            if a.dtype != want or not a.flags.c_contiguous:
                raise TypeError(f"{who}: {entry} argument {pname} must be a C-contiguous {kind} "
                                f"{want} array, got {a.dtype} (C-contiguous: "
                                f"{a.flags.c_contiguous})")
        elif isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"{who}: {entry} argument {pname} must be an integer, got {a!r}")
    return params
