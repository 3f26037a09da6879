"""Exercises graded by property tests: ``python -m tinyspp grade FOLDER``.

A student writes one function per file, ``FOLDER/NAME.py`` defining ``NAME``, for any of the
exercises below (stubs ship in the repository's ``exercises/`` folder). The grader runs, for every
exercise file it finds, hypothesis property tests and a comparison with the library on drawn
inputs, and prints ``NAME: passed`` or ``NAME: failed`` with the shrunk counterexample (input,
expected, got). The course guide is ``docs/exercises.md``.

==========================  =================================================  ===============
exercise                    task                                               notebook
==========================  =================================================  ===============
``softmax_cross_entropy``   the loss and its gradient, stable                  00_layers_backprop
``conv2d_backward``         dx, dw, db of a strided, padded convolution        00_layers_backprop
``bin_edges``               adaptive bins of one axis                          01_bin_math
``paper_window_stride``     the paper's window and stride                      01_bin_math
``spp_max``                 adaptive max SPP forward                           02_spp_layer
``spp_max_backward``        its gradient (first-maximum ties)                  02_spp_layer
``map_window``              image window to feature cells (Appendix A)         04_region_pooling
==========================  =================================================  ===============

Needs hypothesis (``pip install "tinyspp[grade]"``).

Examples
--------
>>> from tinyspp.grading import EXERCISES, grade_function, reference
>>> list(EXERCISES)[:3]
['softmax_cross_entropy', 'conv2d_backward', 'bin_edges']
>>> print(grade_function(EXERCISES["bin_edges"], reference.bin_edges, max_examples=10).report())
bin_edges: passed (4 checks)
"""

from __future__ import annotations

from pathlib import Path

from . import reference
from .geometry_exercises import BIN_EDGES, MAP_WINDOW, PAPER_WINDOW_STRIDE
from .layer_exercises import CONV2D_BACKWARD, SPP_MAX, SPP_MAX_BACKWARD
from .loss_exercises import SOFTMAX_CROSS_ENTROPY
from .runner import (
    DEFAULT_EXAMPLES,
    DEFAULT_TIME_LIMIT,
    Check,
    Exercise,
    Mismatch,
    Result,
    grade_file,
    grade_function,
)
from .stubs import stub_source

#: Every graded exercise by name, in the order of the learning path's notebooks.
EXERCISES = {
    ex.name: ex
    for ex in (SOFTMAX_CROSS_ENTROPY, CONV2D_BACKWARD, BIN_EDGES, PAPER_WINDOW_STRIDE, SPP_MAX,
               SPP_MAX_BACKWARD, MAP_WINDOW)
}

__all__ = [
    "EXERCISES", "DEFAULT_EXAMPLES", "DEFAULT_TIME_LIMIT", "Check", "Exercise", "Mismatch",
    "Result", "find_exercise_files", "grade_file", "grade_folder", "grade_function", "reference",
    "select_files",
    "summary_line", "write_stubs",
]


def find_exercise_files(folder) -> dict:
    """``{name: path}`` of the exercise files ``folder/NAME.py`` present, in exercise order.

    Raises ValueError when ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"grade: {str(folder)!r} is not a folder (expected a folder holding "
                         f"files such as bin_edges.py)")
    return {name: folder / f"{name}.py" for name in EXERCISES if (folder / f"{name}.py").is_file()}


def write_stubs(folder) -> tuple[list, list]:
    """Write the exercise stubs (``NAME.py`` raising NotImplementedError) into ``folder``.

    Existing files are never overwritten. Returns ``(written, kept)`` lists of paths. The text
    comes from :mod:`tinyspp.grading.stubs`; the repository's ``exercises/`` holds it as shipped.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, kept = [], []
    for name in EXERCISES:
        path = folder / f"{name}.py"
        if path.exists():
            kept.append(path)
            continue
        path.write_text(stub_source(name))
        written.append(path)
    return written, kept


def select_files(folder, only=None) -> dict:
    """:func:`find_exercise_files`, restricted to the names in ``only`` when given.

    Raises ValueError for a name that is not an exercise.
    """
    files = find_exercise_files(folder)
    if only:
        unknown = sorted(set(only) - set(EXERCISES))
        if unknown:
            raise ValueError(f"grade: unknown exercise(s) {unknown}; "
                             f"known: {', '.join(EXERCISES)}")
        files = {k: v for k, v in files.items() if k in only}
    return files


def grade_folder(folder, only=None, **kwargs) -> list[Result]:
    """Grade every exercise file of ``folder`` (or just the names in ``only``).

    ``kwargs`` go to :func:`grade_file` (``max_examples``, ``time_limit_s``, ``seed``).
    """
    return [grade_file(EXERCISES[name], path, **kwargs)
            for name, path in select_files(folder, only).items()]


def summary_line(results) -> str:
    """``"N passed, N failed"``, the grader's closing line."""
    passed = sum(r.passed for r in results)
    return f"{passed} passed, {len(results) - passed} failed"
