"""Exercises on integer geometry: ``bin_edges``, ``paper_window_stride``, ``map_window``.

Each exercise is a list of checks: properties first (what any correct answer must satisfy,
stated without the library), then agreement with the library on drawn inputs. Known pitfalls
(sizes where float arithmetic rounds a bin edge to the wrong side) are always tried.
"""

from __future__ import annotations

from hypothesis import strategies as st

from . import reference
from .runner import Check, Exercise, Mismatch, StudentError, as_ints, call

# (size, n) pairs where ceil((i + 1) * (size / n)) != ceil((i + 1) * size / n) for some bin:
# multiplying by a float bin width rounds up past an integer
FLOAT_PITFALLS = ((29, 7), (25, 11), (7, 25), (21, 19))
SMALL_CASES = ((10, 6), (5, 4), (1, 3), (13, 3), (1, 1))


def _size_n_examples():
    return tuple({"size": a, "n": n} for a, n in FLOAT_PITFALLS + SMALL_CASES)


@st.composite
def size_and_n(draw, max_size=200, max_n=40):
    """``{"size": a, "n": n}`` with ``1 <= a <= max_size``, ``1 <= n <= max_n``."""
    return {"size": draw(st.integers(1, max_size)), "n": draw(st.integers(1, max_n))}


@st.composite
def size_at_least_n(draw, max_n=40, max_extra=300):
    """``{"size": a, "n": n}`` with ``a >= n`` (where the paper's rule is defined)."""
    n = draw(st.integers(1, max_n))
    return {"size": n + draw(st.integers(0, max_extra)), "n": n}


@st.composite
def size_below_n(draw, max_n=40):
    """``{"size": a, "n": n}`` with ``1 <= a < n`` (stride ``floor(a/n)`` would be 0)."""
    n = draw(st.integers(2, max_n))
    return {"size": draw(st.integers(1, n - 1)), "n": n}


# --- bin_edges ----------------------------------------------------------------------------------

def _pairs(fn, case):
    got = call(fn, case)
    n = case["n"]
    try:
        items = list(got)
    except TypeError:
        raise Mismatch(f"a list of {n} (start, end) pairs", repr(got),
                       "the result is not a sequence") from None
    if len(items) != n:
        raise Mismatch(f"{n} (start, end) pairs", f"{len(items)} pairs: {got!r}",
                       "a level has exactly n bins")
    return [as_ints(p, 2, f"bin {i}") for i, p in enumerate(items)]


def _bins_are_ranges(fn, case):
    size = case["size"]
    pairs = _pairs(fn, case)
    for i, (s, e) in enumerate(pairs):
        if not 0 <= s < e <= size:
            raise Mismatch(f"0 <= start < end <= {size} for every bin", pairs,
                           f"bin {i} = {(s, e)} is empty or leaves the axis")


def _bins_cover(fn, case):
    size = case["size"]
    pairs = _pairs(fn, case)
    if pairs[0][0] != 0 or pairs[-1][1] != size:
        raise Mismatch(f"the first bin starts at 0 and the last ends at {size}", pairs,
                       "the bins must cover the whole axis [0, size)")
    for i in range(1, len(pairs)):
        (s0, e0), (s1, e1) = pairs[i - 1], pairs[i]
        if s1 < s0 or e1 < e0:
            raise Mismatch("starts and ends that never decrease", pairs,
                           f"bin {i} = {(s1, e1)} lies before bin {i - 1} = {(s0, e0)}")
        if s1 > e0:
            raise Mismatch("no gap between neighbouring bins", pairs,
                           f"cells {e0}..{s1 - 1} lie between bin {i - 1} and bin {i}: "
                           "no bin pools them")


def _bins_mirror(fn, case):
    size = case["size"]
    pairs = _pairs(fn, case)
    mirrored = [(size - e, size - s) for s, e in reversed(pairs)]
    if mirrored != pairs:
        i = next(k for k in range(len(pairs)) if mirrored[k] != pairs[k])
        raise Mismatch(mirrored, pairs,
                       f"floor/ceil bins are symmetric: start_i = size - end_(n-1-i); bin {i} "
                       f"is {pairs[i]}, its mirror image {mirrored[i]}")


def _bins_match_library(fn, case):
    expected = reference.bin_edges(case["size"], case["n"])
    got = _pairs(fn, case)
    if got != expected:
        i = next(k for k in range(len(got)) if got[k] != expected[k])
        raise Mismatch(expected, got, f"bin {i} should be [floor({i}*size/n), "
                       f"ceil({i + 1}*size/n)) = {expected[i]}; compute it with integers "
                       "(// and (p + q - 1) // q), not with floats")


BIN_EDGES = Exercise(
    name="bin_edges",
    signature="bin_edges(size, n) -> list of n (start, end) pairs",
    task="the n adaptive bins of one axis of length size (the paper's Appendix rule)",
    notebook="01_bin_math.ipynb",
    checks=(
        Check("n non-empty (start, end) integer ranges inside [0, size)", size_and_n(),
              _bins_are_ranges, _size_n_examples()),
        Check("the bins cover [0, size): no gap, starts and ends never decrease", size_and_n(),
              _bins_cover, _size_n_examples()),
        Check("mirror symmetry: start_i == size - end_(n-1-i)", size_and_n(), _bins_mirror,
              _size_n_examples()),
        Check("agrees with tinyspp.bins.bin_edges(size, n, 'adaptive')", size_and_n(),
              _bins_match_library, _size_n_examples()),
    ),
)


# --- paper_window_stride ------------------------------------------------------------------------

def _window_stride(fn, case):
    window, stride = as_ints(call(fn, case), 2, "(window, stride)")
    if window < 1 or stride < 1:
        raise Mismatch("window >= 1 and stride >= 1", (window, stride),
                       "for size >= n both are positive")
    return window, stride


def _positive(fn, case):
    _window_stride(fn, case)


def _stride_is_floor(fn, case):
    a, n = case["size"], case["n"]
    window, stride = _window_stride(fn, case)
    if not stride * n <= a < (stride + 1) * n:
        raise Mismatch(f"stride = floor({a}/{n}) = {a // n}", stride,
                       "the stride s is the largest integer with s * n <= size")


def _window_is_ceil(fn, case):
    a, n = case["size"], case["n"]
    window, stride = _window_stride(fn, case)
    if not (window - 1) * n < a <= window * n:
        raise Mismatch(f"window = ceil({a}/{n}) = {-(-a // n)}", window,
                       "the window w is the smallest integer with w * n >= size")


def _rejects_size_below_n(fn, case):
    try:
        out = call(fn, case)
    except StudentError as err:
        if isinstance(err.exc, ValueError):
            return
        raise Mismatch("ValueError", f"{type(err.exc).__name__}: {err.exc}",
                       "raise ValueError (and point to the adaptive rule) when size < n") from None
    raise Mismatch("ValueError", out, f"size < n: the stride floor({case['size']}/{case['n']}) "
                   "would be 0, so the rule is undefined; raise ValueError")


def _window_stride_match_library(fn, case):
    expected = reference.paper_window_stride(case["size"], case["n"])
    got = _window_stride(fn, case)
    if got != expected:
        raise Mismatch(expected, got, "(window, stride) = (ceil(size/n), floor(size/n))")


PAPER_EXAMPLES = tuple({"size": a, "n": n} for a, n in ((13, 6), (13, 3), (10, 6), (12, 4), (1, 1)))

PAPER_WINDOW_STRIDE = Exercise(
    name="paper_window_stride",
    signature="paper_window_stride(size, n) -> (window, stride)",
    task="window ceil(size/n) and stride floor(size/n) of the paper's Sec. 2.3 rule",
    notebook="01_bin_math.ipynb",
    checks=(
        Check("returns two positive ints (window, stride)", size_at_least_n(), _positive,
              PAPER_EXAMPLES),
        Check("stride = floor(size/n): stride * n <= size < (stride + 1) * n",
              size_at_least_n(), _stride_is_floor, PAPER_EXAMPLES),
        Check("window = ceil(size/n): (window - 1) * n < size <= window * n",
              size_at_least_n(), _window_is_ceil, PAPER_EXAMPLES),
        Check("raises ValueError when size < n (the stride would be 0)", size_below_n(),
              _rejects_size_below_n),
        Check("agrees with tinyspp.bins.paper_window_stride", size_at_least_n(),
              _window_stride_match_library, PAPER_EXAMPLES),
    ),
)


# --- map_window ---------------------------------------------------------------------------------

@st.composite
def windows(draw, max_start=400, max_width=300):
    """``{"box": (x0, y0, x1, y1), "stride": S}``, integer pixels, ``x1 >= x0``, ``y1 >= y0``."""
    stride = draw(st.integers(1, 32))
    x0, y0 = draw(st.integers(0, max_start)), draw(st.integers(0, max_start))
    x1, y1 = x0 + draw(st.integers(0, max_width)), y0 + draw(st.integers(0, max_width))
    return {"box": (x0, y0, x1, y1), "stride": stride}


@st.composite
def small_windows(draw):
    """Windows with no cell centre ``S * x'`` strictly inside, on both axes (they collapse)."""
    stride = draw(st.integers(1, 32))
    coords = []
    for _ in range(2):
        k, a = draw(st.integers(0, 20)), draw(st.integers(0, stride - 1))
        lo = k * stride + a
        coords.append((lo, lo + draw(st.integers(0, stride - a))))
    (x0, x1), (y0, y1) = coords
    return {"box": (x0, y0, x1, y1), "stride": stride}


WINDOW_EXAMPLES = (
    {"box": (0, 0, 100, 64), "stride": 16}, {"box": (16, 16, 32, 32), "stride": 16},
    {"box": (17, 3, 40, 5), "stride": 16}, {"box": (0, 0, 0, 0), "stride": 1},
)


def _cells(fn, case):
    cells = as_ints(call(fn, case), 4, "(x0', y0', x1', y1')")
    x0, y0, x1, y1 = cells
    if not (0 <= x0 <= x1 and 0 <= y0 <= y1):
        raise Mismatch("0 <= x0' <= x1' and 0 <= y0' <= y1'", cells,
                       "a mapped window is never empty or inverted: when no cell fits, it "
                       "collapses to the cell nearest the window's centre")
    return cells


def _never_empty(fn, case):
    _cells(fn, case)


def _paper_axes(box, stride):
    """Per axis: the cells whose centre S*k lies strictly inside (lo, hi), or None if none."""
    x0, y0, x1, y1 = box
    out = []
    for lo, hi in ((x0, x1), (y0, y1)):
        first, last = lo // stride + 1, -(-hi // stride) - 1  # S*first > lo, S*last < hi
        out.append((first, last) if first <= last else None)
    return out


def _centres_inside(fn, case):
    box, S = case["box"], case["stride"]
    got = _cells(fn, case)
    for axis, cells in enumerate(_paper_axes(box, S)):
        if cells is None:
            continue
        have = (got[axis], got[axis + 2])
        if have != cells:
            name = "xy"[axis]
            raise Mismatch(f"{name}0', {name}1' = {cells}", f"{name}0', {name}1' = {have}",
                           f"the paper's cells are those whose centre {S}*{name}' lies strictly "
                           f"inside ({box[axis]}, {box[axis + 2]}): floor({name}0/S) + 1 .. "
                           f"ceil({name}1/S) - 1")


def _collapses(fn, case):
    box, S = case["box"], case["stride"]
    got = _cells(fn, case)
    for axis in range(2):
        lo, hi = box[axis], box[axis + 2]
        mid = (lo + hi + S) // (2 * S)  # floor((lo + hi) / (2S) + 1/2), in integers
        have = (got[axis], got[axis + 2])
        if have != (mid, mid):
            name = "xy"[axis]
            raise Mismatch(f"{name}0' = {name}1' = {mid}", f"{name}0', {name}1' = {have}",
                           f"no cell centre {S}*{name}' lies strictly inside ({lo}, {hi}): the "
                           "window collapses to the cell nearest its centre, "
                           f"floor(({name}0 + {name}1) / (2S) + 1/2)")


def _equivariant(fn, case):
    (x0, y0, x1, y1), S = case["box"], case["stride"]
    got = _cells(fn, case)
    swapped = _cells(fn, {"box": (y0, x0, y1, x1), "stride": S})
    if swapped != (got[1], got[0], got[3], got[2]):
        raise Mismatch((got[1], got[0], got[3], got[2]), swapped,
                       f"the axes are independent: map_window({(y0, x0, y1, x1)}, {S}) must be "
                       "map_window(box, stride) with x and y swapped")
    moved = _cells(fn, {"box": (x0 + S, y0 + S, x1 + S, y1 + S), "stride": S})
    if moved != tuple(v + 1 for v in got):
        raise Mismatch(tuple(v + 1 for v in got), moved,
                       f"shifting the window by S = {S} pixels must shift its cells by one")


def _window_match_library(fn, case):
    expected = reference.map_window(case["box"], case["stride"])
    got = _cells(fn, case)
    if got != expected:
        raise Mismatch(expected, got, "tinyspp.detect.geometry.image_to_feature_boxes"
                       "(method='paper') on an unbounded map")


MAP_WINDOW = Exercise(
    name="map_window",
    signature="map_window(box, stride) -> (x0', y0', x1', y1')",
    task="the paper's Appendix A mapping of an image window to inclusive feature cells",
    notebook="04_region_pooling_detection.ipynb",
    checks=(
        Check("returns four ints, never an empty or inverted box", windows(), _never_empty,
              WINDOW_EXAMPLES),
        Check("exactly the cells whose centre S*x' lies strictly inside the window: "
              "floor(x0/S) + 1 .. ceil(x1/S) - 1", windows(), _centres_inside, WINDOW_EXAMPLES),
        Check("a window too small for any cell centre collapses to the cell nearest its centre",
              small_windows(), _collapses),
        Check("swapping x and y swaps the result; shifting by S shifts the cells by one",
              windows(), _equivariant, WINDOW_EXAMPLES),
        Check("agrees with tinyspp.detect.geometry.image_to_feature_boxes (method='paper')",
              windows(), _window_match_library, WINDOW_EXAMPLES),
    ),
)
