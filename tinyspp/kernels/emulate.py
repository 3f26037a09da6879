"""Run ``pyramid_pool.cu`` on the CPU: the SAME kernel source, compiled as C++ and run serially.

A CUDA kernel is an ordinary function that reads four built-in variables (``blockIdx``,
``threadIdx``, ``blockDim``, ``gridDim``) to find its work item. This module compiles the ``.cu``
file with the host C++ compiler behind a short prelude that

* defines ``__global__`` and ``__device__`` as nothing,
* declares the four built-ins as global ``dim3``-like structs, and
* defines a serial ``atomicAdd`` (one thread runs at a time, so a plain ``+=`` is atomic),

and appends one generated ``extern "C"`` host wrapper per entry point that sets those globals in
nested loops, block by block and thread by thread, in order, calling the kernel each time. The
shared library is built once per source version (keyed by a hash of everything compiled) in
tinyspp's cache folder (:mod:`tinyspp.kernels.build`). It is loaded with :mod:`ctypes` and runs
on NumPy arrays. Because the kernels use no shared memory and no ``__syncthreads``, the serial run
computes exactly what the GPU computes (up to the order of atomic float additions).

Needs a C++ compiler (``$CXX``, ``g++``, ``c++`` or ``clang++``) on Linux or macOS. You normally
reach this module through :mod:`tinyspp.kernels` with NumPy arrays, or through the ops with
``impl="emulate"``.

Examples
--------
>>> import numpy as np
>>> from tinyspp import kernels
>>> from tinyspp.bins import bin_table
>>> x = np.arange(16.0).reshape(1, 1, 4, 4)
>>> out, argmax = kernels.spp_forward(x, bin_table(4, 4, (2, 1)), "max")   # runs this module
>>> out.tolist(), argmax.tolist()
([[5.0, 7.0, 13.0, 15.0, 15.0]], [[5, 7, 13, 15, 15]])
"""

from __future__ import annotations

import ctypes
import functools
import threading
from pathlib import Path

import numpy as np

from .build import cache_dir, find_compiler, shared_library
from .common import SOURCE_NAME, check_launch_args, entry_points, kernel_source, launch_config

__all__ = ["cache_dir", "compile_library", "emulation_source", "find_compiler", "launch",
           "library"]
FLAGS = ("-O2", "-std=c++14", "-shared", "-fPIC")  # never -ffast-math: NaN tests need IEEE

PRELUDE = r"""// tinyspp CPU emulation prelude: makes pyramid_pool.cu valid, serial C++.
#define __global__
#define __device__
struct tinyspp_dim3 { unsigned int x, y, z; };
static tinyspp_dim3 blockIdx, threadIdx, blockDim, gridDim;
// One emulated thread runs at a time, so the read-modify-write below is atomic.
template <typename T>
static T atomicAdd(T* address, T value) { T old = *address; *address = old + value; return old; }
"""

WRAPPER = """
extern "C" void emulate_{name}(unsigned int grid, unsigned int block, {params}) {{
    gridDim = {{grid, 1, 1}};
    blockDim = {{block, 1, 1}};
    for (unsigned int b = 0; b < grid; ++b) {{
        for (unsigned int t = 0; t < block; ++t) {{
            blockIdx = {{b, 0, 0}};
            threadIdx = {{t, 0, 0}};
            {name}({args});
        }}
    }}
}}
"""

# One emulated launch at a time: the built-in variables are process-wide globals, and ctypes
# releases the GIL during the call.
_LOCK = threading.Lock()


def emulation_source() -> str:
    """The complete C++ translation unit: prelude, the ``.cu`` file, generated wrappers."""
    parts = [PRELUDE, f'#line 1 "{SOURCE_NAME}"\n', kernel_source()]
    for name, params in entry_points().items():
        parts.append(WRAPPER.format(
            name=name,
            params=", ".join(f"{ctype} {pname}" for ctype, pname in params),
            args=", ".join(pname for _, pname in params),
        ))
    return "".join(parts)


def compile_library(folder: Path | None = None) -> ctypes.CDLL:
    """Compile (unless already cached in ``folder``) and load the emulation library.

    Raises RuntimeError when no C++ compiler is found or compilation fails.
    """
    return shared_library(
        "pyramid_pool_emulate", emulation_source(), FLAGS,
        cache_dir() if folder is None else folder,
        find=lambda: find_compiler(),  # looked up when called: tests patch it here
        who="tinyspp.kernels.emulate",
        why="the CPU emulation of the CUDA kernels compiles pyramid_pool.cu with one",
        symbols=[f"emulate_{name}" for name in entry_points()],
    )


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The emulation library, compiled once per process (and cached on disk across runs)."""
    with _LOCK:
        return compile_library()


@functools.cache
def _wrapper(entry: str):
    params = entry_points()[entry]
    fn = getattr(library(), f"emulate_{entry}")
    fn.argtypes = [ctypes.c_uint, ctypes.c_uint] + [
        ctypes.c_void_p if ctype.endswith("*") else ctypes.c_longlong for ctype, _ in params
    ]
    fn.restype = None
    return fn, params


def launch(entry: str, total: int, args, threads: int = 256, max_blocks: int = 65535) -> None:
    """Run kernel ``entry`` over ``total`` work items, every block and thread in order.

    ``args`` follow the kernel's parameter list: C-contiguous NumPy arrays of the declared
    element type for pointers (outputs are written in place), Python/NumPy ints for scalars.
    """
    params = check_launch_args("emulate.launch", entry, args,
                               lambda a: isinstance(a, np.ndarray), "NumPy")
    fn, _ = _wrapper(entry)
    values = [a.ctypes.data if ctype.endswith("*") else int(a)
              for (ctype, _), a in zip(params, args)]
    blocks, threads = launch_config(total, threads, max_blocks)
    with _LOCK:
        fn(blocks, threads, *values)
