"""The grading machinery: load a student's file, run each check with hypothesis, report.

An :class:`Exercise` is a list of :class:`Check` objects. A check draws inputs from a hypothesis
strategy (a dict of the function's arguments, in signature order), calls the student's function
and raises :class:`Mismatch` when the answer is wrong. :func:`grade_function` runs the checks of
one exercise in order and stops at the first failure: hypothesis shrinks the failing input to a
small one, and the :class:`Result` keeps that shrunk counterexample with what was expected and
what came back.

The student's code runs in this process, guarded: exceptions (also ``SystemExit``), wrong types
and shapes, modified inputs and printing are reported as failures, never crash the grader, and
each exercise has a time limit (``SIGALRM`` where the platform has it, on the main thread).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky

DEFAULT_EXAMPLES = 100  # drawn inputs per check
DEFAULT_TIME_LIMIT = 60.0  # seconds per exercise


class Mismatch(AssertionError):
    """A check's verdict on one input: what was expected and what came back."""

    def __init__(self, expected, got, why: str = ""):
        super().__init__(why or "wrong answer")
        self.expected, self.got, self.why = expected, got, why


class StudentError(Exception):
    """The student's function raised; ``exc`` is its exception, ``where`` its last frame."""

    def __init__(self, exc: BaseException):
        super().__init__(f"{type(exc).__name__}: {exc}")
        self.exc = exc
        frames = traceback.extract_tb(exc.__traceback__)
        # the innermost frame in the student's own code (not NumPy's, not the grader's)
        own = [f for f in frames if not _library_file(f.filename)] or frames
        self.where = f"{Path(own[-1].filename).name}:{own[-1].lineno}" if own else ""


def _library_file(filename: str) -> bool:
    """True for files of installed packages, the standard library or tinyspp itself."""
    import sysconfig

    path = Path(filename).resolve()
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")}
    roots.add(str(Path(__file__).resolve().parents[1]))  # the tinyspp package
    return "site-packages" in path.parts or any(
        path.is_relative_to(Path(r).resolve()) for r in roots)


class GradingTimeout(BaseException):
    """Raised by the alarm when an exercise runs past its time limit.

    A ``BaseException``, so that hypothesis does not treat it as a failing example and shrink.
    """


@dataclass(frozen=True)
class Check:
    """One test of an exercise.

    ``inputs`` draws a dict of arguments (in the function's signature order); ``verify(fn,
    case)`` calls ``fn`` through :func:`call` and raises :class:`Mismatch` on a wrong answer.
    ``examples`` are cases always tried first (known pitfalls).
    """

    name: str
    inputs: st.SearchStrategy
    verify: Callable
    examples: tuple = ()


@dataclass(frozen=True)
class Exercise:
    """A function a student writes, ``name(signature)``, and the checks that grade it."""

    name: str
    signature: str
    task: str
    checks: tuple
    notebook: str = ""


@dataclass
class Result:
    """The outcome of grading one exercise. On failure ``check`` names the failed check and
    ``case``/``expected``/``got`` hold its (shrunk) counterexample; ``error`` says why when the
    function could not be graded at all (missing, import error, time limit)."""

    name: str
    passed: bool
    checks_run: int = 0
    checks_total: int = 0
    check: str | None = None
    case: dict | None = None
    expected: object = None
    got: object = None
    why: str = ""
    error: str = ""
    seconds: float = 0.0
    not_implemented: bool = False

    def as_dict(self) -> dict:
        """The result as JSON-ready values (the counterexample as the text :meth:`report`
        prints), for autograders: ``python -m tinyspp grade FOLDER --json results.json``."""
        out = {"name": self.name, "passed": self.passed, "checks_run": self.checks_run,
               "checks_total": self.checks_total, "check": self.check, "error": self.error,
               "not_implemented": self.not_implemented, "seconds": round(self.seconds, 3)}
        if self.case is not None:
            out["input"] = show_case(self.case)
        if not self.passed and not self.error:
            out.update(expected=show(self.expected), got=show(self.got), why=self.why)
        return out

    def report(self) -> str:
        """The text the grader prints for this exercise."""
        if self.passed:
            return f"{self.name}: passed ({self.checks_total} checks)"
        lines = [f"{self.name}: failed" + (" (not implemented)" if self.not_implemented else "")]
        if self.check:
            lines.append(f"  check {self.checks_run} of {self.checks_total}: {self.check}")
        if self.error:
            lines.append(f"  error:    {self.error}")
        if self.not_implemented:
            return "\n".join(lines)
        if self.case is not None:
            lines.append("  input:    " + _indent(show_case(self.case), 12))
            if not self.error:
                lines.append("  expected: " + _indent(show(self.expected), 12))
                lines.append("  got:      " + _indent(show(self.got), 12))
            if self.why:
                lines.append(f"  why:      {self.why}")
        return "\n".join(lines)


# --- showing values ---------------------------------------------------------------------------

def show(value) -> str:
    """A short readable rendering of an argument or a result (arrays with their shape)."""
    if isinstance(value, np.ndarray):
        body = np.array2string(value, precision=4, threshold=120, separator=", ",
                               max_line_width=88, suppress_small=True)
        return f"array of shape {value.shape}, {value.dtype}:\n{body}"
    if isinstance(value, tuple) and any(isinstance(v, np.ndarray) for v in value):
        return "\n".join(f"[{i}] {show(v)}" for i, v in enumerate(value))
    if isinstance(value, str):
        return value
    return repr(value)


def show_case(case: dict) -> str:
    """``name = value`` per argument, arrays on their own lines."""
    parts = [f"{k} = {show(v)}" for k, v in case.items()]
    return "\n".join(parts) if any("\n" in p for p in parts) else ", ".join(parts)


def _indent(text: str, width: int) -> str:
    return text.replace("\n", "\n" + " " * width)


# --- calling the student's function -----------------------------------------------------------

def _copy(v):
    return v.copy() if isinstance(v, np.ndarray) else v


def call(fn, case: dict):
    """``fn(*case.values())`` on copies of the arguments, printing and warnings suppressed.

    Raises :class:`StudentError` when ``fn`` raises (``SystemExit`` included) and
    :class:`Mismatch` when it modified an array argument in place.
    """
    args = {k: _copy(v) for k, v in case.items()}
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the student's overflow warnings: judged by result
            out = fn(*args.values())
    except (GradingTimeout, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - the student's code may raise anything
        raise StudentError(exc) from None
    for k, v in case.items():
        if isinstance(v, np.ndarray) and not np.array_equal(args[k], v, equal_nan=True):
            raise Mismatch(f"{k} left unchanged", f"{k} modified in place",
                           "a function must not change its inputs: work on a copy")
    return out


# --- reading results --------------------------------------------------------------------------

def as_array(got, shape, what: str = "the result"):
    """``got`` as a float64 array of ``shape``; Mismatch if it is not a floating ndarray of it."""
    if not isinstance(got, np.ndarray):
        raise Mismatch(f"an ndarray of shape {shape}", f"{type(got).__name__}: {got!r}"[:200],
                       f"{what} must be a NumPy ndarray")
    if got.shape != tuple(shape):
        raise Mismatch(f"shape {tuple(shape)}", f"shape {got.shape}", f"{what} has the wrong shape")
    if not np.issubdtype(got.dtype, np.floating):
        raise Mismatch("a floating dtype (float64)", f"dtype {got.dtype}",
                       f"{what} must be a floating-point array")
    return got.astype(np.float64)


def as_ints(got, length: int, what: str = "the result") -> tuple:
    """``got`` as a tuple of ``length`` Python ints; Mismatch otherwise."""
    try:
        values = list(got)
    except TypeError:
        raise Mismatch(f"a sequence of {length} ints", repr(got),
                       f"{what} is not a sequence") from None
    if len(values) != length:
        raise Mismatch(f"{length} values", f"{len(values)} values: {got!r}",
                       f"{what} has the wrong length")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise Mismatch("ints", f"{type(v).__name__} {v!r}",
                           f"{what} must hold integers (use // and not /, or int(...))")
        out.append(int(v))
    return tuple(out)


def close(expected: np.ndarray, got: np.ndarray, why: str, rtol: float = 1e-9,
          atol: float = 1e-9):
    """Mismatch unless ``got`` equals ``expected`` to rounding (NaN where NaN)."""
    if not np.allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True):
        bad = np.argwhere(~np.isclose(got, expected, rtol=rtol, atol=atol, equal_nan=True))
        first = tuple(int(i) for i in bad[0])
        raise Mismatch(expected, got, f"{why}; first difference at index {first}: expected "
                       f"{expected[first].item()!r}, got {got[first].item()!r}")


# --- running ----------------------------------------------------------------------------------

@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise :class:`GradingTimeout` after ``seconds`` (a no-op off the main thread or where
    the platform has no ``SIGALRM``)."""
    usable = (seconds and hasattr(signal, "SIGALRM")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def alarm(signum, frame):
        raise GradingTimeout(f"time limit of {seconds:g} s reached")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _settings(max_examples: int, seed: int | None):
    return settings(
        max_examples=max_examples, deadline=None, database=None, derandomize=seed is None,
        report_multiple_bugs=False, verbosity=Verbosity.quiet,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
    )


def run_check(check: Check, fn, max_examples: int = DEFAULT_EXAMPLES, seed: int | None = None):
    """Run one check; return None when it passes, else ``(case, error)`` for the shrunk case."""
    record = {}

    def body(case):
        try:
            check.verify(fn, case)
        except (Mismatch, StudentError) as err:
            record["case"], record["err"] = case, err
            raise
        except Exception as exc:  # the result could not even be read: the student's answer
            err = Mismatch("a usable result", f"{type(exc).__name__}: {exc}",
                           "the grader could not read the result")
            record["case"], record["err"] = case, err
            raise err from None

    test = given(case=check.inputs)(body)
    for case in reversed(check.examples):
        test = example(case=case)(test)
    test = _settings(max_examples, seed)(test)
    if seed is not None:
        from hypothesis import seed as hypothesis_seed

        test = hypothesis_seed(seed)(test)
    try:
        test()
    except (Mismatch, StudentError):
        return record["case"], record["err"]
    except Flaky:
        err = Mismatch("the same answer every time", "different answers for the same input",
                       "the function is not deterministic")
        return record.get("case"), err
    return None


def grade_function(exercise: Exercise, fn, max_examples: int = DEFAULT_EXAMPLES,
                   time_limit_s: float | None = DEFAULT_TIME_LIMIT,
                   seed: int | None = None) -> Result:
    """Run every check of ``exercise`` on ``fn`` in order, stopping at the first failure."""
    t0 = time.perf_counter()
    result = Result(exercise.name, passed=True, checks_total=len(exercise.checks))
    try:
        with time_limit(time_limit_s):
            for k, check in enumerate(exercise.checks, start=1):
                result.checks_run = k
                failure = run_check(check, fn, max_examples, seed)
                if failure is None:
                    continue
                case, err = failure
                result.passed, result.check, result.case = False, check.name, case
                if isinstance(err, StudentError):
                    result.not_implemented = isinstance(err.exc, NotImplementedError)
                    at = f" (at {err.where})" if err.where else ""
                    result.error = f"raised {type(err.exc).__name__}: {err.exc}{at}"
                else:
                    result.expected, result.got, result.why = err.expected, err.got, err.why
                break
    except GradingTimeout as exc:
        result.passed = False
        result.check = exercise.checks[result.checks_run - 1].name
        result.error = f"{exc}: is there an endless loop, or a loop over far too many elements?"
    result.seconds = time.perf_counter() - t0
    return result


def load_function(path: Path, name: str):
    """Import ``path`` as a fresh module and return its attribute ``name``.

    The file's folder is put first on ``sys.path`` while it is imported and run (a student may
    split work over several files there) and its modules are forgotten afterwards. Raises
    :class:`StudentError` when the import fails or ``name`` is missing or not callable.
    """
    path = Path(path).resolve()
    spec = importlib.util.spec_from_file_location(f"tinyspp_student_{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec.loader.exec_module(module)
    except (GradingTimeout, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001
        raise StudentError(exc) from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise StudentError(AttributeError(f"{path.name} defines no function {name}()"))
    return fn


@contextlib.contextmanager
def student_folder(folder: Path):
    """Put ``folder`` first on ``sys.path``; afterwards drop the modules imported from it."""
    folder = Path(folder).resolve()
    before = set(sys.modules)
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(folder))
        for mod in set(sys.modules) - before:
            file = getattr(sys.modules[mod], "__file__", None) or ""
            if file and Path(file).resolve().is_relative_to(folder):
                del sys.modules[mod]


def grade_file(exercise: Exercise, path: Path, **kwargs) -> Result:
    """Grade the function ``exercise.name`` defined in the file ``path``."""
    path = Path(path)
    with student_folder(path.parent):
        t0 = time.perf_counter()
        try:
            with time_limit(kwargs.get("time_limit_s", DEFAULT_TIME_LIMIT)):
                fn = load_function(path, exercise.name)
        except (StudentError, GradingTimeout) as err:
            exc = err.exc if isinstance(err, StudentError) else err
            return Result(exercise.name, passed=False, checks_total=len(exercise.checks),
                          error=f"could not import {path.name}: {type(exc).__name__}: {exc}",
                          seconds=time.perf_counter() - t0)
        return grade_function(exercise, fn, **kwargs)
