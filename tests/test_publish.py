"""Numbers quoted in README.md and docs/ equal the results files (tinyspp.apps.publish)."""

import json

import pytest

from tinyspp.apps import publish


def test_every_generated_block_equals_its_results_file():
    stale = publish.stale_blocks()
    assert not stale, ("these blocks differ from the results files; run "
                       "`python -m tinyspp.apps.publish` after the documented command: "
                       f"{stale}")


def _fake_renderer(results_dir):
    return f"measured {publish.load_results('fake', results_dir)['x']} ms"


def test_refresh_and_stale_detection(tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "fake.json").write_text(json.dumps({"x": 1.5}))
    monkeypatch.setitem(publish.RENDERERS, "fake.x", f"{__name__}:_fake_renderer")
    page = "intro\n<!-- results: fake.x -->\nmeasured 9 ms\n<!-- /results -->\nend\n"
    (tmp_path / "README.md").write_text(page)
    assert publish.stale_blocks(tmp_path, tmp_path / "results") == ["README.md: fake.x"]
    fresh = publish.refresh(page, tmp_path / "results")
    assert fresh == "intro\n<!-- results: fake.x -->\nmeasured 1.5 ms\n<!-- /results -->\nend\n"
    (tmp_path / "README.md").write_text(fresh)
    assert publish.stale_blocks(tmp_path, tmp_path / "results") == []


def test_unknown_block_and_missing_results_file_are_named(tmp_path):
    with pytest.raises(KeyError, match="unknown results block 'nope'"):
        publish.render("nope")
    with pytest.raises(FileNotFoundError, match="no results file .*missing.json"):
        publish.load_results("missing", tmp_path)
