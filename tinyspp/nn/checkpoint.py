"""Checkpoints: named arrays in one ``.npz`` file, written atomically, read without pickle.

File layout (plain NumPy ``.npz``, readable with ``np.load``):

=====================  ===============================================================
key                    content
=====================  ===============================================================
``format``             ``"tinyspp-checkpoint-1"``
``net/<i>.<name>``     parameter ``<name>`` of layer ``<i>`` (``Sequential.state_dict``)
``extra/<name>``       a caller's extra array (e.g. ``opt/velocity/...``)
``meta``               JSON text of the caller's extra non-array values (epoch, lr, ...)
=====================  ===============================================================

Writing goes to a temporary file in the destination folder, which is then renamed over the
destination with ``os.replace`` (atomic on POSIX and Windows): a crash mid-write leaves the old
checkpoint intact, never a truncated one.

Examples
--------
>>> import os, tempfile
>>> import numpy as np
>>> path = os.path.join(tempfile.mkdtemp(), "ck.npz")
>>> save_checkpoint(path, {"0.w": np.ones(2)}, extra={"epoch": 3, "v": np.zeros(2)})
>>> state, extra = load_checkpoint(path)
>>> state["0.w"], extra["epoch"], extra["v"]
(array([1., 1.]), 3, array([0., 0.]))
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from ..backend import asnumpy, is_gpu_array

FORMAT = "tinyspp-checkpoint-1"


def save_npz_atomic(path, arrays: dict) -> None:
    """Write ``arrays`` (name -> NumPy array) to ``path`` as ``.npz``, atomically.

    The data goes to a temporary file next to ``path`` (same folder, so the final rename never
    crosses file systems), is flushed to disk, then ``os.replace``-d over ``path``. On any error
    the temporary file is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    for name, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise TypeError(
                f"save_npz_atomic: {name!r} is not a numeric/string array (object dtype would "
                "need pickle, which loading refuses)"
            )
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_npz(path, func: str = "load_npz") -> dict:
    """Read every array of an ``.npz`` file into a dict (``allow_pickle=False``).

    Raises
    ------
    FileNotFoundError
        No file at ``path`` (the message names it).
    ValueError
        The file is not a readable ``.npz`` (truncated, corrupt, or holding pickled objects).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{func}: no checkpoint file at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        raise ValueError(
            f"{func}: {path!r} is not a readable .npz checkpoint ({type(err).__name__}: {err})"
        ) from err


def save_checkpoint(path, state: dict, extra: dict | None = None) -> None:
    """Save a network ``state`` (name -> array) and optional ``extra`` values to ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, conventionally ``*.npz``; its folder must exist.
    state : dict of str -> ndarray
        E.g. ``Sequential.state_dict()``; CuPy arrays are copied to the host.
    extra : dict of str -> value, optional
        Arrays (NumPy/CuPy) are stored as arrays; everything else (ints, floats, strings, lists,
        dicts) must be JSON-serialisable and is stored as JSON text. ``load_checkpoint`` returns
        them unchanged: use it for optimiser state, the epoch, the learning rate, a history.
    """
    arrays = {"format": np.array(FORMAT)}
    arrays.update({f"net/{k}": asnumpy(v) for k, v in state.items()})
    meta = {}
    for name, value in (extra or {}).items():
        if isinstance(value, np.ndarray) or is_gpu_array(value):
            arrays[f"extra/{name}"] = asnumpy(value)
        else:
            meta[name] = value
    try:
        arrays["meta"] = np.array(json.dumps(meta))
    except TypeError as err:
        raise TypeError(f"save_checkpoint: extra values must be arrays or JSON-serialisable "
                        f"({err})") from None
    save_npz_atomic(path, arrays)


def load_checkpoint(path, func: str = "load_checkpoint") -> tuple[dict, dict]:
    """Read a file written by ``save_checkpoint``; return ``(state, extra)`` (NumPy arrays)."""
    data = load_npz(path, func)
    if "format" not in data or str(data["format"]) != FORMAT:
        raise ValueError(f"{func}: {os.fspath(path)!r} is an .npz file but not a tinyspp "
                         f"checkpoint (no 'format' = {FORMAT!r} entry)")
    state = {k[len("net/"):]: v for k, v in data.items() if k.startswith("net/")}
    extra = json.loads(str(data["meta"])) if "meta" in data else {}
    extra.update({k[len("extra/"):]: v for k, v in data.items() if k.startswith("extra/")})
    return state, extra
