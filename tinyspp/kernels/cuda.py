"""Launch ``pyramid_pool.cu`` on a CUDA device through ``cupy.RawModule``.

The source is compiled by NVRTC once per device and process (``functools.lru_cache``; CuPy also
keeps the binary in its on-disk cache, ``$CUPY_CACHE_DIR``). Launch size: 256 threads per block
and ``min(ceil(total / 256), 65535)`` blocks; the kernels' grid-stride loop covers the rest.
CuPy checks nothing about raw-kernel arguments, so :func:`launch` checks that every pointer
argument is a C-contiguous CuPy array of the declared element type
(:func:`tinyspp.kernels.common.check_launch_args`, shared with the emulation) on the current
device, and passes every scalar as ``np.int64`` (the kernels' ``long long``). The parameter
lists are parsed from the source once per process (``common.entry_points`` is cached), so a
launch costs no file reading.

You normally reach this module through :mod:`tinyspp.kernels` with CuPy arrays, or through the
ops with ``impl="cuda"`` (what ``impl="auto"`` takes for CuPy inputs). CuPy is imported only through
:mod:`tinyspp.backend`.
"""

from __future__ import annotations

import functools

import numpy as np

from .. import backend
from .common import MAX_BLOCKS, THREADS, check_launch_args, kernel_source, launch_config


def _cupy():
    cp = backend._cupy()
    if cp is None or not backend.gpu_available():
        raise RuntimeError(
            "tinyspp.kernels.cuda: needs CuPy and a CUDA device; with NumPy arrays "
            "tinyspp.kernels runs the CPU emulation instead"
        )
    return cp


@functools.cache
def module(device_id: int):
    """The compiled ``cupy.RawModule`` for one device (compiled on first use)."""
    cp = _cupy()
    with cp.cuda.Device(device_id):
        return cp.RawModule(code=kernel_source())  # NVRTC, default C++ dialect


@functools.cache
def _kernel(device_id: int, entry: str):
    return module(device_id).get_function(entry)


def launch(entry: str, total: int, args, threads: int = THREADS,
           max_blocks: int = MAX_BLOCKS) -> None:
    """Launch kernel ``entry`` over ``total`` work items on the current device.

    ``args`` follow the kernel's parameter list: C-contiguous CuPy arrays of the declared
    element type for pointers (outputs are written in place), Python/NumPy ints for scalars.
    """
    cp = _cupy()
    device_id = cp.cuda.Device().id
    params = check_launch_args("cuda.launch", entry, args, backend.is_gpu_array, "CuPy")
    values = []
    for (ctype, pname), a in zip(params, args):
        if ctype.endswith("*"):
            if a.device.id != device_id:
                raise ValueError(f"cuda.launch: {entry} argument {pname} is on device "
                                 f"{a.device.id}, but the current device is {device_id}")
            values.append(a)
        else:
            values.append(np.int64(a))
    blocks, threads = launch_config(total, threads, max_blocks)
    _kernel(device_id, entry)((blocks,), (threads,), tuple(values))
