"""Execute the teaching notebooks in ``notebooks/`` with nbclient (``make notebooks``).

A tool of the repository checkout, not of the installed package: the notebooks live in the
checkout, not in the wheel. ``python notebooks/run.py`` rebuilds every ``notebooks/NN_*.ipynb``
from its source ``notebooks/src/NN_*.py`` (``notebooks/build.py``), runs it in order in a fresh
kernel of *this* interpreter and stores the outputs in place. The notebooks read the environment
variable ``TINYSPP_QUICK`` (see :func:`tinyspp.viz.quick_mode`): ``1`` shrinks data and epochs so
that the test suite can execute them in seconds (``tests/test_notebooks.py``), ``0`` is the full
run whose outputs are committed. Only a full run writes the README thumbnails to
``notebooks/figures/``.

Examples
--------
>>> [p.name for p in notebook_paths()][:2]
['00_layers_backprop.ipynb', '01_bin_math.ipynb']
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent

# Caches a kernel may create (matplotlib font cache, IPython history, CuPy kernels, ...): never the
# home directory. Variables already set by the caller (tests/conftest.py) are kept.
_CACHE_VARS = {
    "MPLCONFIGDIR": "mpl",
    "XDG_CACHE_HOME": "xdg",
    "SCIKIT_LEARN_DATA": "sklearn",
    "CUPY_CACHE_DIR": "cupy",
    "IPYTHONDIR": "ipython",
    "JUPYTER_CONFIG_DIR": "jupyter",
    "JUPYTER_DATA_DIR": "jupyter-data",
    "JUPYTER_RUNTIME_DIR": "jupyter-runtime",
    "TINYSPP_CACHE_DIR": "tinyspp",
    "HYPOTHESIS_STORAGE_DIRECTORY": "hypothesis",
}
_CACHE_ROOT = None  # one temporary folder per process, made on first need


def notebook_paths(folder: Path | str = NOTEBOOK_DIR) -> list[Path]:
    """The notebooks ``NN_*.ipynb`` of ``folder``, sorted by number."""
    return sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))


def rebuild(path: Path) -> bool:
    """Regenerate ``path`` from ``src/<stem>.py`` with ``notebooks/build.py`` (outputs cleared).

    Returns False (and leaves the notebook alone) when there is no source or no builder.
    """
    import importlib.util

    import nbformat

    path = Path(path)
    builder, source = path.parent / "build.py", path.parent / "src" / f"{path.stem}.py"
    if not (builder.exists() and source.exists()):
        return False
    spec = importlib.util.spec_from_file_location("tinyspp_notebook_build", builder)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    nbformat.write(module.build_notebook(source), path)
    return True


def kernel_env(quick: bool) -> dict:
    """The environment of the kernel: ours, plus ``TINYSPP_QUICK`` and cache folders off home.

    ``MPLBACKEND`` is dropped so that the kernel draws figures inline (the test suite sets Agg for
    itself, which would leave the notebooks without pictures).
    """
    env = dict(os.environ)
    env["TINYSPP_QUICK"] = "1" if quick else "0"
    env.pop("MPLBACKEND", None)
    missing = [var for var in _CACHE_VARS if not env.get(var)]
    if missing:
        global _CACHE_ROOT
        _CACHE_ROOT = _CACHE_ROOT or tempfile.mkdtemp(prefix="tinyspp-nb-cache-")
        for var in missing:
            env[var] = os.path.join(_CACHE_ROOT, _CACHE_VARS[var])
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


def execute_notebook(path: Path | str, quick: bool = True, timeout: int = 600, save: bool = False):
    """Execute one notebook top to bottom in a fresh kernel of ``sys.executable``.

    Parameters
    ----------
    path : path of the ``.ipynb`` file; the kernel's working directory is its folder.
    quick : sets ``TINYSPP_QUICK`` in the kernel to ``1`` (True) or ``0``.
    timeout : seconds allowed per cell.
    save : write the executed notebook (with outputs) back to ``path``.

    Returns
    -------
    nb : the executed ``nbformat.NotebookNode``. A failing cell raises
        ``nbclient.exceptions.CellExecutionError`` naming the cell and the traceback.
    """
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    env = kernel_env(quick)
    # Only the native kernel of this interpreter: a user's own "python3" kernel spec (another
    # environment) must not be picked up.
    specs = KernelSpecManager(kernel_dirs=[], ensure_native_kernel=True)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=specs)
    client = NotebookClient(nb, km=km, timeout=timeout, record_timing=False)
    client.execute(cwd=str(path.parent), env=env)
    if save:
        nb.metadata["kernelspec"] = {
            "name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"
        }
        nbformat.write(nb, path)
    return nb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python notebooks/run.py",
        description="Execute the notebooks and store their outputs in place.",
    )
    parser.add_argument("names", nargs="*",
                        help="notebooks to run (file names or prefixes such as 02); default all")
    parser.add_argument("--quick", action="store_true",
                        help="quick mode (TINYSPP_QUICK=1); default: TINYSPP_QUICK from the "
                             "environment, else a full run")
    parser.add_argument("--no-save", action="store_true", help="execute without writing outputs")
    parser.add_argument("--no-build", action="store_true",
                        help="execute the .ipynb as it is instead of rebuilding it from src/")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("TINYSPP_QUICK", "0") not in ("", "0")
    paths = notebook_paths()
    if args.names:
        paths = [p for p in paths if any(p.name.startswith(n) for n in args.names)]
    if not paths:
        print("no notebooks matched", file=sys.stderr)
        return 1
    for p in paths:
        t0 = time.perf_counter()
        if not args.no_build and not args.no_save:
            rebuild(p)
        print(f"{p.name}: running ({'quick' if quick else 'full'}) ...", flush=True)
        execute_notebook(p, quick=quick, timeout=args.timeout, save=not args.no_save)
        seconds = time.perf_counter() - t0
        print(f"{p.name}: done in {seconds:.1f} s", flush=True)
        if not quick:
            record_time(p.stem, seconds)
    return 0


def record_time(name: str, seconds: float, path: Path | None = None) -> None:
    """Merge one full run's wall time into ``results/notebooks.json`` (the README's learning
    path quotes it through the ``notebooks.times`` block)."""
    import datetime
    import json
    import platform

    path = path or NOTEBOOK_DIR.parent / "results" / "notebooks.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(command="TINYSPP_QUICK=0 python notebooks/run.py NN", cpu_cores=os.cpu_count(),
                threads=os.environ.get("OMP_NUM_THREADS", "all"))
    data.setdefault("runs", {})[name] = {
        "seconds": round(seconds, 1),
        "started": (datetime.datetime.now(datetime.UTC)
                    - datetime.timedelta(seconds=seconds)).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version()},
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    sys.exit(main())
