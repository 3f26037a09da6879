"""Run ``pyramid_pool.cu`` on the CPU: the SAME kernel source, compiled as C++ and run serially.

A CUDA kernel is an ordinary function that reads four built-in variables (``blockIdx``,
``threadIdx``, ``blockDim``, ``gridDim``) to find its work item. This module compiles the ``.cu``
file with the host C++ compiler behind a short prelude that

* defines ``__global__`` and ``__device__`` as nothing,
* declares the four built-ins as global ``dim3``-like structs, and
* defines a serial ``atomicAdd`` (one thread runs at a time, so a plain ``+=`` is atomic),

and appends one generated ``extern "C"`` host wrapper per entry point that sets those globals in
nested loops, block by block and thread by thread, in order, calling the kernel each time. The
shared library is built once per source version (keyed by a hash of everything compiled) in a
cache folder: ``$TINYSPP_CACHE_DIR``, else ``$XDG_CACHE_HOME/tinyspp``, else ``~/.cache/tinyspp``
(a temporary folder where none is writable). It is loaded with :mod:`ctypes` and runs on NumPy
arrays. Because the kernels use no shared memory and no ``__syncthreads``, the serial run
computes exactly what the GPU computes (up to the order of atomic float additions).

Needs a C++ compiler (``$CXX``, ``g++``, ``c++`` or ``clang++``) on Linux or macOS. You normally
reach this module through :mod:`tinyspp.kernels` with NumPy arrays, or through the ops with
``impl="kernel"``.

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
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from .common import SOURCE_NAME, entry_points, kernel_source, launch_config

COMPILERS = ("g++", "c++", "clang++")
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

# Element type of each pointer parameter, checked before any pointer reaches the library.
_POINTEE = {"float": np.float32, "double": np.float64, "index_t": np.int64}


def find_compiler() -> str | None:
    """Path of the host C++ compiler (``$CXX`` first), or None when there is none."""
    for name in (os.environ.get("CXX"), *COMPILERS):
        if name and (path := shutil.which(name)):
            return path
    return None


def cache_dir() -> Path:
    """Folder for the compiled library (created if missing); see the module docstring."""
    if os.environ.get("TINYSPP_CACHE_DIR"):
        candidates = [Path(os.environ["TINYSPP_CACHE_DIR"])]
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        candidates = [Path(xdg) / "tinyspp"]
    candidates.append(Path(tempfile.gettempdir()) / f"tinyspp-{os.getuid()}")
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise RuntimeError(f"tinyspp.kernels.emulate: no writable cache folder among {candidates}")


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
    source = emulation_source()
    key = hashlib.sha256("\n".join([source, *FLAGS]).encode()).hexdigest()[:16]
    folder = cache_dir() if folder is None else Path(folder)
    lib_path = folder / f"pyramid_pool_emulate_{key}.so"
    if not lib_path.exists():
        compiler = find_compiler()
        if compiler is None:
            raise RuntimeError(
                "tinyspp.kernels.emulate: no C++ compiler found (looked for $CXX, "
                f"{', '.join(COMPILERS)}); the CPU emulation of the CUDA kernels compiles "
                "pyramid_pool.cu with one. Install g++ (e.g. `apt-get install g++`, or Xcode "
                "command line tools on macOS), set CXX, or use impl='xp'"
            )
        folder.mkdir(parents=True, exist_ok=True)
        cpp_path = folder / f"pyramid_pool_emulate_{key}.cpp"
        cpp_path.write_text(source)
        # Build under a unique name, then rename: concurrent processes never load half a file.
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
        os.close(fd)
        proc = subprocess.run([compiler, *FLAGS, "-o", tmp, str(cpp_path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            os.unlink(tmp)
            raise RuntimeError(
                f"tinyspp.kernels.emulate: {compiler} failed to compile {cpp_path}:\n"
                f"{proc.stderr.strip()}"
            )
        os.replace(tmp, lib_path)
    return ctypes.CDLL(str(lib_path))


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
    fn, params = _wrapper(entry)
    if len(args) != len(params):
        raise TypeError(f"emulate.launch: {entry} takes {len(params)} arguments, got {len(args)}")
    values = []
    for (ctype, pname), a in zip(params, args):
        if ctype.endswith("*"):
            want = np.dtype(_POINTEE[ctype.replace("const ", "").rstrip("*")])
            if not (isinstance(a, np.ndarray) and a.flags.c_contiguous and a.dtype == want):
                got = getattr(a, "dtype", type(a).__name__)
                raise TypeError(
                    f"emulate.launch: {entry} argument {pname} must be a C-contiguous NumPy "
                    f"{want} array, got {got}"
                )
            values.append(a.ctypes.data)
        else:
            values.append(int(a))
    blocks, threads = launch_config(total, threads, max_blocks)
    with _LOCK:
        fn(blocks, threads, *values)
