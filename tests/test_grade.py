"""The grader (``python -m tinyspp grade FOLDER``) grades what it should.

The library's own functions pass every exercise; every shipped wrong version
(``tests/grading_wrong/NAME/*.py``) is rejected with a counterexample; the shipped stubs
(``exercises/``) all fail as not implemented and the command exits non-zero; student code that
crashes, loops, prints, mutates its inputs or returns the wrong type is reported, not fatal.
"""

import re
import textwrap
from pathlib import Path

import pytest

from tinyspp.apps.cli import main
from tinyspp.grading import EXERCISES, find_exercise_files, grade_file, grade_function, reference

ROOT = Path(__file__).resolve().parent.parent
WRONG = Path(__file__).resolve().parent / "grading_wrong"
WRONG_FILES = sorted(p for p in WRONG.glob("*/*.py") if not p.name.startswith("_"))
EXAMPLES = 25  # drawn inputs per check: enough to catch every shipped mistake, fast
CLOSING = re.compile(r"^(\d+) passed, (\d+) failed$")


def grade(capsys, *args):
    """Run the command; return its exit status and printed lines."""
    rc = main(["grade", *map(str, args)])
    return rc, capsys.readouterr().out.strip().splitlines()


def write(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_the_library_passes_every_exercise_through_the_command(tmp_path, capsys):
    for name in EXERCISES:
        write(tmp_path, name, f"from tinyspp.grading.reference import {name}  # noqa: F401\n")
    rc, lines = grade(capsys, tmp_path, "--examples", EXAMPLES)
    assert rc == 0, "\n".join(lines)
    for name, ex in EXERCISES.items():
        assert f"{name}: passed ({len(ex.checks)} checks)" in lines
    assert lines[-1] == f"{len(EXERCISES)} passed, 0 failed"


def test_every_exercise_has_a_stub_and_at_least_two_wrong_versions():
    assert set(find_exercise_files(ROOT / "exercises")) == set(EXERCISES)
    for name in EXERCISES:
        assert len([p for p in WRONG_FILES if p.parent.name == name]) >= 2, name
    assert {p.parent.name for p in WRONG_FILES} == set(EXERCISES)


@pytest.mark.parametrize("path", WRONG_FILES,
                         ids=[f"{p.parent.name}-{p.stem}" for p in WRONG_FILES])
def test_every_shipped_wrong_version_is_rejected_with_a_counterexample(path):
    result = grade_file(EXERCISES[path.parent.name], path, max_examples=EXAMPLES)
    report = result.report()
    assert not result.passed, report
    assert result.check and result.case is not None, report
    assert result.error or (result.expected is not None and result.got is not None), report
    assert not result.not_implemented
    assert report.startswith(f"{path.parent.name}: failed") and "input:" in report


def test_the_stubs_fail_as_not_implemented_and_the_command_exits_non_zero(capsys):
    rc, lines = grade(capsys, ROOT / "exercises")
    assert rc != 0
    for name in EXERCISES:
        assert f"{name}: failed (not implemented)" in lines
    assert lines[-1] == f"0 passed, {len(EXERCISES)} failed"
    assert CLOSING.match(lines[-1])


def test_closing_line_counts_passed_and_failed(tmp_path, capsys):
    write(tmp_path, "bin_edges", "from tinyspp.grading.reference import bin_edges  # noqa\n")
    write(tmp_path, "paper_window_stride", """
        def paper_window_stride(size, n):
            return size // n, size // n
    """)
    rc, lines = grade(capsys, tmp_path, "--examples", 10)
    assert rc == 1
    assert lines[0].startswith("grading 2 exercise file(s)")
    assert "bin_edges: passed (4 checks)" in lines and "paper_window_stride: failed" in lines
    assert CLOSING.match(lines[-1]).groups() == ("1", "1")
    rc, lines = grade(capsys, tmp_path, "--examples", 10, "--only", "bin_edges")
    assert rc == 0 and lines[-1] == "1 passed, 0 failed"


def test_shrunk_counterexample_is_small():
    """A float-width bin rule fails; hypothesis shrinks to a small (size, n) that shows it."""
    path = WRONG / "bin_edges" / "floor_end.py"
    result = grade_file(EXERCISES["bin_edges"], path, max_examples=EXAMPLES)
    assert result.case["size"] < result.case["n"]  # floored ends are empty only for size < n
    assert "expected:" in result.report() and "got:" in result.report()


@pytest.mark.parametrize("body, message", [
    ("def spp_max(x, levels:\n", "could not import spp_max.py: SyntaxError"),
    ("import no_such_module_anywhere\n", "ModuleNotFoundError"),
    ("def something_else():\n    pass\n", "defines no function spp_max()"),
    ("def spp_max(x, levels):\n    raise KeyError('boom')\n",
     "raised KeyError: 'boom' (at spp_max.py:2)"),
    ("import numpy as np\ndef spp_max(x, levels):\n    return np.empty(0).max()\n",
     "raised ValueError: zero-size array to reduction operation maximum which has no identity "
     "(at spp_max.py:3)"),  # the student's line, not NumPy's
    ("import sys\ndef spp_max(x, levels):\n    sys.exit(3)\n", "raised SystemExit"),
])
def test_broken_files_are_failures_not_crashes(tmp_path, capsys, body, message):
    write(tmp_path, "spp_max", body)
    rc, lines = grade(capsys, tmp_path, "--examples", 5)
    assert rc == 1 and "spp_max: failed" in lines and lines[-1] == "0 passed, 1 failed"
    assert message in "\n".join(lines)


@pytest.mark.parametrize("body, why", [
    ("def spp_max(x, levels):\n    return x.max(axis=(2, 3)).tolist()\n",
     "must be a NumPy ndarray"),
    ("def spp_max(x, levels):\n    return x.max(axis=(2, 3))\n", "wrong shape"),
    ("import numpy as np\ndef spp_max(x, levels):\n"
     "    return np.zeros((x.shape[0], x.shape[1] * sum(n * n for n in levels)), dtype=int)\n",
     "floating-point"),
    ("from tinyspp.grading.reference import spp_max as ref\n"
     "def spp_max(x, levels):\n    out = ref(x, levels)\n    x[...] = 0\n    return out\n",
     "must not change its inputs"),
])
def test_wrong_types_shapes_and_mutation_are_reported(tmp_path, body, why):
    path = write(tmp_path, "spp_max", body)
    result = grade_file(EXERCISES["spp_max"], path, max_examples=5)
    assert not result.passed and why in result.why, result.report()


def test_printing_is_silenced_and_an_endless_loop_hits_the_time_limit(tmp_path, capsys):
    write(tmp_path, "bin_edges", """
        from tinyspp.grading.reference import bin_edges as ref

        def bin_edges(size, n):
            print("debugging output")
            return ref(size, n)
    """)
    write(tmp_path, "paper_window_stride", """
        def paper_window_stride(size, n):
            while True:
                pass
    """)
    rc, lines = grade(capsys, tmp_path, "--examples", 5, "--time-limit", "0.5")
    text = "\n".join(lines)
    assert rc == 1 and "debugging output" not in text
    assert "bin_edges: passed (4 checks)" in lines and "paper_window_stride: failed" in lines
    assert "time limit of 0.5 s reached" in text


def test_a_helper_module_beside_the_exercise_is_importable_and_forgotten(tmp_path):
    write(tmp_path, "helpers_for_grading_test", "from tinyspp.grading.reference import bin_edges\n")
    path = write(tmp_path, "bin_edges", "from helpers_for_grading_test import bin_edges  # noqa\n")
    assert grade_file(EXERCISES["bin_edges"], path, max_examples=5).passed
    import sys

    assert "helpers_for_grading_test" not in sys.modules


def test_usage_errors(tmp_path, capsys):
    rc, lines = grade(capsys, tmp_path)  # an empty folder: nothing to grade
    assert rc == 1 and lines[-1] == "0 passed, 0 failed"
    assert main(["grade", str(tmp_path / "missing")]) == 2
    assert main(["grade", str(tmp_path), "--only", "no_such_exercise"]) == 2
    assert main(["grade"]) == 2
    capsys.readouterr()
    rc, lines = grade(capsys, "--list")
    assert rc == 0 and all(any(line.startswith(f"{n}.py") for line in lines) for n in EXERCISES)


def test_grading_is_deterministic():
    path = WRONG / "spp_max_backward" / "last_max_tie.py"
    first = grade_file(EXERCISES["spp_max_backward"], path, max_examples=EXAMPLES).report()
    assert grade_file(EXERCISES["spp_max_backward"], path, max_examples=EXAMPLES).report() == first


def test_reference_answers_match_hand_worked_examples():
    import numpy as np

    assert reference.bin_edges(10, 6) == [(0, 2), (1, 4), (3, 5), (5, 7), (6, 9), (8, 10)]
    assert reference.paper_window_stride(10, 6) == (2, 1)
    assert reference.map_window((17, 3, 40, 5), 16) == (2, 0, 2, 0)  # x: 32 inside; y collapses
    out = reference.spp_max(np.arange(16.0).reshape(1, 1, 4, 4), (2, 1))
    assert out.tolist() == [[5.0, 7.0, 13.0, 15.0, 15.0]]
    result = grade_function(EXERCISES["map_window"], reference.map_window, max_examples=5)
    assert result.passed and result.checks_run == len(EXERCISES["map_window"].checks)


def test_the_course_guide_has_a_section_per_exercise_listing_its_checks():
    guide = (ROOT / "docs" / "exercises.md").read_text()
    sections = re.split(r"^## ", guide, flags=re.MULTILINE)
    for name, ex in EXERCISES.items():
        (section,) = [s for s in sections if s.startswith(f"`{name}`")]
        assert ex.signature in section, name
        for check in ex.checks:
            assert f"- {check.name}\n" in section, (name, check.name)
    assert f"`0 passed, {len(EXERCISES)} failed`" in guide  # what the stubs report


def test_init_writes_the_stubs_which_equal_the_repository_exercises(tmp_path, capsys):
    from tinyspp.grading.stubs import STUBS, stub_source

    assert set(STUBS) == set(EXERCISES)
    for name in EXERCISES:  # exercises/ is the rendered text, as shipped
        assert (ROOT / "exercises" / f"{name}.py").read_text() == stub_source(name)
    (tmp_path / "bin_edges.py").write_text("mine\n")
    rc, lines = grade(capsys, tmp_path, "--init")
    assert rc == 0 and (tmp_path / "bin_edges.py").read_text() == "mine\n"   # never overwritten
    assert sum(line.startswith("wrote") for line in lines) == len(EXERCISES) - 1
    assert set(find_exercise_files(tmp_path)) == set(EXERCISES)


def test_grade_folder_returns_one_result_per_file(tmp_path):
    from tinyspp.grading import grade_folder

    write(tmp_path, "bin_edges", "from tinyspp.grading.reference import bin_edges  # noqa\n")
    write(tmp_path, "map_window", "def map_window(box, stride):\n    return (0, 0, 0, 0)\n")
    results = grade_folder(tmp_path, max_examples=5)
    assert [(r.name, r.passed) for r in results] == [("bin_edges", True), ("map_window", False)]
    assert [r.name for r in grade_folder(tmp_path, only=["map_window"], max_examples=5)] == [
        "map_window"]
    with pytest.raises(ValueError, match="unknown exercise"):
        grade_folder(tmp_path, only=["nope"])


def test_json_results_for_an_autograder_and_a_seed_draws_other_inputs(tmp_path, capsys):
    import json

    folder = tmp_path / "answers"
    write(folder, "bin_edges", "from tinyspp.grading.reference import bin_edges  # noqa\n")
    path = write(folder, "paper_window_stride",
                 "def paper_window_stride(size, n):\n    return size // n, size // n\n")
    out = tmp_path / "out" / "grades.json"
    rc, lines = grade(capsys, folder, "--examples", 10, "--json", out, "--seed", 3)
    data = json.loads(out.read_text())
    assert rc == 1 and data["summary"] == lines[-1] == "1 passed, 1 failed"
    (ok, bad) = data["results"]
    assert ok == {**ok, "name": "bin_edges", "passed": True}
    assert bad["name"] == "paper_window_stride" and not bad["passed"]
    assert bad["input"] and bad["expected"] and bad["got"] and bad["why"]
    seeded = grade_file(EXERCISES["paper_window_stride"], path, max_examples=10, seed=3)
    assert seeded.report() == grade_file(EXERCISES["paper_window_stride"], path,
                                         max_examples=10, seed=3).report()


def test_the_sample_report_in_the_course_guide_is_what_the_grader_prints():
    path = WRONG / "spp_max_backward" / "last_max_tie.py"
    report = grade_file(EXERCISES["spp_max_backward"], path, max_examples=EXAMPLES).report()
    shown = "\n".join(line for line in report.splitlines() if not line.startswith("  why:"))
    assert shown in (ROOT / "docs" / "exercises.md").read_text()
