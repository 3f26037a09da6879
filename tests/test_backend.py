"""Array-module dispatch: no GPU needed to import, clear errors when one is asked for."""

import types

import numpy as np
import pytest

from tinyspp import backend
from tinyspp.backend import asnumpy, device_of, get_array_module, gpu_available, to_device


class FakeCupyArray:
    """Looks like a CuPy array to ``is_gpu_array`` (its type lives in the ``cupy`` package)."""

    __module__ = "cupy._core.core"
    __cuda_array_interface__ = {}
    shape, ndim, dtype = (2, 2), 2, np.dtype(np.float32)


def test_gpu_available_answers_a_bool_and_never_raises():
    assert isinstance(gpu_available(), bool)


def test_gpu_available_is_false_when_cuda_raises(monkeypatch):
    class CUDARuntimeError(RuntimeError):
        pass

    def no_device():
        raise CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device)))
    gpu_available.cache_clear()
    monkeypatch.setattr(backend, "_cupy", lambda: fake)
    try:
        assert gpu_available() is False
        with pytest.raises(RuntimeError, match="no CUDA device answers.*device='cpu'"):
            to_device(np.zeros(2), "gpu")
        monkeypatch.setattr(backend, "_cupy", lambda: None)
        gpu_available.cache_clear()
        with pytest.raises(RuntimeError, match="CuPy is not installed"):
            to_device(np.zeros(2), "gpu")
    finally:
        gpu_available.cache_clear()


def test_to_device_gpu_raises_here_or_round_trips():
    x = np.arange(3.0)
    if gpu_available():
        y = to_device(x, "gpu")
        assert device_of(y) == "gpu"
        np.testing.assert_array_equal(asnumpy(to_device(y, "cpu")), x)
    else:
        with pytest.raises(RuntimeError, match="device='gpu' was requested but"):
            to_device(x, "gpu")
    with pytest.raises(ValueError, match="device must be one of"):
        to_device(x, "tpu")


def test_mixing_numpy_and_cupy_is_a_type_error():
    with pytest.raises(TypeError, match="mix of NumPy and CuPy arrays.*numpy, cupy"):
        get_array_module(np.zeros(2), FakeCupyArray())
    assert get_array_module(np.zeros(2), None, 3.0) is np
    assert device_of(np.zeros(1)) == "cpu"


def test_scatter_add_accumulates_repeated_indices_in_place(xp):
    a = xp.zeros(4, dtype=np.float32)
    backend.scatter_add(a, xp.asarray([1, 3, 1, 1]), xp.asarray([1.0, 2.0, 3.0, 4.0],
                                                                dtype=np.float32))
    assert asnumpy(a).tolist() == [0.0, 8.0, 0.0, 2.0] and a.dtype == np.float32
