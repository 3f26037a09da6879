# %% [markdown]
# # 01 · Pyramid bin math: how SPP cuts a feature map into a fixed number of bins
#
# **Assumes:** integer division (`//`), floor and ceiling; what a pooling window and stride are
# ([notebook 00](00_layers_backprop.ipynb) covers pooling). **Previous:**
# [00 · Layers and their backward passes](00_layers_backprop.ipynb). **Next:**
# [02 · The SPP layer](02_spp_layer.ipynb). Index: [README](README.md).
#
# **What you will learn**
#
# * the paper's window/stride rule for a pyramid level, worked by hand for the two conv5 sizes the
#   paper trains on (13x13 for 224-pixel crops, 10x10 for 180-pixel crops);
# * the three bin conventions tinyspp implements (`adaptive`, `paper`, `caffe`), drawn over the
#   feature map, and exactly which (map size, level) pairs each one cannot handle;
# * how to *test* a bin rule: a hypothesis property run live in this notebook.
#
# **The paper, in our words.** A convolutional network accepts images of any size; only the fully
# connected layers need a fixed-length input. SPP-net (He et al. 2014, Sec. 2) therefore replaces
# the last pooling layer by a *spatial pyramid*: for every level it splits the conv5 map into
# `n x n` bins, whatever the map's size, and max-pools each bin. With levels 6, 3, 2, 1 that is
# always 36 + 9 + 4 + 1 = 50 numbers per channel. For training at fixed sizes (Sec. 2.3) a level is
# implemented as an ordinary sliding-window pooling layer with window `ceil(a/n)` and stride
# `floor(a/n)` for an `a x a` map. The Appendix gives a second rule, used when the map size is
# arbitrary (test images, detection regions): bin `i` spans `floor(i*a/n)` to `ceil((i+1)*a/n)`.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

import tinyspp.bins as bins
from tinyspp import spp_forward, viz
from tinyspp.bins import (
    bin_edges, coverage, paper_window_stride, pooling_layer_windows, spp_output_length,
)

QUICK = viz.quick_mode()   # TINYSPP_QUICK=1 in the test suite: fewer examples, same story
viz.setup()
print("quick mode:", QUICK)

# %% [markdown]
# ## 1. The two rules as formulas
#
# For an axis of length $a$ (height and width are binned independently) and a level with $n$ bins:
#
# **Sec. 2.3 (sliding window, `mode="paper"`)**
# $$\text{win} = \left\lceil \frac{a}{n} \right\rceil, \qquad
#   \text{stride} = \left\lfloor \frac{a}{n} \right\rfloor, \qquad
#   \text{window}_i = [\,i\cdot\text{stride},\; i\cdot\text{stride} + \text{win}\,), \quad i = 0..n-1 .$$
#
# **Appendix (`mode="adaptive"`, the default)**
# $$\text{bin}_i = \left[\, \left\lfloor \frac{i\,a}{n} \right\rfloor,\;
#   \left\lceil \frac{(i+1)\,a}{n} \right\rceil \right), \quad i = 0..n-1 .$$
#
# The library computes both with integers only: `floor(p/q)` is `p // q` and `ceil(p/q)` is
# `(p + q - 1) // q`. Float arithmetic can land on the wrong side of an integer. The **naive
# float twin** below (deliberately wrong, for comparison only) computes a bin width `a / n` once
# and multiplies it (the kind of slip behind a real bug in a major framework's RoI pooling); we
# count the $(a, n)$ pairs
# where its bins differ from the library's integer bins.

# %%
def bin_edges_float_twin(a, n):
    """NAIVE FLOAT TWIN (wrong on purpose): the adaptive rule with a float bin width."""
    width = a / n
    return tuple((math.floor(i * width), math.ceil((i + 1) * width)) for i in range(n))


pairs = [(a, n) for a in range(1, 201) for n in range(1, 41)]
wrong = [(a, n) for a, n in pairs if bin_edges_float_twin(a, n) != bin_edges(a, n)]
a, n = min(wrong, key=lambda pair: (pair[1], pair[0]))     # the one with the fewest bins
print(f"the float twin is wrong for {len(wrong)} of {len(pairs)} pairs (a <= 200, n <= 40); "
      f"e.g. a={a}, n={n}:")
for i, (f, g) in enumerate(zip(bin_edges_float_twin(a, n), bin_edges(a, n))):
    if f != g:
        print(f"  bin {i}: float {f}, integer {g}   ({i + 1}*({a}/{n}) = {(i + 1) * (a / n)!r})")
assert wrong and bin_edges(a, n)[-1][1] == a

# %% [markdown]
# ## 2. Worked by hand: the 224 network (conv5 is 13x13)
#
# | level $n$ | $\lceil 13/n \rceil$ | $\lfloor 13/n \rfloor$ | last window ends at $(n-1)\,\text{stride} + \text{win}$ |
# |---|---|---|---|
# | 6 | 3 | 2 | 5·2 + 3 = 13 |
# | 3 | 5 | 4 | 2·4 + 5 = 13 |
# | 2 | 7 | 6 | 1·6 + 7 = 13 |
# | 1 | 13 | 13 | 13 |
#
# Every level ends exactly at 13: no row is left out. These are the window/stride pairs of the
# paper's Fig. 4 (5/4, 7/6, 13/13 for the 3x3, 2x2, 1x1 levels). The library must agree:

# %%
by_hand_13 = {6: (3, 2), 3: (5, 4), 2: (7, 6), 1: (13, 13)}
for n, (win, stride) in by_hand_13.items():
    assert paper_window_stride(13, n) == (win, stride)
    assert coverage(13, n, "paper").uncovered == ()
assert bin_edges(13, 3, "paper") == ((0, 5), (4, 9), (8, 13))
print("13x13:", {n: paper_window_stride(13, n) for n in (6, 3, 2, 1)})

# %% [markdown]
# ## 3. Worked by hand: the 180 network (conv5 is 10x10)
#
# Level 6: win $=\lceil 10/6\rceil = 2$, stride $=\lfloor 10/6 \rfloor = 1$. Six windows start at
# 0, 1, ..., 5 and the last one ends at $5 + 2 = 7$: **rows 7, 8, 9 are never pooled**. An ordinary
# pooling layer with that window and stride would not stop at six windows; it would produce
# $(10 - 2)/1 + 1 = 9$ of them, and the output would no longer have a fixed length.
#
# In general, with $a = qn + r$: the last window ends at $(n-1)q + q + 1 = a - r + 1$ when $r \ge 1$,
# so the rule is exact only for $r \in \{0, 1\}$ and otherwise drops $r - 1$ trailing rows.
#
# The Appendix rule on the same axis: starts $\lfloor 10i/6 \rfloor = 0, 1, 3, 5, 6, 8$ and ends
# $\lceil 10(i+1)/6 \rceil = 2, 4, 5, 7, 9, 10$. Every row is in some bin, and some rows (1, 3, 6, 8)
# are in two.

# %%
assert paper_window_stride(10, 6) == (2, 1)
assert pooling_layer_windows(10, 6) == 9
assert coverage(10, 6, "paper").uncovered == (7, 8, 9)

adaptive_10_6 = bin_edges(10, 6, "adaptive")
assert [s for s, _ in adaptive_10_6] == [0, 1, 3, 5, 6, 8]
assert [e for _, e in adaptive_10_6] == [2, 4, 5, 7, 9, 10]
assert coverage(10, 6, "adaptive").uncovered == ()
print("adaptive 10/6:", adaptive_10_6)
print("paper    10/6:", bin_edges(10, 6, "paper"))
print("caffe    10/6:", bin_edges(10, 6, "caffe"))

# %% [markdown]
# ## 4. The three conventions drawn over the map
#
# Top row: one axis of the 10x10 map at level 6, each bin a bar, and underneath how many bins hold
# each cell (red: never pooled; 2: neighbouring bins overlap). Bottom row: the full 2-D level-4
# grid of the same 10x10 map, where the three rules give three different pictures: adaptive bins
# overlap and cover everything; the paper's rule (window 3, stride 2) never reaches row and
# column 9 (hatched red); Caffe's `SPPLayer` pads the map instead (kernel $k=\lceil a/n\rceil$,
# pad $\lfloor (kn - a + 1)/2 \rfloor$, stride $k$), so its edge bins are narrower.

# %%
fig, axes = plt.subplots(2, 3, figsize=(9.0, 5.8), gridspec_kw={"height_ratios": [1, 1.3]})
for col, mode in enumerate(bins.MODES):
    viz.draw_axis_bins(axes[0, col], 10, 6, mode)
    viz.draw_bins(axes[1, col], 10, 10, 4, mode)
    axes[0, col].set_xlabel("cell index along one axis")
    axes[1, col].set_xlabel("column")
    axes[1, col].set_ylabel("row")
fig.tight_layout()
viz.save_thumbnail(fig, "01_bin_grids")
plt.show()

level4 = {mode: bin_edges(10, 4, mode) for mode in bins.MODES}
print(level4)
assert len(set(level4.values())) == 3                         # three different bottom panels
assert coverage(10, 4, "paper").uncovered == (9,)

# %% [markdown]
# ## 5. Which (size, level) pairs does each convention fail on?
#
# For every map size $a$ and level $n$ we ask the library for the bins and classify the pair:
# **exact** (every cell covered, no error), **drops rows** (`paper` with $a \bmod n \ge 2$), or
# **invalid** (the library raises `ValueError`: `paper` when $a < n$ gives stride 0; `caffe`
# when the padding reaches the kernel size, where Caffe itself aborts).

# %%
SIZES = np.arange(1, 41 if QUICK else 65)
LEVELS = np.arange(1, 9)
EXACT, DROPS, INVALID = 0, 1, 2


def status(a, n, mode):
    try:
        return EXACT if not coverage(int(a), int(n), mode).uncovered else DROPS
    except ValueError:
        return INVALID


grid = {mode: np.array([[status(a, n, mode) for a in SIZES] for n in LEVELS])
        for mode in bins.MODES}

fig, axes = plt.subplots(3, 1, figsize=(8.4, 4.6), sharex=True)
cmap = plt.matplotlib.colors.ListedColormap(["#d9f0d3", "#fdae61", "#d7191c"])
for ax, mode in zip(axes, bins.MODES):
    ax.imshow(grid[mode], cmap=cmap, vmin=0, vmax=2, aspect="auto", interpolation="nearest",
              extent=(SIZES[0] - 0.5, SIZES[-1] + 0.5, LEVELS[-1] + 0.5, LEVELS[0] - 0.5))
    ax.set_ylabel(f"{mode}\nlevel n")
    ax.axvline(13, color="k", lw=0.8, ls=":")
    ax.axvline(10, color="k", lw=0.8, ls=":")
axes[-1].set_xlabel("feature-map size a, in cells  (dotted: 10 and 13)")
handles = [plt.matplotlib.patches.Patch(color=cmap(i), label=lbl)
           for i, lbl in enumerate(["exact", "drops rows", "invalid"])]
fig.legend(handles=handles, loc="upper right", ncol=3, fontsize=8)
fig.tight_layout(rect=(0, 0, 1, 0.94))
viz.save_thumbnail(fig, "01_failure_map")
plt.show()

print(f"{'mode':9s} {'exact':>6s} {'drops':>6s} {'invalid':>8s}   (pairs a<={SIZES[-1]}, n<=8)")
for mode in bins.MODES:
    counts = np.bincount(grid[mode].ravel(), minlength=3)
    print(f"{mode:9s} {counts[0]:6d} {counts[1]:6d} {counts[2]:8d}")

# %% [markdown]
# Three facts to read off the picture, each checked below against the rule worked by hand:
# `adaptive` never fails; `paper` drops rows exactly when $a \bmod n \ge 2$ (and is undefined for
# $a < n$); the 10x10 map at level 6 drops rows while 13x13 is exact at every level the paper uses.

# %%
assert (grid["adaptive"] == EXACT).all()
for i, n in enumerate(LEVELS):
    for j, a in enumerate(SIZES):
        expected = INVALID if a < n else (DROPS if a % n >= 2 else EXACT)
        assert grid["paper"][i, j] == expected, (a, n)
assert status(10, 6, "paper") == DROPS
assert all(status(13, n, "paper") == EXACT for n in (6, 3, 2, 1))
assert status(5, 4, "caffe") == INVALID and status(13, 8, "caffe") == INVALID

# %% [markdown]
# ## 6. A property, tested live
#
# Worked examples check a handful of sizes; a property checks a rule. Hypothesis draws random
# $(a, n)$ pairs and tries to break three statements. If one failed, hypothesis would shrink the
# failing pair to the smallest counter-example and the cell would raise.
#
# 1. `adaptive` gives exactly $n$ non-empty bins, starts and ends never decrease, and the bins cover
#    $[0, a)$.
# 2. `paper` (for $a \ge n$) leaves exactly $\max(a \bmod n - 1, 0)$ trailing rows uncovered.
# 3. The SPP output length is $C \sum_\ell n_\ell^2$, independent of $a$: an actual
#    `spp_forward` of an $a \times 1$ map with levels $(n, 1)$ has $3(n^2 + 1)$ numbers for
#    $C = 3$ channels, for every $a$ (also $a < n$).

# %%
from hypothesis import given, settings
from hypothesis import strategies as st

calls = {"n": 0}


@settings(max_examples=100 if QUICK else 2000, deadline=None, derandomize=True, database=None)
@given(a=st.integers(1, 500), n=st.integers(1, 32))
def bins_behave(a, n):
    calls["n"] += 1
    edges = bin_edges(a, n, "adaptive")
    starts, ends = zip(*edges)
    assert len(edges) == n and all(s < e for s, e in edges)
    assert list(starts) == sorted(starts) and list(ends) == sorted(ends)
    assert starts[0] == 0 and ends[-1] == a
    assert all(s <= prev_end for s, prev_end in zip(starts[1:], ends[:-1]))   # no gap
    if a >= n:
        dropped = coverage(a, n, "paper").uncovered
        assert len(dropped) == max(a % n - 1, 0)
        assert dropped == tuple(range(a - len(dropped), a))   # and they are the trailing ones
    pooled, _ = spp_forward(np.zeros((1, 3, a, 1)), levels=(n, 1))   # uses the size a
    assert pooled.shape == (1, spp_output_length(3, (n, 1))) == (1, 3 * (n * n + 1))


bins_behave()
print(f"hypothesis tried {calls['n']} (a, n) pairs: no counter-example")

# %% [markdown]
# ## 7. The fixed length
#
# Whatever the map size, the pyramid makes $C \sum_\ell n_\ell^2$ numbers. With ZF-5's 256 conv5
# channels and levels 6, 3, 2, 1: $256 \times (36 + 9 + 4 + 1) = 256 \times 50 = 12{,}800$, the
# length of the paper's pool5 vector that feeds fc6.

# %%
print(f"{'level':>5s} {'bins':>5s} {'features (C=256)':>17s}")
for n in (6, 3, 2, 1):
    print(f"{n:5d} {n * n:5d} {spp_output_length(256, (n,)):17,d}")
print(f"{'all':>5s} {50:5d} {spp_output_length(256, (6, 3, 2, 1)):17,d}")
assert spp_output_length(256, (6, 3, 2, 1)) == 256 * 50 == 12_800

# %% [markdown]
# ## Summary
#
# * A pyramid level splits each axis into $n$ bins. The paper's training rule (window
#   $\lceil a/n\rceil$, stride $\lfloor a/n\rfloor$) is exact only when $a \bmod n \in \{0, 1\}$:
#   exact for the 13x13 map at every level, but it drops rows 7-9 of the 10x10 map at level 6.
# * The Appendix rule ($[\lfloor ia/n\rfloor, \lceil (i+1)a/n\rceil)$, tinyspp's default) works for
#   every size, which is why detection, deployment and every RoI-pooling descendant use it.
# * Caffe's padded variant fails where the pad reaches the kernel (e.g. $a=5, n=4$ or $a=13, n=8$).
# * Bin edges are integer arithmetic, so a hypothesis property can check them exactly; a float
#   bin width gets some of them wrong (counted above).
#
# Next: [02 · The SPP layer](02_spp_layer.ipynb) pools real arrays with these bins and
# back-propagates through them.
#
# ## Exercises
#
# 1. **(graded) `bin_edges(size, n)`**: the $n$ adaptive bins of one axis, a list of
#    `(start, end)` pairs. Write it in `exercises/bin_edges.py` and run
#    `python -m tinyspp grade exercises/ --only bin_edges`: hypothesis checks that the bins are
#    non-empty, cover $[0, a)$ without a gap, are mirror-symmetric, and equal the library's, and
#    prints the smallest counterexample it finds (the float twin above fails at once). See
#    [docs/exercises.md](../docs/exercises.md).
# 2. **(graded) `paper_window_stride(size, n)`** returning `(window, stride)`, with a
#    `ValueError` when `size < n`; grade it with
#    `python -m tinyspp grade exercises/ --only paper_window_stride`.
# 3. Prove the rule of section 3: with $a = qn + r$, $0 \le r < n$, the paper's last window ends
#    at $a - r + 1$ for $r \ge 1$, so exactly $\max(r - 1, 0)$ trailing rows are dropped. Then
#    find the smallest $a$ for which *every* level of $(6, 3, 2, 1)$ is exact, and check your
#    answer with `coverage`.
# 4. Caffe aborts when its padding reaches the kernel size. Read off the failure map the sizes
#    $a$ for which `mode="caffe"` fails at level $n = 4$, then explain from
#    $k = \lceil a/4 \rceil$ and $\text{pad} = \lfloor (4k - a + 1)/2 \rfloor$ why exactly those
#    fail, and check your list with `bin_edges(a, 4, "caffe")`.
