"""``python -m tinyspp grade FOLDER``: grade a student's exercise files with property tests.

For every exercise file ``FOLDER/NAME.py`` found (``bin_edges.py``, ``spp_max.py``, ...; the
list is ``--list``) it prints ``NAME: passed`` or ``NAME: failed`` with the shrunk
counterexample (input, expected, got), then the line ``N passed, N failed``. The exit status is
0 when everything found passed, 1 when anything failed or no exercise file was found, 2 for a
usage error. The exercises and their checks live in :mod:`tinyspp.grading`; the course guide is
``docs/exercises.md``.
"""

from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    parser.add_argument("folder", nargs="?",
                        help="folder holding NAME.py files, e.g. exercises/ (stubs ship there)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="grade just these exercises")
    parser.add_argument("--examples", type=int, default=None,
                        help="drawn inputs per check (default 100)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="per exercise (default 60)")
    parser.add_argument("--seed", type=int, default=None,
                        help="draw other inputs (default: the same inputs on every run)")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the results as JSON (for an autograder)")
    parser.add_argument("--list", action="store_true", help="list the exercises and exit")
    parser.add_argument("--init", action="store_true",
                        help="write the exercise stubs into FOLDER (never overwrites a file)")


def _load():
    try:
        import tinyspp.grading as grading
    except ImportError as err:  # hypothesis is an optional dependency of the library
        print(f"grade: the grader needs hypothesis ({err}); install it with "
              "pip install \"tinyspp[grade]\" (or pip install hypothesis)", file=sys.stderr)
        return None
    return grading


def run(args) -> int:
    grading = _load()
    if grading is None:
        return 2
    if args.list:
        for ex in grading.EXERCISES.values():
            print(f"{ex.name + '.py':24s} {ex.signature}")
            print(f"{'':24s} {ex.task} (notebook {ex.notebook})")
        return 0
    if not args.folder:
        print("grade: give a FOLDER holding exercise files (e.g. exercises/), or --list",
              file=sys.stderr)
        return 2
    if args.init:
        written, kept = grading.write_stubs(args.folder)
        for path in written:
            print(f"wrote {path}")
        for path in kept:
            print(f"kept  {path} (already there)")
        return 0
    examples = grading.DEFAULT_EXAMPLES if args.examples is None else args.examples
    limit = grading.DEFAULT_TIME_LIMIT if args.time_limit is None else args.time_limit
    if examples < 1 or limit <= 0:
        print("grade: --examples must be >= 1 and --time-limit > 0", file=sys.stderr)
        return 2
    try:
        files = grading.select_files(args.folder, args.only)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    if not files:
        print(f"no exercise files in {args.folder}: expected one or more of "
              + ", ".join(f"{name}.py" for name in grading.EXERCISES))
        print(grading.summary_line([]))
        return 1
    missing = [name for name in grading.EXERCISES if name not in files]
    print(f"grading {len(files)} exercise file(s) in {args.folder}"
          + (f" (not found: {', '.join(missing)})" if missing and not args.only else ""),
          flush=True)
    results = []
    for name, path in files.items():
        result = grading.grade_file(grading.EXERCISES[name], path, max_examples=examples,
                                    time_limit_s=limit, seed=args.seed)
        results.append(result)
        print(result.report(), flush=True)
    print(grading.summary_line(results))
    if args.json:
        _write_json(args.json, results, grading.summary_line(results))
    return 0 if all(r.passed for r in results) else 1


def _write_json(path, results, summary) -> None:
    import json
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"summary": summary, "passed": sum(r.passed for r in results),
            "failed": sum(not r.passed for r in results),
            "results": [r.as_dict() for r in results]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)  # never a half-written file
