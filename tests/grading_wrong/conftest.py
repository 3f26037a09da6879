"""The wrong answers here are exercise files graded by tests/test_grade.py, not test modules:
pytest must not import them (their names repeat the exercise functions, and they import their
sibling helper ``_common`` the way a student's folder would)."""

collect_ignore_glob = ["*/*.py"]
