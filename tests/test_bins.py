"""Bin math: properties over sizes 1..512 and levels 1..16, and the paper's own numbers."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyspp.bins import (
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
