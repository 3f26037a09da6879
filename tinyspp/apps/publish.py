"""One source of truth for measured numbers: results files -> README, docs pages and notebooks.

Every measured number lives in a JSON file under ``results/`` (the repository's results folder),
written by a documented command (``python -m tinyspp experiment classify``, ``python -m tinyspp
bench``, ...). A Markdown file -- ``README.md`` or a page under ``docs/`` -- quotes such numbers
only inside a *generated block*::

    <!-- results: classify.claims -->
    ... text made by the renderer ``classify.claims`` from the results files ...
    <!-- /results -->

``python -m tinyspp.apps.publish`` rewrites every block from the current results files, and
``python -m tinyspp.apps.publish --check`` (run by ``tests/test_publish.py``) fails when a block
differs from what its renderer makes now, so no number can drift from the run that produced it.
Notebooks read the same files in a code cell (:func:`load_results`).

A renderer is a function ``render(results_dir: pathlib.Path) -> str`` returning Markdown; it is
registered in :data:`RENDERERS` under its block name as ``"module:function"``, so this module
imports a renderer only when a block asks for it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository checkout
RESULTS = ROOT / "results"

# block name -> "module:function". Each application registers its own renderers here.
RENDERERS: dict[str, str] = {
    "scale.measured": "tinyspp.apps.scale_bench:render",
    "claims.table": "tinyspp.apps.reporting:claims_table",
    "classify.details": "tinyspp.apps.reporting:classify_details",
    "notebooks.times": "tinyspp.apps.reporting:notebook_times",
    "detect.results": "tinyspp.apps.detect_demo:render_table",
    "detect.claims": "tinyspp.apps.detect_demo:render_claims",
    "bench.pyramid": "tinyspp.bench.pyramid:render_results",
    "gpu.check": "tinyspp.bench.gpu:render_results",
    **{f"bench.{k}": f"tinyspp.bench.report:render_{k}"
       for k in ("setup", "table", "targets", "targets_1thread", "profile", "ideas",
                 "fresh", "runs", "runs_same_heap", "runs_unpinned", "threads",
                 "xeon_setup", "xeon_targets", "xeon_targets_1thread", "xeon_table",
                 "xeon_threads", "xeon_runs", "xeon_ideas", "xeon_scaling",
                 "xeon_runs_same_heap", "xeon_conv_profile", "xeon_pyramid")},
}

BLOCK = re.compile(
    r"(?P<open><!-- results: (?P<name>[\w.\-]+) -->\n)(?P<body>.*?)(?P<close><!-- /results -->)",
    re.S,
)


def load_results(name: str, results_dir: Path | str | None = None) -> dict:
    """The results file ``results/<name>.json`` as a dict.

    Raises
    ------
    FileNotFoundError
        naming the file and the command that writes it (``"command"`` is recorded in every
        results file, so a missing one points to the README's list of commands).
    """
    path = Path(results_dir or RESULTS) / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"load_results: no results file {path}; run the command that "
                                f"writes it (see docs/results.md)")
    return json.loads(path.read_text())


def render(name: str, results_dir: Path | str | None = None) -> str:
    """The Markdown of block ``name``, made now from the results files."""
    if name not in RENDERERS:
        raise KeyError(f"render: unknown results block {name!r}; known: {sorted(RENDERERS)}")
    module, func = RENDERERS[name].split(":")
    text = getattr(importlib.import_module(module), func)(Path(results_dir or RESULTS))
    return text.rstrip("\n") + "\n"


def markdown_files(root: Path | str = ROOT) -> list[Path]:
    """README.md and every Markdown page under docs/ (the files that may hold blocks)."""
    root = Path(root)
    return [p for p in [root / "README.md", *sorted((root / "docs").rglob("*.md"))] if p.exists()]


def refresh(text: str, results_dir: Path | str | None = None) -> str:
    """``text`` with the body of every generated block re-rendered."""
    return BLOCK.sub(lambda m: m["open"] + render(m["name"], results_dir) + m["close"], text)


def stale_blocks(root: Path | str = ROOT, results_dir: Path | str | None = None) -> list[str]:
    """``"file: block"`` for every block whose text differs from its renderer's output."""
    stale = []
    for path in markdown_files(root):
        for m in BLOCK.finditer(path.read_text()):
            if m["body"] != render(m["name"], results_dir):
                stale.append(f"{path.relative_to(root)}: {m['name']}")
    return stale


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyspp.apps.publish",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only report blocks that differ from the results files (exit 1)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_blocks()
        for s in stale:
            print(f"stale: {s}")
        return 1 if stale else 0
    for path in markdown_files():
        text = path.read_text()
        new = refresh(text)
        if new != text:
            path.write_text(new)
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
