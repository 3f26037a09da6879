"""Shared fixtures: hypothesis profiles, the array-module fixture, cache redirection."""

import os
import tempfile

# The suite writes nothing into the home directory: every cache goes to one temp folder.
_CACHE = tempfile.mkdtemp(prefix="tinyspp-test-cache-")
for _var, _sub in [
    ("MPLCONFIGDIR", "mpl"),
    ("XDG_CACHE_HOME", "xdg"),
    ("SCIKIT_LEARN_DATA", "sklearn"),
    ("CUPY_CACHE_DIR", "cupy"),
    ("IPYTHONDIR", "ipython"),
    ("JUPYTER_CONFIG_DIR", "jupyter"),
    ("TINYSPP_CACHE_DIR", "tinyspp"),
]:
    os.environ[_var] = os.path.join(_CACHE, _sub)
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from tinyspp.backend import gpu_available  # noqa: E402

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
