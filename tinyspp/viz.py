"""Pictures for the notebooks: bin grids over a feature map, max-pooling winners, boxes.

The notebooks teach; the library computes. Every drawing helper here takes numbers the library
produced (bin edges from :mod:`tinyspp.bins`, argmax indices from :mod:`tinyspp.ops`, boxes from
:mod:`tinyspp.detect`) and only draws them. Matplotlib is imported lazily, so importing this module
costs nothing.

Examples
--------
>>> import os
>>> os.environ["TINYSPP_QUICK"] = "1"
>>> quick_mode()
True
>>> os.environ["TINYSPP_QUICK"] = "0"
>>> quick_mode()
False
>>> del os.environ["TINYSPP_QUICK"]
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .bins import bin_edges, coverage

# One colour per bin, cycled: distinct enough to tell neighbouring (overlapping) bins apart.
BIN_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def quick_mode() -> bool:
    """True when ``TINYSPP_QUICK`` is set to anything but ``0``/empty (the test suite sets ``1``).

    Notebooks shrink data, epochs and repeats in quick mode; ``make notebooks`` sets ``0``.
    """
    return os.environ.get("TINYSPP_QUICK", "0").strip() not in ("", "0")


MIN_DPI = 110  # every figure is saved at least this sharp ...
MIN_FONT_PT = 8  # ... and no text in it is smaller than this


def setup(dpi: int = MIN_DPI) -> None:
    """Readable figures: ``dpi`` (>= 110) inline and on save, text of 8 pt or more."""
    import matplotlib as mpl

    if dpi < MIN_DPI:
        raise ValueError(f"setup: dpi must be >= {MIN_DPI} (readable figures), got {dpi}")
    mpl.rcParams.update({
        "figure.dpi": dpi,
        "savefig.dpi": dpi,
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "xtick.labelsize": MIN_FONT_PT,
        "ytick.labelsize": MIN_FONT_PT,
        "legend.fontsize": MIN_FONT_PT,
        "figure.figsize": (6.0, 3.2),
    })


def save_thumbnail(fig, name: str, folder: str | Path = "figures", dpi: int = MIN_DPI):
    """Save ``fig`` as ``folder/name.png`` (at ``dpi >= 110``), on full runs only.

    Quick runs (the test suite) leave the committed figures untouched and return ``None``;
    otherwise the path written is returned. Raises ValueError for ``dpi < 110``; warns
    (``UserWarning``) when some text of the figure is smaller than 8 pt (:func:`smallest_text`).
    """
    if dpi < MIN_DPI:
        raise ValueError(f"save_thumbnail: dpi must be >= {MIN_DPI}, got {dpi}")
    fig.canvas.draw()  # lays out the tick labels, so that their sizes can be read
    small = smallest_text(fig)
    if small is not None and small < MIN_FONT_PT:
        import warnings

        warnings.warn(f"save_thumbnail: figure {name!r} has text of {small:g} pt; use at least "
                      f"{MIN_FONT_PT} pt", UserWarning, stacklevel=2)
    if quick_mode():
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def smallest_text(fig):
    """The smallest font size (pt) of any visible text in ``fig`` (titles, labels, tick labels,
    annotations, legends), or None when it has no text."""
    from matplotlib.text import Text

    sizes = [t.get_fontsize() for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip()]
    return min(sizes) if sizes else None


def draw_values(ax, values, fmt: str = "{:g}", cmap: str = "Blues", title: str = "",
                vmin=None, vmax=None):
    """Shade a 2-D array and write each cell's value in it (8 pt): for small gradients and
    counts (e.g. how many windows cover each pixel).

    Parameters
    ----------
    values : array of shape (H, W)
    fmt : format of each number
    """
    values = np.asarray(values, dtype=np.float64)
    H, W = values.shape
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    for (y, x), v in np.ndenumerate(values):
        r, g, b, _ = image.cmap(image.norm(v))
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # white text on dark cells
        ax.text(x, y, fmt.format(v), ha="center", va="center", fontsize=MIN_FONT_PT,
                color="white" if dark else "black")
    ax.set_xticks(range(W))
    ax.set_yticks(range(H))
    ax.set_xlabel("column w")
    ax.set_ylabel("row h")
    if title:
        ax.set_title(title)


def source_excerpt(text: str, start: str, stop: str | None = None) -> str:
    """The lines of ``text`` from the first one containing ``start`` through the first later line
    that begins with ``stop`` (e.g. ``"}"``, the end of a C function), or up to the first blank
    line when ``stop`` is None.

    Lets a notebook walk through a file (e.g. ``pyramid_pool.cu``) piece by piece without copying
    it. Raises ValueError when ``start`` does not occur.

    >>> print(source_excerpt("a\\nint f() {\\n  return 1;\\n}\\nb", "int f", "}"))
    int f() {
      return 1;
    }
    >>> print(source_excerpt("x = 1\\ny = 2\\n\\nz = 3", "x ="))
    x = 1
    y = 2
    """
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if start in line), None)
    if first is None:
        raise ValueError(f"source_excerpt: start={start!r} does not occur in the text")
    for last in range(first + 1, len(lines)):
        if stop is None and not lines[last].strip():
            return "\n".join(lines[first:last])
        if stop is not None and lines[last].startswith(stop):
            return "\n".join(lines[first:last + 1])
    return "\n".join(lines[first:])


def _feature_grid(ax, height: int, width: int, values=None, cmap="Greys"):
    """Draw an ``height x width`` map as unit cells (optionally shaded by ``values``)."""
    if values is None:
        values = np.zeros((height, width))
    ax.imshow(values, cmap=cmap, extent=(0, width, height, 0), interpolation="nearest",
              alpha=0.6 if values.any() else 0.15)
    ax.set_xticks(np.arange(width + 1), minor=True)
    ax.set_yticks(np.arange(height + 1), minor=True)
    ax.grid(which="minor", color="0.7", linewidth=0.5)
    ax.tick_params(which="both", length=0, labelsize=MIN_FONT_PT)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_aspect("equal")


def draw_bins(ax, height: int, width: int, n: int, mode: str = "adaptive", title: bool = True):
    """Draw the ``n x n`` bins of one pyramid level over an ``height x width`` feature map.

    Each bin is an outlined rectangle (inset a little so that overlapping neighbours stay visible);
    cells that no bin covers (``paper`` mode for ``a mod n >= 2``) are hatched red. Bins come from
    :func:`tinyspp.bins.bin_edges`, so a mode that cannot handle the size raises its ValueError.

    Returns the row and column edges that were drawn.
    """
    from matplotlib.patches import Rectangle

    rows = bin_edges(height, n, mode)
    cols = bin_edges(width, n, mode)
    _feature_grid(ax, height, width)
    _outline_bins(ax, rows, cols, inset=0.08)
    miss_y = coverage(height, n, mode).uncovered
    miss_x = coverage(width, n, mode).uncovered
    for y in range(height):
        for x in range(width):
            if y in miss_y or x in miss_x:
                ax.add_patch(Rectangle((x, y), 1, 1, fill=False, hatch="///", edgecolor="red",
                                       linewidth=0))
    if title:
        ax.set_title(f"{mode}: {height}x{width}, n={n}")
    return rows, cols


def _outline_bins(ax, rows, cols, inset):
    """Outline every bin of the grid ``rows x cols`` (``(start, end)`` edges), in row-major bin
    order, alternate bins inset a little more so overlapping neighbours stay visible. Returns
    each bin's colour, in that order."""
    from matplotlib.patches import Rectangle

    colors = []
    for by, (y0, y1) in enumerate(rows):
        for bx, (x0, x1) in enumerate(cols):
            color = BIN_COLORS[(by + bx) % len(BIN_COLORS)]
            pad = inset + 0.06 * ((by + bx) % 2)
            ax.add_patch(Rectangle((x0 + pad, y0 + pad), x1 - x0 - 2 * pad, y1 - y0 - 2 * pad,
                                   fill=False, edgecolor=color, linewidth=1.4))
            colors.append(color)
    return colors


def draw_axis_bins(ax, size: int, n: int, mode: str = "adaptive", title: bool = True):
    """Draw the ``n`` bins of one level along a single axis of length ``size`` as bars.

    Bin ``i`` is the bar on row ``i`` from its start to its end cell; the bottom strip counts how
    many bins hold each cell (0 = the cell is never pooled, drawn red; 2 = neighbours overlap).
    The one-axis view shows gaps and overlaps more clearly than the 2-D grid of
    :func:`draw_bins`. Returns the edges drawn.
    """
    edges = bin_edges(size, n, mode)
    hits = np.zeros(size, dtype=np.int64)
    for i, (s, e) in enumerate(edges):
        hits[s:e] += 1
        ax.barh(i, e - s, left=s, height=0.7, color=BIN_COLORS[i % len(BIN_COLORS)],
                edgecolor="k", linewidth=0.5)
        label = f"[{s},{e})"
        if e - s >= 2:  # inside the bar
            ax.text(e - 0.1, i, label, ha="right", va="center", fontsize=MIN_FONT_PT,
                    color="white")
        elif e <= size - 2:  # a narrow bar: beside it, on the side with room
            ax.text(e + 0.1, i, label, ha="left", va="center", fontsize=MIN_FONT_PT)
        else:
            ax.text(s - 0.1, i, label, ha="right", va="center", fontsize=MIN_FONT_PT)
    for x, h in enumerate(hits):
        ax.add_patch(_rect(x, n + 0.1, 1, 0.8, "#d7191c" if h == 0 else f"{0.9 - 0.2 * h:.2f}"))
        ax.text(x + 0.5, n + 0.5, str(h), ha="center", va="center", fontsize=MIN_FONT_PT)
    ax.set_xlim(0, size)
    ax.set_ylim(n + 1, -0.6)
    ax.set_xticks(np.arange(size + 1))
    ax.set_yticks(list(range(n)) + [n + 0.5], [f"bin {i}" for i in range(n)] + ["hits"])
    ax.tick_params(labelsize=MIN_FONT_PT)
    if title:
        ax.set_title(f"{mode}: a={size}, n={n}")
    return edges


def _rect(x, y, w, h, color):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, facecolor=color, edgecolor="k", linewidth=0.4)


def draw_winners(ax, plane, rows, cols, argmax, title: str = ""):
    """Shade a 2-D feature ``plane`` and mark the cell that wins each bin.

    Parameters
    ----------
    plane : ndarray of shape (H, W)
    rows, cols : the ``(start, end)`` bin edges along H and W (from ``bin_edges``)
    argmax : int array of shape (n*n,)
        Flat ``h * W + w`` index of each bin's maximum, in row-major bin order (as the SPP cache
        stores it).
    """
    plane = np.asarray(plane, dtype=np.float64)
    H, W = plane.shape
    _feature_grid(ax, H, W, values=plane, cmap="viridis")
    argmax = np.asarray(argmax).reshape(-1)
    for k, color in enumerate(_outline_bins(ax, rows, cols, inset=0.06)):
        h, w = divmod(int(argmax[k]), W)
        ax.plot(w + 0.5, h + 0.5, marker="*", color=color, markersize=11,
                markeredgecolor="k", markeredgewidth=0.5)
    if title:
        ax.set_title(title)


def draw_boxes(ax, boxes, color="tab:red", labels=None, linewidth=1.2, alpha=1.0,
               offset: float = -0.5):
    """Draw ``[x0, y0, x1, y1]`` boxes in the continuous pixel coordinates of
    :mod:`tinyspp.detect.geometry` (pixel ``i`` covers ``[i, i + 1)``, ``x1`` exclusive).

    Parameters
    ----------
    boxes : array-like of shape (R, 4)
    labels : optional sequence of R strings written at each box's top-left corner.
    offset : float
        Added to every coordinate: ``-0.5`` over ``ax.imshow(image)`` (whose pixel ``i`` is
        centred at ``i``), ``0`` on axes already in box coordinates.
    """
    from matplotlib.patches import Rectangle

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) + offset
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color,
                               linewidth=linewidth, alpha=alpha))
        if labels is not None:
            ax.text(x0, y0 - 1, labels[i], color="white", fontsize=MIN_FONT_PT, va="bottom",
                    bbox={"facecolor": color, "alpha": 0.7, "pad": 1, "linewidth": 0})
