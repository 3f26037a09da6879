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


# ------------------------------------------------------------------ the learning path's conventions

import re  # noqa: E402

from tinyspp.grading import EXERCISES  # noqa: E402

SOURCES = sorted((NOTEBOOK_DIR / "src").glob("[0-9][0-9]_*.py"))
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# a private name of tinyspp (`bins._adaptive`, `from tinyspp.x import _y`) or an internal module
_PRIVATE = re.compile(r"(?:\btinyspp(?:\.\w+)*\._\w+|\b(?:bins|ops|kernels|bench|viz|nn|detect)"
                      r"(?:\.\w+)*\._\w+|from tinyspp[\w.]* import[^\n]*\b_\w+|"
                      r"\b(?:bench|kernels)\.common\b)")


def _markdown_cells(src):
    return [body for kind, body in _load_builder().parse_cells(src.read_text())
            if kind == "markdown"]


def _first_link_after(text, label):
    """Target of the first Markdown link after ``label`` (e.g. "Previous:"), or None."""
    at = text.find(label)
    if at < 0:
        return None
    match = _LINK.search(text, at)
    return match.group(1) if match else None


@pytest.mark.parametrize("k", range(len(SOURCES)), ids=[s.stem for s in SOURCES])
def test_first_cell_states_assumptions_and_links_its_neighbours(k):
    first = _markdown_cells(SOURCES[k])[0]
    assert "Assumes" in first or "assumes" in first, "say what the notebook assumes"
    assert "Previous:" in first and "Next:" in first
    if k > 0:
        assert _first_link_after(first, "Previous:") == f"{SOURCES[k - 1].stem}.ipynb"
    if k + 1 < len(SOURCES):
        assert _first_link_after(first, "Next:") == f"{SOURCES[k + 1].stem}.ipynb"
    for target in _LINK.findall(first):
        if not target.startswith(("http", "#")):
            assert (NOTEBOOK_DIR / target.split("#")[0]).exists(), target


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem for s in SOURCES])
def test_every_notebook_ends_with_two_to_four_exercises(src):
    kind, last = _load_builder().parse_cells(src.read_text())[-1]
    assert kind == "markdown" and "## Exercises" in last, "end with a ## Exercises cell"
    items = re.findall(r"^(\d+)\. ", last.split("## Exercises", 1)[1], flags=re.MULTILINE)
    assert 2 <= len(items) <= 4 and items == [str(i + 1) for i in range(len(items))], items
    for item in _exercise_items(src):
        if "(graded)" in item:
            assert "python -m tinyspp grade" in item
            assert any(f"`{name}(" in item for name in EXERCISES), item[:80]


def _exercise_items(src):
    """The numbered items of a notebook's ``## Exercises`` cell."""
    last = _load_builder().parse_cells(src.read_text())[-1][1]
    return re.split(r"^\d+\. ", last.split("## Exercises", 1)[-1], flags=re.MULTILINE)[1:]


def test_every_graded_exercise_is_assigned_by_a_notebook():
    graded = {name for src in SOURCES for item in _exercise_items(src) if "(graded)" in item
              for name in EXERCISES if f"`{name}(" in item}
    assert graded == set(EXERCISES)


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem for s in SOURCES])
def test_notebooks_import_only_public_names(src):
    code = "\n".join(body for kind, body in _load_builder().parse_cells(src.read_text())
                     if kind == "code")
    assert not _PRIVATE.findall(code)


def test_figures_are_sharp_and_each_is_written_by_its_notebook():
    from PIL import Image

    saved = {m for src in SOURCES
             for m in re.findall(r"save_thumbnail\(\w+, \"(\w+)\"", src.read_text())}
    pngs = sorted((NOTEBOOK_DIR / "figures").glob("*.png"))
    assert {p.stem for p in pngs} == saved, "a figure no notebook writes, or one never committed"
    for png in pngs:
        dpi = Image.open(png).info.get("dpi", (0, 0))
        assert min(dpi) >= 109.5, f"{png.name} is saved at {dpi} dpi (at least 110)"


def test_private_name_pattern_catches_what_it_should():
    for bad in ("inspect.getsource(bins._adaptive)", "from tinyspp.bench.common import median_ms",
                "from tinyspp.ops.spp import _max_forward", "tinyspp.kernels._table(t)"):
        assert _PRIVATE.search(bad), bad
    for good in ("from tinyspp.bench import median_ms", "from tinyspp.kernels import emulate",
                 "x._cache", "viz.save_thumbnail(fig, '01_x')"):
        assert not _PRIVATE.search(good), good
