"""Array-module dispatch: NumPy on the CPU, CuPy on the GPU.

This is the only module of tinyspp that imports CuPy, and it does so lazily: a machine without
CuPy (or with CuPy but no CUDA device) never touches it unless a CuPy array is passed in.

Examples
--------
>>> import numpy as np
>>> get_array_module(np.zeros(3)) is np
True
>>> to_device(np.arange(3), "cpu")
array([0, 1, 2])
"""

from __future__ import annotations

import functools

import numpy as np

DEVICES = ("cpu", "gpu")


@functools.lru_cache(maxsize=1)
def _cupy():
    """The cupy module, or None where it is not installed (or fails to import)."""
    try:
        import cupy
    except Exception:  # ImportError, or a broken CUDA install raising at import time
        return None
    return cupy


def scatter_add(a, index, values) -> None:
    """``a[index] += values`` with repeated indices accumulated, in place, without a host sync:
    ``np.add.at`` for NumPy, ``cupyx.scatter_add`` (atomic adds) for CuPy."""
    if is_gpu_array(a):
        import cupyx

        cupyx.scatter_add(a, index, values)
    else:
        np.add.at(a, index, values)


def is_gpu_array(x) -> bool:
    """True for a CuPy ndarray; never imports CuPy to find out."""
    return type(x).__module__.split(".")[0] == "cupy" and hasattr(x, "__cuda_array_interface__")


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True when CuPy imports and at least one CUDA device answers.

    ``import cupy`` succeeds on machines without a GPU; the first device call then raises
    ``CUDARuntimeError``. This function catches that and answers False instead of crashing.
    """
    cp = _cupy()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:  # CUDARuntimeError, or a driver/library that fails to load
        return False


def get_array_module(*arrays):
    """Return ``numpy`` or ``cupy``, chosen from the array arguments.

    ``None`` and Python scalars are ignored. Mixing NumPy and CuPy arrays is a TypeError, because
    the alternative (an implicit device transfer) silently costs a copy or fails deep inside CuPy.

    >>> import numpy as np
    >>> get_array_module(None, 3.0, np.ones(2)) is np
    True
    """
    n_gpu = n_cpu = 0
    for a in arrays:
        if is_gpu_array(a):
            n_gpu += 1
        elif isinstance(a, np.ndarray):
            n_cpu += 1
    if n_gpu and n_cpu:
        kinds = ", ".join(
            "cupy" if is_gpu_array(a) else "numpy"
            for a in arrays
            if is_gpu_array(a) or isinstance(a, np.ndarray)
        )
        raise TypeError(
            "get_array_module: got a mix of NumPy and CuPy arrays "
            f"({kinds}); move them to one device first with tinyspp.backend.to_device"
        )
    return _cupy() if n_gpu else np


def asnumpy(x):
    """A NumPy copy (CuPy input) or view (NumPy/array-like input) of ``x``."""
    if is_gpu_array(x):
        return x.get()
    return np.asarray(x)


def check_device(device: str, func: str = "to_device") -> str:
    """Validate a ``device`` argument; raise a clear error when ``"gpu"`` is not usable."""
    if device not in DEVICES:
        raise ValueError(f"{func}: device must be one of {DEVICES}, got {device!r}")
    if device == "gpu" and not gpu_available():
        reason = "CuPy is not installed" if _cupy() is None else "no CUDA device answers"
        raise RuntimeError(
            f"{func}: device='gpu' was requested but {reason}; "
            "install the 'gpu' extra (cupy-cuda12x) on a machine with an NVIDIA GPU, "
            "or use device='cpu'"
        )
    return device


def to_device(x, device: str):
    """Move an array to ``"cpu"`` (NumPy) or ``"gpu"`` (CuPy); no copy if already there."""
    check_device(device)
    if device == "cpu":
        return asnumpy(x)
    return _cupy().asarray(x)


def device_of(x) -> str:
    """``"gpu"`` for a CuPy array, ``"cpu"`` otherwise."""
    return "gpu" if is_gpu_array(x) else "cpu"


def synchronize(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU); for honest wall-clock timings."""
    if check_device(device, "synchronize") == "gpu":
        _cupy().cuda.Device().synchronize()


def gpu_count() -> int:
    """How many CUDA devices CuPy sees (0 without CuPy or without a device)."""
    cp = _cupy()
    if cp is None:
        return 0
    try:
        return int(cp.cuda.runtime.getDeviceCount())
    except Exception:  # CUDARuntimeError without a driver; ImportError of a broken install
        return 0


def use_gpu(index: int) -> None:
    """Make CUDA device ``index`` current for this thread (CuPy's current device is per thread).

    Raises
    ------
    RuntimeError
        where no CUDA device answers (:func:`check_device`'s message).
    """
    check_device("gpu", "use_gpu")
    _cupy().cuda.Device(int(index)).use()
