"""Shared fixtures: hypothesis profiles and the array-module fixture.

Cache folders are redirected in the repository-root conftest.py (loaded first).
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from tinyspp.backend import gpu_available

settings.register_profile(
    "dev", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", deadline=None, max_examples=25, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

GPU_REASON = "needs CuPy and a CUDA device (none here); run `make test-gpu` on a GPU machine"


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The array module under test: numpy always, cupy where a GPU is present."""
    if request.param == "numpy":
        return np
    if not gpu_available():
        pytest.skip(GPU_REASON)
    import cupy

    return cupy


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_collection_modifyitems(config, items):
    """tests/test_roi.py runs each test with both NumPy region-pooling paths (its ``numpy_path``
    parameter); for CuPy arrays that parameter changes nothing, so one CuPy copy is kept."""
    def redundant(item):
        params = getattr(getattr(item, "callspec", None), "params", {})
        return params.get("xp") == "cupy" and params.get("numpy_path") == "xp"

    dropped = [item for item in items if redundant(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not redundant(item)]
