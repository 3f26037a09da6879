"""Compile C++ into a shared library once per source version and load it with :mod:`ctypes`.

Used by the CPU emulation of the CUDA kernels (:mod:`tinyspp.kernels.emulate`) and by the CPU
region-pooling kernel (:mod:`tinyspp.kernels.cpu`). A library is keyed by a hash of its source
and flags and kept in a cache folder, so each machine compiles it once:
``$TINYSPP_CACHE_DIR``, else ``$XDG_CACHE_HOME/tinyspp``, else ``~/.cache/tinyspp``, and where
none of these is writable a private folder ``tinyspp-<uid>`` in the system temporary directory
(created 0700; refused when another user owns it or others may write to it, since anyone who
can write there could plant a library that this process would load). Needs a C++ compiler
(``$CXX``, ``g++``, ``c++`` or ``clang++``) on Linux or macOS.

How a build stays safe when several processes start at once on an empty cache:

1. each process compiles in its own temporary folder inside the cache folder (a unique source
   file and a unique output: nobody compiles a file another process is writing);
2. the new library is loaded and every entry point the caller needs is looked up;
3. only then is it moved into place with an atomic ``os.replace`` (a reader sees the old file or
   the complete new one, never half of one; the last of several identical builds wins);
4. the temporary folder is removed on every path (success, compiler error, timeout, interrupt).

A cached library that fails to load or lacks an entry point (a truncated file, a build from an
older tinyspp) is removed and rebuilt, so the next process finds a good one.

>>> library_path("probe", "int a;", ("-O0",), "/tmp/cache").name  # stem, hash of source + flags
'probe_2cd740a23783c739.so'
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

COMPILERS = ("g++", "c++", "clang++")
COMPILE_TIMEOUT = 300  # seconds; $TINYSPP_COMPILE_TIMEOUT overrides


def find_compiler() -> str | None:
    """Path of the host C++ compiler (``$CXX`` first), or None when there is none."""
    for name in (os.environ.get("CXX"), *COMPILERS):
        if name and (path := shutil.which(name)):
            return path
    return None


def private_folder_problem(folder: Path) -> str | None:
    """Why ``folder`` must not hold libraries this process loads, or None when it is safe:
    it must be a real directory (not a symlink) owned by this user and writable by no one else."""
    try:
        st = os.lstat(folder)
    except OSError as err:
        return f"cannot stat it ({err.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory (a symlink or a file)"
    if st.st_uid != os.getuid():
        return f"it is owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"others may write to it (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def temp_cache_dir() -> Path:
    """The fallback cache: ``<tmp>/tinyspp-<uid>``, created 0700; RuntimeError when unsafe."""
    folder = Path(tempfile.gettempdir()) / f"tinyspp-{os.getuid()}"
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    problem = private_folder_problem(folder)
    if problem:
        raise RuntimeError(f"tinyspp.kernels: refusing the cache folder {folder}: {problem}; "
                           "set TINYSPP_CACHE_DIR to a folder of your own")
    return folder


def cache_dir() -> Path:
    """Folder for compiled libraries (created if missing); see the module docstring."""
    if os.environ.get("TINYSPP_CACHE_DIR"):
        folder = Path(os.environ["TINYSPP_CACHE_DIR"])
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = Path(xdg) / "tinyspp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    return temp_cache_dir()


def _load(path, symbols):
    """``(library, [])`` if ``path`` loads and has every symbol, else ``(None, what is wrong)``
    with the handle released."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        return None, [f"does not load: {err}"]
    missing = [name for name in symbols if not hasattr(lib, name)]
    if not missing:
        return lib, []
    _unload(lib)
    return None, missing


def _unload(lib):
    """Release a library handle, so a later load of the same path maps the new file (glibc
    returns an already-open library by name)."""
    try:
        import _ctypes

        _ctypes.dlclose(lib._handle)
    except (ImportError, AttributeError, OSError):  # not POSIX: the handle just stays open
        pass


def library_path(stem, source, flags, folder) -> Path:
    """Where the build of ``source`` with ``flags`` is cached: ``{folder}/{stem}_{hash}.so``."""
    key = hashlib.sha256("\n".join([source, *flags]).encode()).hexdigest()[:16]
    return Path(folder) / f"{stem}_{key}.so"


def shared_library(stem, source, flags, folder, find, who, why, symbols=()) -> ctypes.CDLL:
    """Load the cached build of ``source`` from ``folder``, building it first when needed.

    ``stem`` names the files (``{stem}_{hash}.so``), ``find()`` returns the compiler (called only
    when a build is needed), ``who`` prefixes error messages, ``why`` says what the compiler is
    for and ``symbols`` are the entry points a good library has. A cached file that does not
    load or lacks a symbol is deleted and rebuilt. Raises RuntimeError when no compiler is
    found, compilation fails or times out, or the new library lacks a symbol.
    """
    folder = Path(folder)
    lib_path = library_path(stem, source, flags, folder)
    if lib_path.exists():
        lib, _ = _load(lib_path, symbols)
        if lib is not None:
            return lib
        try:  # unusable: never keep it
            lib_path.unlink()
        except FileNotFoundError:  # another process healed it first
            pass
    compiler = find()
    if compiler is None:
        raise RuntimeError(
            f"{who}: no C++ compiler found (looked for $CXX, {', '.join(COMPILERS)}); {why}. "
            "Install g++ (e.g. `apt-get install g++`, or Xcode command line tools on macOS), "
            "set CXX, or use impl='xp'"
        )
    folder.mkdir(parents=True, exist_ok=True)
    timeout = float(os.environ.get("TINYSPP_COMPILE_TIMEOUT", COMPILE_TIMEOUT))
    with tempfile.TemporaryDirectory(prefix=f".{stem}-build-", dir=folder) as tmp:
        cpp_path = Path(tmp) / (lib_path.stem + ".cpp")
        out_path = Path(tmp) / lib_path.name
        cpp_path.write_text(source)
        try:
            proc = subprocess.run([compiler, *flags, "-o", str(out_path), str(cpp_path)],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{who}: {compiler} did not finish compiling {stem} within "
                               f"{timeout:g} s (TINYSPP_COMPILE_TIMEOUT sets the limit)") from None
        if proc.returncode != 0:
            raise RuntimeError(f"{who}: {compiler} failed to compile {stem}:\n"
                               f"{proc.stderr.strip()}")
        lib, missing = _load(out_path, symbols)
        if lib is None:
            raise RuntimeError(f"{who}: the library {compiler} built from {stem} is unusable "
                               f"(missing {missing[:4]}); not caching it")
        os.replace(out_path, lib_path)  # atomic: readers see no file or the whole good one
    return lib


class Availability:
    """``available()`` and ``why_unavailable()`` for a compiled library: ``load()`` is tried once
    (cached; ``available.cache_clear()`` tries again) and ANY failure to build or load it (no
    compiler, a compiler error, an unusable library, an unsafe cache folder) answers False, so
    the caller runs its NumPy path; ``reasons`` keeps why."""

    def __init__(self, load):
        self.reasons: list[str] = []

        @functools.lru_cache(maxsize=1)
        def available() -> bool:
            try:
                load()
            except Exception as err:  # noqa: BLE001 -- every failure means: use the NumPy path
                self.reasons[:] = [f"{type(err).__name__}: {str(err).splitlines()[0]}"]
                return False
            return True

        self.available = available

    def why_unavailable(self) -> str:
        """Why ``available()`` answered False ("" when it has not)."""
        return self.reasons[0] if self.reasons else ""


def bind(lib: ctypes.CDLL, signatures: dict) -> ctypes.CDLL:
    """Declare every entry point ``name -> signature`` of ``lib`` for ctypes (``p`` a pointer,
    ``q`` a 64-bit integer, no return value), so each call converts and checks its arguments;
    returns ``lib``."""
    ctype = {"p": ctypes.c_void_p, "q": ctypes.c_longlong}
    for name, signature in signatures.items():
        fn = getattr(lib, name)
        fn.restype = None
        fn.argtypes = [ctype[k] for k in signature]
    return lib


def array_pointer(a, who: str, name: str, dtype, shape) -> int:
    """The data pointer of ``a``, once it is a C-contiguous NumPy array of ``dtype`` and
    ``shape`` (TypeError naming ``who`` and the argument ``name`` otherwise): what a kernel's
    glue checks before an address reaches compiled code."""
    import numpy as np

    if not (isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous
            and a.shape == tuple(shape)):
        got = f"{type(a).__name__} {getattr(a, 'dtype', '')} {getattr(a, 'shape', '')}"
        raise TypeError(f"{who}: {name} must be a C-contiguous {np.dtype(dtype)} NumPy array "
                        f"of shape {tuple(shape)}, got {got}")
    return a.__array_interface__["data"][0]


def float_entry_points(signatures: dict) -> dict:
    """``{name}_f32`` and ``{name}_f64`` for every ``name -> signature`` (see :func:`bind`):
    the entry points of a kernel file whose functions come in float32 and float64 versions."""
    return {f"{name}_{suffix}": signature for name, signature in signatures.items()
            for suffix in ("f32", "f64")}


class CppKernels:
    """One C++ kernel file shipped with the package whose functions come in float32 and
    float64 versions: ``library()`` compiles it with the CPU flags
    (:func:`tinyspp.kernels.cpu.flags`) once per machine into the cache folder, checks for and
    binds the entry points of ``signatures`` (``name -> signature``, see :func:`bind`);
    RuntimeError without a C++ compiler, ``who`` and ``why`` naming the caller in the errors.
    ``available()`` / ``why_unavailable()`` as :class:`Availability` says."""

    def __init__(self, stem: str, source_name: str, signatures: dict, who: str, why: str,
                 features: tuple = ("AVX2",)):
        self.stem, self.source_name, self.who, self.why = stem, source_name, who, why
        self.features = tuple(features)  # CPU features whose flags the build uses (cpu.flags)
        self.signatures = dict(signatures)
        self.state = Availability(lambda: self.library())
        self.available, self.why_unavailable = self.state.available, self.state.why_unavailable

    def entry_points(self) -> dict:
        """Every entry point a good build exports, with its ctypes signature."""
        return float_entry_points(self.signatures)

    @functools.cached_property
    def _library(self) -> ctypes.CDLL:
        from .common import kernel_source

        entries = self.entry_points()
        lib = shared_library(self.stem, kernel_source(self.source_name), self.flags(),
                             cache_dir(),
                             find=lambda: find_compiler(), who=self.who, why=self.why,
                             symbols=list(entries))
        return bind(lib, entries)

    def flags(self) -> tuple:
        """The compiler flags of this file's build on this machine."""
        from .cpu import flags

        return flags(self.features)

    def library(self) -> ctypes.CDLL:
        """The compiled, bound library (built on the first call; an error is raised again on
        every call, as the build is retried)."""
        return self._library

    def api(self) -> tuple:
        """``(entry_points, library, available, why_unavailable)``: the functions a kernel
        module exports under those names."""
        return self.entry_points, self.library, self.available, self.why_unavailable
