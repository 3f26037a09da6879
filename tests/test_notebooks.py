"""The notebooks: each one executes top to bottom in quick mode, and the committed copies are the
built sources, executed in full, with small outputs.

Execution uses a fresh kernel of this interpreter (``notebooks/run.py``'s ``execute_notebook``) and
inherits the cache variables that conftest.py redirected, so nothing is written to the home
directory; quick runs never touch ``notebooks/figures/``.
"""

import importlib.util
import json
from pathlib import Path

import pytest

from tinyspp.kernels.emulate import find_compiler

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def _load(name):
    """A tool module of the notebooks folder (``build.py``, ``run.py``), which is not a package."""
    path = NOTEBOOK_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tinyspp_notebooks_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_run = _load("run")
execute_notebook, kernel_env, notebook_paths = (
    _run.execute_notebook, _run.kernel_env, _run.notebook_paths)

NOTEBOOKS = notebook_paths()
MAX_BYTES = 1_500_000  # per committed notebook: small PNGs, no huge printed arrays


def _load_builder():
    return _load("build")


def _cells(nb):
    return [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]]


def test_every_source_has_a_notebook():
    sources = sorted(p.stem for p in (NOTEBOOK_DIR / "src").glob("[0-9][0-9]_*.py"))
    assert sources, "no notebook sources found"
    assert sources == [p.stem for p in NOTEBOOKS]


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_quick_mode(path):
    if path.stem.startswith("05") and find_compiler() is None:
        pytest.skip("05 runs the CUDA kernel through its CPU emulation, which needs a C++ "
                    "compiler (g++, c++ or clang++; none found)")
    nb = execute_notebook(path, quick=True, timeout=300, save=False)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), "some cell did not run"
    errors = [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_matches_source_and_carries_full_outputs(path):
    builder = _load_builder()
    nb = json.loads(path.read_text())
    assert _cells(nb) == builder.parse_cells((NOTEBOOK_DIR / "src" / f"{path.stem}.py").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), "commit it executed: make notebooks"
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "quick mode: False" in text, "outputs must come from a full run: make notebooks"
    assert path.stat().st_size < MAX_BYTES
    first_code = code[0]["source"]
    assert "import tinyspp" in "".join(first_code) or "from tinyspp" in "".join(first_code)


def test_kernel_env_sets_quick_flag_and_keeps_caches_off_home(monkeypatch):
    monkeypatch.delenv("IPYTHONDIR", raising=False)
    env = kernel_env(quick=True)
    assert env["TINYSPP_QUICK"] == "1" and kernel_env(quick=False)["TINYSPP_QUICK"] == "0"
    assert "MPLBACKEND" not in env
    assert env["IPYTHONDIR"] and not env["IPYTHONDIR"].startswith(str(Path.home()))
