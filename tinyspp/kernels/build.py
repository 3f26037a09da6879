"""Compile C++ into a shared library once per source version and load it with :mod:`ctypes`.

Used by the CPU emulation of the CUDA kernels (:mod:`tinyspp.kernels.emulate`) and by the CPU
region-pooling kernel (:mod:`tinyspp.kernels.cpu`). A library is keyed by a hash of its source
and flags and kept in a cache folder: ``$TINYSPP_CACHE_DIR``, else ``$XDG_CACHE_HOME/tinyspp``,
else ``~/.cache/tinyspp`` (a temporary folder where none is writable), so each machine compiles
it once. Needs a C++ compiler (``$CXX``, ``g++``, ``c++`` or ``clang++``) on Linux or macOS.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

COMPILERS = ("g++", "c++", "clang++")


def find_compiler() -> str | None:
    """Path of the host C++ compiler (``$CXX`` first), or None when there is none."""
    for name in (os.environ.get("CXX"), *COMPILERS):
        if name and (path := shutil.which(name)):
            return path
    return None


def cache_dir() -> Path:
    """Folder for compiled libraries (created if missing); see the module docstring."""
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
    raise RuntimeError(f"tinyspp.kernels: no writable cache folder among {candidates}")


def shared_library(stem, source, flags, folder, find, who, why) -> ctypes.CDLL:
    """Compile ``source`` (unless ``folder`` already has it) and load the library.

    ``stem`` names the files (``{stem}_{hash}.so``), ``find()`` returns the compiler (called only
    when a build is needed), ``who`` prefixes error messages and ``why`` says what the compiler
    is for. Raises RuntimeError when no compiler is found or compilation fails.
    """
    key = hashlib.sha256("\n".join([source, *flags]).encode()).hexdigest()[:16]
    folder = Path(folder)
    lib_path = folder / f"{stem}_{key}.so"
    if not lib_path.exists():
        compiler = find()
        if compiler is None:
            raise RuntimeError(
                f"{who}: no C++ compiler found (looked for $CXX, {', '.join(COMPILERS)}); {why}. "
                "Install g++ (e.g. `apt-get install g++`, or Xcode command line tools on macOS), "
                "set CXX, or use impl='xp'"
            )
        folder.mkdir(parents=True, exist_ok=True)
        cpp_path = folder / f"{stem}_{key}.cpp"
        cpp_path.write_text(source)
        # Build under a unique name, then rename: concurrent processes never load half a file.
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
        os.close(fd)
        proc = subprocess.run([compiler, *flags, "-o", tmp, str(cpp_path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            os.unlink(tmp)
            raise RuntimeError(f"{who}: {compiler} failed to compile {cpp_path}:\n"
                               f"{proc.stderr.strip()}")
        os.replace(tmp, lib_path)
    return ctypes.CDLL(str(lib_path))
