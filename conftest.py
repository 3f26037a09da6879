"""Loaded first by pytest for every test path (tests/, tinyspp/ doctests, notebooks/).

The suite writes nothing into the home directory: every cache goes to one temporary folder.
"""

import os
import tempfile

_CACHE = tempfile.mkdtemp(prefix="tinyspp-test-cache-")
for _var, _sub in [
    ("MPLCONFIGDIR", "mpl"),
    ("XDG_CACHE_HOME", "xdg"),
    ("SCIKIT_LEARN_DATA", "sklearn"),
    ("CUPY_CACHE_DIR", "cupy"),
    ("IPYTHONDIR", "ipython"),
    ("JUPYTER_CONFIG_DIR", "jupyter"),
    ("TINYSPP_CACHE_DIR", "tinyspp"),
    ("IMAGEIO_USERDIR", "imageio"),  # imageio's plugin and download folder (else ~/.imageio)
]:
    os.environ[_var] = os.path.join(_CACHE, _sub)
os.environ.setdefault("MPLBACKEND", "Agg")
