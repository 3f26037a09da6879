"""Build the notebooks from their plain-text sources (``python notebooks/build.py [NN ...]``).

Each notebook ``NN_name.ipynb`` is generated from ``src/NN_name.py`` in the "percent" format:
a line ``# %%`` starts a code cell, ``# %% [markdown]`` a Markdown cell whose lines are written as
comments (``# `` is stripped). The sources are what gets reviewed; the ``.ipynb`` files carry the
outputs of ``make notebooks`` (a full run). Building writes notebooks WITHOUT outputs: run
``make notebooks`` (or ``python notebooks/run.py NN``) afterwards.
``tests/test_notebooks.py`` checks that every committed notebook's cells equal its source.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"


def parse_cells(text: str):
    """Split a percent-format source into ``(kind, source)`` pairs, kind "code" or "markdown"."""
    cells, kind, lines = [], None, []

    def flush():
        if kind is not None:
            body = "\n".join(lines).strip("\n")
            if body:
                cells.append((kind, body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind = "markdown" if "[markdown]" in line else "code"
            lines = []
        elif kind == "markdown":
            lines.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
        elif kind == "code":
            lines.append(line)
    flush()
    return cells


def build_notebook(src: Path):
    """A fresh notebook (no outputs) from one source file."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"
    }
    nb.metadata["language_info"] = {"name": "python"}
    for kind, body in parse_cells(src.read_text()):
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(body))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(body))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{src.stem[:2]}-{i:03d}"
    return nb


def main(argv):
    sources = sorted(SRC.glob("[0-9][0-9]_*.py"))
    if argv:
        sources = [s for s in sources if any(s.name.startswith(a) for a in argv)]
    for src in sources:
        out = HERE / f"{src.stem}.ipynb"
        nbformat.write(build_notebook(src), out)
        print(f"wrote {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main(sys.argv[1:])
