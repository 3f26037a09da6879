"""The README is a short front door whose example runs and whose links point at real files;
the docs pages' code examples run."""

import doctest
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_is_a_short_front_door():
    lines = README.splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; detail belongs in docs/"
    assert any(line.startswith("make demo") for line in lines)
    assert any(line.startswith("make test") for line in lines)
    assert "jupyter lab notebooks/" in README
    for block in ("claims.table", "notebooks.times"):
        assert f"<!-- results: {block} -->" in README


def test_readme_example_runs():
    code = re.search(r"## Ten lines of tinyspp\n\n```python\n(.*?)```", README, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    exec(compile(code, "README.md", "exec"), {})


def test_readme_links_point_at_files():
    targets = re.findall(r"\]\(((?:docs|notebooks|exercises)/[^)#]*)\)", README)
    assert targets
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert f"(notebooks/{nb.name})" in README, f"the learning path misses {nb.name}"


@pytest.mark.parametrize("page", ["pyramid.md"])
def test_docs_page_examples_run(page):
    result = doctest.testfile(str(ROOT / "docs" / page), module_relative=False,
                              optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
