"""tinyspp.viz: the notebooks' drawing helpers draw what the library computes."""

import matplotlib.pyplot as plt  # conftest.py selects the Agg backend
import numpy as np
import pytest

from tinyspp import viz
from tinyspp.bins import bin_edges


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_draw_bins_hatches_exactly_the_uncovered_cells(ax):
    rows, cols = viz.draw_bins(ax, 10, 10, 6, "paper")
    assert rows == cols == bin_edges(10, 6, "paper")
    hatched = [p for p in ax.patches if p.get_hatch() == "///"]
    assert len(hatched) == 10 * 10 - 7 * 7            # rows/cols 7, 8, 9 are never pooled
    assert len(ax.patches) - len(hatched) == 36       # one outline per bin


def test_draw_bins_raises_where_the_mode_cannot_pool(ax):
    with pytest.raises(ValueError, match="caffe"):
        viz.draw_bins(ax, 5, 5, 4, "caffe")


def test_draw_axis_bins_counts_hits(ax):
    edges = viz.draw_axis_bins(ax, 10, 6, "adaptive")
    assert edges == bin_edges(10, 6, "adaptive")
    hit_labels = [t.get_text() for t in ax.texts if t.get_text().isdigit()]
    assert hit_labels == ["1", "2", "1", "2", "1", "1", "2", "1", "2", "1"]


def test_draw_winners_marks_each_argmax(ax):
    plane = np.arange(16.0).reshape(4, 4)
    viz.draw_winners(ax, plane, bin_edges(4, 2), bin_edges(4, 2), [5, 7, 13, 15])
    stars = [(line.get_xdata()[0], line.get_ydata()[0]) for line in ax.lines]
    assert stars == [(1.5, 1.5), (3.5, 1.5), (1.5, 3.5), (3.5, 3.5)]


def test_draw_boxes_uses_continuous_pixel_coordinates(ax):
    viz.draw_boxes(ax, [[2, 1, 6, 4]], offset=0, labels=["a"])
    (rect,) = ax.patches
    assert (rect.get_x(), rect.get_y(), rect.get_width(), rect.get_height()) == (2, 1, 4, 3)
    viz.draw_boxes(ax, [[2, 1, 6, 4]])                # over imshow: pixel i centred at i
    assert ax.patches[1].get_x() == 1.5


def test_save_thumbnail_only_on_full_runs(tmp_path, monkeypatch):
    fig, _ = plt.subplots(figsize=(1, 1))
    monkeypatch.setenv("TINYSPP_QUICK", "1")
    assert viz.save_thumbnail(fig, "x", folder=tmp_path) is None
    assert not list(tmp_path.iterdir())
    monkeypatch.setenv("TINYSPP_QUICK", "0")
    path = viz.save_thumbnail(fig, "x", folder=tmp_path)
    assert path == tmp_path / "x.png" and path.stat().st_size > 0
    plt.close(fig)


def test_source_excerpt_errors_name_the_function():
    with pytest.raises(ValueError, match="source_excerpt: start"):
        viz.source_excerpt("a\nb", "zzz")


def test_figures_are_saved_at_110_dpi_or_more(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("TINYSPP_QUICK", "0")
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.set_title("t")
    path = viz.save_thumbnail(fig, "sharp", folder=tmp_path)
    assert min(Image.open(path).info["dpi"]) >= viz.MIN_DPI - 0.5
    with pytest.raises(ValueError, match="dpi must be >= 110"):
        viz.save_thumbnail(fig, "blurry", folder=tmp_path, dpi=72)
    with pytest.raises(ValueError, match="dpi must be >= 110"):
        viz.setup(dpi=72)
    plt.close(fig)


def test_small_text_is_measured_and_warned_about(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYSPP_QUICK", "1")
    fig, ax = plt.subplots()
    ax.set_title("big", fontsize=12)
    ax.text(0.5, 0.5, "tiny", fontsize=6)
    ax.set_xticks([])
    ax.set_yticks([])
    assert viz.smallest_text(fig) == 6
    with pytest.warns(UserWarning, match="6 pt"):
        viz.save_thumbnail(fig, "small", folder=tmp_path)
    plt.close(fig)


def test_draw_values_writes_every_cell_at_8_pt(ax):
    viz.draw_values(ax, np.array([[0.0, 1.0], [2.0, 4.0]]))
    assert [t.get_text() for t in ax.texts] == ["0", "1", "2", "4"]
    assert viz.smallest_text(ax.figure) >= viz.MIN_FONT_PT


def test_helpers_write_no_text_below_8_pt(ax):
    viz.setup()
    viz.draw_axis_bins(ax, 10, 6, "adaptive")
    viz.draw_boxes(ax, [[2, 1, 6, 4]], offset=0, labels=["a"])
    ax.figure.canvas.draw()
    assert viz.smallest_text(ax.figure) >= viz.MIN_FONT_PT
