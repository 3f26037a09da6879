"""Launch ``pyramid_pool.cu`` on a CUDA device through ``cupy.RawModule``.

The source is compiled by NVRTC once per device and process (``functools.lru_cache``; CuPy also
keeps the binary in its on-disk cache, ``$CUPY_CACHE_DIR``). Launch size: 256 threads per block
and ``min(ceil(total / 256), 65535)`` blocks; the kernels' grid-stride loop covers the rest.
CuPy checks nothing about raw-kernel arguments, so :func:`launch` checks that every pointer
argument is a C-contiguous CuPy array of the declared element type on the current device, and
passes every scalar as ``np.int64`` (the kernels' ``long long``).

You normally reach this module through :mod:`tinyspp.kernels` with CuPy arrays, or through the
ops with ``impl="kernel"`` (the default for CuPy inputs). CuPy is imported only through
:mod:`tinyspp.backend`.
"""

from __future__ import annotations

import functools

import numpy as np

from .. import backend
from .common import MAX_BLOCKS, THREADS, entry_points, kernel_source, launch_config

_POINTEE = {"float": np.float32, "double": np.float64, "index_t": np.int64}


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
    params = entry_points()[entry]
    if len(args) != len(params):
        raise TypeError(f"cuda.launch: {entry} takes {len(params)} arguments, got {len(args)}")
    values = []
    for (ctype, pname), a in zip(params, args):
        if ctype.endswith("*"):
            want = np.dtype(_POINTEE[ctype.replace("const ", "").rstrip("*")])
            if not backend.is_gpu_array(a):
                raise TypeError(f"cuda.launch: {entry} argument {pname} must be a CuPy array, "
                                f"got {type(a).__name__}")
            if a.dtype != want or not a.flags.c_contiguous:
                raise TypeError(f"cuda.launch: {entry} argument {pname} must be a C-contiguous "
                                f"{want} array, got {a.dtype} (C-contiguous: "
                                f"{a.flags.c_contiguous})")
            if a.device.id != device_id:
                raise ValueError(f"cuda.launch: {entry} argument {pname} is on device "
                                 f"{a.device.id}, but the current device is {device_id}")
            values.append(a)
        else:
            values.append(np.int64(a))
    blocks, threads = launch_config(total, threads, max_blocks)
    _kernel(device_id, entry)((blocks,), (threads,), tuple(values))
