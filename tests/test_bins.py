"""Bin math: properties over sizes 1..512 and levels 1..16, and the paper's own numbers."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyspp.bins import (
    bin_divisors,
    bin_edges,
    bin_table,
    coverage,
    paper_window_stride,
    pooling_layer_windows,
    spp_output_length,
)

sizes = st.integers(1, 512)
levels = st.integers(1, 16)


def covered_rows(edges):
    return set().union(*(range(s, e) for s, e in edges))


@given(sizes, levels)
def test_adaptive_n_nonempty_bins_cover_every_row(a, n):
    edges = bin_edges(a, n, "adaptive")
    assert len(edges) == n
    assert all(0 <= s < e <= a for s, e in edges)
    assert covered_rows(edges) == set(range(a))
    assert edges[0][0] == 0 and edges[-1][1] == a
    c = coverage(a, n, "adaptive")
    assert c.uncovered == () and c.empty_bins == 0


@given(sizes, levels)
def test_paper_gives_n_windows_of_stated_size_and_uncovered_matches_coverage(a, n):
    if a < n:
        with pytest.raises(ValueError, match=r"size=\d+.*n=\d+.*adaptive"):
            bin_edges(a, n, "paper")
        return
    win, stride = paper_window_stride(a, n)
    edges = bin_edges(a, n, "paper")
    assert len(edges) == n
    assert all(e - s == win for s, e in edges)
    assert all(edges[i + 1][0] - edges[i][0] == stride for i in range(n - 1))
    assert edges[-1][1] <= a
    missing = set(range(a)) - covered_rows(edges)
    assert set(coverage(a, n, "paper").uncovered) == missing
    r = a % n
    # exact iff r in {0, 1}; otherwise r - 1 trailing rows are dropped
    assert len(missing) == (0 if r <= 1 else r - 1)
    assert (pooling_layer_windows(a, n) == n) == (r <= 1)


@given(sizes, levels)
def test_caffe_covers_every_row_or_raises_naming_size_and_level(a, n):
    try:
        edges = bin_edges(a, n, "caffe")
    except ValueError as e:
        assert f"size={a}" in str(e) and f"n={n}" in str(e) and "adaptive" in str(e)
        k = -(-a // n)
        pad = (k * n - a + 1) // 2
        clipped = [(max(i * k - pad, 0), min(i * k - pad + k, a)) for i in range(n)]
        assert pad >= k or any(s >= e for s, e in clipped)
        return
    assert len(edges) == n
    assert covered_rows(edges) == set(range(a))
    assert coverage(a, n, "caffe").empty_bins == 0


def test_paper_13x13_windows_and_strides_of_fig4():
    assert [paper_window_stride(13, n) for n in (6, 3, 2, 1)] == [(3, 2), (5, 4), (7, 6), (13, 13)]
    for n in (6, 3, 2, 1):
        assert coverage(13, n, "paper").uncovered == ()


def test_paper_10x10_of_the_180_network_drops_rows_at_level_6():
    assert paper_window_stride(10, 6) == (2, 1)
    assert pooling_layer_windows(10, 6) == 9
    assert coverage(10, 6, "paper").uncovered == (7, 8, 9)
    assert pooling_layer_windows(5, 3) == 4 and pooling_layer_windows(11, 4) == 5


def test_pool5_dimension_is_12800():
    assert spp_output_length(256, (6, 3, 2, 1)) == 12800


def test_caffe_aborts_where_caffe_would():
    for a, n in [(5, 4), (13, 8)]:
        with pytest.raises(ValueError, match="caffe"):
            bin_edges(a, n, "caffe")


def test_adaptive_smaller_than_level_repeats_rows():
    assert bin_edges(2, 4) == ((0, 1), (0, 1), (1, 2), (1, 2))
    assert coverage(2, 4).overlapping == (0, 1)


def test_bin_table_layout():
    t = bin_table(4, 6, levels=(2, 1), channels=3)
    assert t.offsets == (0, 12)
    assert t.y0.tolist() == [0, 0, 2, 2, 0]
    assert t.x1.tolist() == [3, 6, 3, 6, 6]


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: bin_edges(0, 2), "size"),
        (lambda: bin_edges(4, 0), "n"),
        (lambda: bin_edges(4, 2, "nearest"), "mode"),
        (lambda: bin_edges(4.0, 2), "size"),
        (lambda: spp_output_length(8, ()), "levels"),
        (lambda: spp_output_length(8, (2, -1)), "levels[1]"),
        (lambda: paper_window_stride(3, 6), "adaptive"),
    ],
)
def test_bad_input_names_the_argument(call, arg):
    with pytest.raises((ValueError, TypeError)) as exc:
        call()
    assert arg in str(exc.value)


# --- hand-worked cases the property tests cannot pin down -----------------------------------
# The properties above hold for a whole family of wrong rules too (a padding of (k*n - a) // 2
# still covers every row, and no profile is sure to draw a size where it differs), so the exact
# edges are checked against numbers worked by hand.

@pytest.mark.parametrize("size, n, mode, edges", [
    # caffe: k = ceil(a/n), pad = (k*n - a + 1) // 2, window i = [i*k - pad, i*k - pad + k)
    (5, 2, "caffe", ((0, 2), (2, 5))),           # k=3, pad=1: [-1, 2) and [2, 5)
    (7, 3, "caffe", ((0, 2), (2, 5), (5, 7))),   # k=3, pad=1
    (10, 4, "caffe", ((0, 2), (2, 5), (5, 8), (8, 10))),  # k=3, pad=1
    (13, 6, "caffe", ((0, 2), (2, 5), (5, 8), (8, 11), (11, 13), None)),  # k=3, pad=3: aborts
    (6, 3, "caffe", ((0, 2), (2, 4), (4, 6))),   # exact: no padding
    (4, 3, "caffe", ((0, 1), (1, 3), (3, 4))),   # k=2, pad=1
    # adaptive: floor(i*a/n), ceil((i+1)*a/n)
    (5, 2, "adaptive", ((0, 3), (2, 5))),
    (7, 3, "adaptive", ((0, 3), (2, 5), (4, 7))),
    (3, 6, "adaptive", ((0, 1), (0, 1), (1, 2), (1, 2), (2, 3), (2, 3))),
    # paper: window ceil(a/n), stride floor(a/n)
    (5, 2, "paper", ((0, 3), (2, 5))),
    (7, 3, "paper", ((0, 3), (2, 5), (4, 7))),
    (11, 4, "paper", ((0, 3), (2, 5), (4, 7), (6, 9))),
])
def test_bin_edges_worked_by_hand(size, n, mode, edges):
    if None in edges:
        with pytest.raises(ValueError, match="caffe"):
            bin_edges(size, n, mode)
    else:
        assert bin_edges(size, n, mode) == edges


@pytest.mark.parametrize("size, n, mode, divisors", [
    (5, 2, "caffe", (3, 3)),        # windows [-1, 2) and [2, 5): Caffe counts the padded row
    (4, 3, "caffe", (2, 2, 2)),     # [-1, 1), [1, 3), [3, 5) within [-1, 5)
    (7, 3, "caffe", (3, 3, 3)),
    (6, 3, "caffe", (2, 2, 2)),
    (5, 2, "adaptive", (3, 3)),
    (7, 3, "paper", (3, 3, 3)),
])
def test_bin_divisors_worked_by_hand(size, n, mode, divisors):
    assert bin_divisors(size, n, mode) == divisors


def caffe_pool_size(a, n, i):
    """Caffe's PoolingLayer AVE, written as Caffe writes it (before clipping to the map)."""
    k = -(-a // n)
    pad = (k * n - a + 1) // 2
    start = i * k - pad
    end = min(start + k, a + pad)
    return end - start


@given(sizes, levels)
def test_divisors_follow_caffe_pool_size_and_areas_elsewhere(a, n):
    for mode in ("adaptive", "paper", "caffe"):
        try:
            edges = bin_edges(a, n, mode)
        except ValueError:
            continue
        want = ([caffe_pool_size(a, n, i) for i in range(n)] if mode == "caffe"
                else [e - s for s, e in edges])
        assert list(bin_divisors(a, n, mode)) == want
        assert all(d >= e - s for d, (s, e) in zip(want, edges))


@given(st.lists(sizes, min_size=1, max_size=20), levels, st.sampled_from(["adaptive", "paper",
                                                                          "caffe"]))
def test_many_bin_edges_equal_bin_edges(sizes_, n, mode):
    import numpy as np

    from tinyspp.bins import many_bin_divisors, many_bin_edges

    ok = []
    for a in sizes_:
        try:
            bin_edges(a, n, mode)
            ok.append(a)
        except ValueError:
            pass
    if not ok:
        return
    starts, ends = many_bin_edges(np.array(ok), n, mode)
    divs = many_bin_divisors(np.array(ok), n, mode)
    for u, a in enumerate(ok):
        assert list(zip(starts[u].tolist(), ends[u].tolist())) == list(bin_edges(a, n, mode))
        assert tuple(divs[u].tolist()) == bin_divisors(a, n, mode)


def test_level_plan_nests_only_adaptive_divisors():
    from tinyspp.bins import level_plan

    assert level_plan((6, 3, 2, 1)) == [(6, None), (3, 6), (2, 6), (1, 2)]
    assert level_plan((1, 2, 4, 4)) == [(4, None), (2, 4), (1, 2)]
    assert level_plan((5, 3)) == [(5, None), (3, None)]
    assert all(p is None for _, p in level_plan((6, 3, 2, 1), "caffe"))


def test_bin_table_area_is_the_product_of_the_axis_divisors():
    t = bin_table(5, 4, (2, 1), "caffe")
    assert t.area.tolist() == [3 * 2, 3 * 2, 3 * 2, 3 * 2, 5 * 4]
    a = bin_table(5, 4, (2, 1))
    assert a.area.tolist() == ((a.y1 - a.y0) * (a.x1 - a.x0)).tolist()
