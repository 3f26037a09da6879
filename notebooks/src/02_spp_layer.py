# %% [markdown]
# # 02 · The SPP layer: forward, backward and a gradient check
#
# **Assumes:** the bin rules of [notebook 01](01_bin_math.ipynb) and max pooling's backward pass
# and the gradient checks of [notebook 00](00_layers_backprop.ipynb). **Previous:**
# [01 · Pyramid bin math](01_bin_math.ipynb). **Next:**
# [03 · Multi-size training](03_multi_size_training.ipynb). Index: [README](README.md).
#
# **What you will learn**
#
# * how `tinyspp.ops.spp_forward` turns a feature map of *any* height and width into a vector of a
#   fixed length, and how that length is laid out;
# * which input cell wins each bin (a picture), and therefore where the gradient goes on the way
#   back (`spp_backward`);
# * how to check a hand-written backward pass with centred finite differences
#   (`tinyspp.gradcheck`);
# * why the paper's pool5 vector has 12,800 numbers.
#
# **The paper, in our words.** The SPP layer sits on top of the last convolutional layer (conv5).
# For each of its $k$ filters it max-pools $M$ spatial bins (levels 6, 3, 2, 1: $M = 50$) and
# concatenates the results into a $kM$-dimensional vector, the input of the first fully connected
# layer. Because the number of bins does not depend on the image size, the same network accepts
# any input size, and because each bin is an ordinary max pooling, back-propagation through it is
# the ordinary one: the gradient of a bin goes to the cell that won it (Sec. 2.2-2.3).

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np

from tinyspp import viz
from tinyspp.bins import bin_edges, spp_output_length
from tinyspp.gradcheck import numerical_grad_of_output, rel_error
from tinyspp.ops import spp_backward, spp_forward

QUICK = viz.quick_mode()
viz.setup()
rng = np.random.default_rng(2014)
print("quick mode:", QUICK)

# %% [markdown]
# ## 1. The forward pass as a formula
#
# Let $x \in \mathbb{R}^{N\times C\times H\times W}$. Level $\ell$ has $n_\ell$ bins per side; bin
# $(b_y, b_x)$ covers rows $R_{b_y} = [\lfloor b_y H/n\rfloor, \lceil (b_y+1)H/n\rceil)$ and columns
# $C_{b_x}$ likewise (notebook 01). The output of channel $c$ at that bin is
#
# $$ y_{c,\ell,b_y,b_x} = \max_{h \in R_{b_y},\; w \in C_{b_x}} x_{c,h,w},
#    \qquad a_{c,\ell,b_y,b_x} = \operatorname*{arg\,max}_{h,w}\,(\ldots) \text{ stored as } h W + w .$$
#
# The output is one row per image: levels in the given order, each level's $(C, n, n)$ block
# flattened channel-major, so its length is $D = C\sum_\ell n_\ell^2$.
#
# **Worked by hand.** $x$ = the numbers 0..15 in a 4x4 grid, levels (2, 1). The four quadrant
# maxima are the bottom-right cells of each quadrant, 5, 7, 13, 15, and the global maximum is 15.

# %%
x = np.arange(16.0).reshape(1, 1, 4, 4)
out, cache = spp_forward(x, levels=(2, 1))
print(x[0, 0])
print("out   :", out)
print("argmax:", cache.argmax)
assert out.tolist() == [[5.0, 7.0, 13.0, 15.0, 15.0]]
assert cache.argmax.tolist() == [[5, 7, 13, 15, 15]]   # flat h*W + w

# %% [markdown]
# ## 2. A fixed length for every input size
#
# The whole point: feature maps of very different shapes, including a 1x1 map and a map smaller
# than the finest level (where adaptive bins repeat rows), all give the same $D$.

# %%
C, levels = 8, (6, 3, 2, 1)
sizes = [(13, 13), (10, 10), (7, 19), (40, 23), (3, 5), (1, 1)]
print(f"{'input (N, C, H, W)':>20s}  ->  output (N, D)")
for H, W in sizes:
    fmap = rng.standard_normal((2, C, H, W)).astype(np.float32)
    y, _ = spp_forward(fmap, levels=levels)
    print(f"{str(fmap.shape):>20s}  ->  {y.shape}  {y.dtype}")
    assert y.shape == (2, spp_output_length(C, levels)) == (2, 8 * 50)

# %% [markdown]
# ## 3. Which cell wins each bin
#
# One 9x9 channel with distinct values (no ties), levels 3, 2, 1. Each coloured rectangle is a bin
# and the star of the same colour is the cell the forward pass picked. On a 9x9 map the 2x2 level
# uses rows $[0, 5)$ and $[4, 9)$: the bins overlap on row and column 4, so one cell can win
# several bins. The level-1 star is always the global maximum.
#
# The cache stores the winner of output column `offset + (c*n + by)*n + bx`; the picture reads it
# back level by level.

# %%
H = W = 9
plane = rng.permutation(H * W).reshape(1, 1, H, W).astype(np.float64)
levels = (3, 2, 1)
y, cache = spp_forward(plane, levels=levels)

fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.6), layout="constrained")
for ax, n, off in zip(axes, levels, cache.table.offsets):
    winners = cache.argmax[0, off:off + n * n]              # C = 1: columns by*n + bx
    viz.draw_winners(ax, plane[0, 0], bin_edges(H, n), bin_edges(W, n), winners,
                     title=f"level n={n}: {n * n} bins")
    ax.set_xlabel("column w")
    ax.set_ylabel("row h")
fig.colorbar(axes[0].images[0], ax=list(axes), shrink=0.8, label="value x[h, w] (rank)")
star = plt.Line2D([], [], marker="*", color="0.5", markeredgecolor="k", linestyle="",
                  markersize=11, label="maximum of the bin outlined in the same colour")
fig.legend(handles=[star], loc="lower center", ncol=1, bbox_to_anchor=(0.45, -0.08))
viz.save_thumbnail(fig, "02_winners")
plt.show()

assert cache.argmax[0, -1] == plane.argmax()                 # level 1 = global maximum
for k, (y0, y1) in enumerate(bin_edges(H, 3)):               # level 3, every bin checked by hand
    for j, (x0, x1) in enumerate(bin_edges(W, 3)):
        assert y[0, k * 3 + j] == plane[0, 0, y0:y1, x0:x1].max()

# %% [markdown]
# ## 4. Backward: where the gradient goes
#
# Max pooling is piecewise linear: $\partial y_{c,b} / \partial x_{c,h,w} = 1$ if $(h, w)$ is the
# winner $a_{c,b}$ and $0$ otherwise. So
#
# $$ \frac{\partial L}{\partial x_{c,h,w}} = \sum_{b \,:\, a_{c,b} = (h,w)} \frac{\partial L}{\partial y_{c,b}} .$$
#
# With $\partial L/\partial y = 1$ everywhere, $\partial L/\partial x$ *counts* the bins each cell
# wins: most cells get nothing, the global maximum gets at least one unit from the 1x1 level, and
# a cell in an overlap can collect from several bins of one level. The total is the number of
# bins, $3^2 + 2^2 + 1 = 14$.

# %%
dx = spp_backward(np.ones_like(y), cache)
assert dx.sum() == 14
assert set(np.flatnonzero(dx[0, 0])) == set(cache.argmax[0].tolist())
assert dx[0, 0].flat[plane.argmax()] >= 1

fig, ax = plt.subplots(figsize=(4.2, 3.6))
viz.draw_values(ax, dx[0, 0], fmt="{:.0f}", cmap="magma_r", title="dL/dx for dL/dy = 1: bins won")
plt.show()

# %% [markdown]
# The library's backward is short enough to read: after checking `dout` it hands the stored
# winners to one scatter-add (`np.add.at` on the CPU) over their flat indices, so that
# overlapping bins add up instead of overwriting each other.

# %%
print(inspect.getsource(spp_backward).split('"""')[-1].strip("\n"))   # the body, after the docstring

# %% [markdown]
# ## 5. A numerical gradient check
#
# The analytic gradient must match centred differences,
# $\frac{\partial}{\partial x_i} \sum (y \odot g) \approx \frac{f(x + \varepsilon e_i) - f(x - \varepsilon e_i)}{2\varepsilon}$,
# with a random upstream gradient $g$. Max pooling is not differentiable at ties, so the input has
# distinct values whose gaps ($\approx 1/\text{size}$) are far larger than $\varepsilon = 10^{-6}$:
# then no perturbation changes a winner and the two agree to rounding error (we require a
# relative error below $10^{-6}$; cells with zero gradient make the relative error of tiny
# round-off noise look larger than it is). We check all three
# bin conventions on shapes where each is defined.

# %%
def distinct_values(shape, rng):
    """Distinct values (a shuffled ramp plus small jitter), so that no bin has a tie."""
    size = int(np.prod(shape))
    return ((rng.permutation(size) + rng.uniform(0, 0.2, size)) / size).reshape(shape)


cases = [((2, 3, 13, 13), (6, 3, 2, 1), "paper"), ((2, 3, 10, 7), (4, 2, 1), "adaptive"),
         ((1, 2, 10, 10), (4, 2, 1), "caffe")]
if QUICK:
    cases = [((1, 2, 7, 6), (3, 2, 1), "paper"), ((1, 2, 5, 7), (4, 2, 1), "adaptive"),
             ((1, 2, 8, 8), (4, 2, 1), "caffe")]
print(f"{'shape':>15s} {'levels':>14s} {'mode':>9s} {'rel. error':>11s}")
for shape, lv, mode in cases:
    xg = distinct_values(shape, rng)
    yg, cg = spp_forward(xg, levels=lv, mode=mode)
    g = rng.standard_normal(yg.shape)
    analytic = spp_backward(g, cg)
    numeric = numerical_grad_of_output(lambda v: spp_forward(v, levels=lv, mode=mode)[0], xg, g)
    err = rel_error(analytic, numeric)
    print(f"{str(shape):>15s} {str(lv):>14s} {mode:>9s} {err:11.2e}")
    assert err < 1e-6

# %% [markdown]
# `float32` works too (the gradient comes back in the input's dtype):

# %%
x32 = distinct_values((2, 4, 11, 9), rng).astype(np.float32)
y32, c32 = spp_forward(x32)
dx32 = spp_backward(np.ones_like(y32), c32)
y64, _ = spp_forward(x32.astype(np.float64))
print(y32.dtype, dx32.dtype, "max |y32 - y64| =", np.abs(y32 - y64).max())
assert y32.dtype == dx32.dtype == np.float32 and np.array_equal(y32, y64.astype(np.float32))

# %% [markdown]
# ## 6. The output length
#
# $D = C \sum_\ell n_\ell^2$. For ZF-5's conv5 (256 channels) and the paper's 4-level pyramid that
# is $256 \times 50 = 12{,}800$, for a 13x13 conv5 map (224 input) and a 10x10 one (180 input)
# alike; the paper's 3-level pyramid of Fig. 3 (4, 2, 1) gives $256 \times 21 = 5{,}376$.

# %%
print(f"{'levels':>14s} {'bins M':>7s} {'D for C=256':>12s}")
for lv in [(6, 3, 2, 1), (4, 2, 1), (3, 2, 1), (1,)]:
    print(f"{str(lv):>14s} {sum(n * n for n in lv):7d} {spp_output_length(256, lv):12,d}")
for side in (13, 10):
    conv5 = rng.standard_normal((1, 256, side, side)).astype(np.float32)
    assert spp_forward(conv5)[0].shape == (1, 12_800)
assert spp_output_length(256, (4, 2, 1)) == 5_376

# %% [markdown]
# ## Summary
#
# * `spp_forward` max-pools every bin of every level and concatenates: $(N, C, H, W) \to
#   (N, C\sum n^2)$ for any $H, W \ge 1$, so fully connected layers can follow a network that takes
#   images of any size.
# * The cache keeps the winner of every bin as a flat $hW + w$ index; `spp_backward` sends each
#   upstream gradient to its winner and adds where bins overlap.
# * Centred differences agree with the hand-written backward (relative error far below
#   $10^{-6}$) on tie-free inputs, for all three bin conventions.
# * 256 channels x 50 bins = 12,800: the paper's pool5 length, independent of the input size.
#
# Next: [03 · Multi-size training](03_multi_size_training.ipynb) trains a small SPP-net on several
# input sizes with one set of weights.
#
# ## Exercises
#
# 1. **(graded) `spp_max(x, levels)`**: adaptive max SPP of an `(N, C, H, W)` array, returning
#    `(N, C * sum(n*n))` in the library's layout (levels in order, channel-major within a level).
#    Write it in `exercises/spp_max.py` and run `python -m tinyspp grade exercises/ --only
#    spp_max`. The grader checks the shape, level 1 against the global maximum, the level order,
#    the channel-major layout and finally `spp_forward` itself, and prints the smallest failing
#    input. See [docs/exercises.md](../docs/exercises.md).
# 2. **(graded) `spp_max_backward(dout, x, levels)`** returning `dx`: each bin's gradient to its
#    first maximum in row-major order, overlaps adding up; grade it with
#    `python -m tinyspp grade exercises/ --only spp_max_backward` (its inputs have ties on
#    purpose).
# 3. Derive the backward pass of *average* pyramid pooling (`pool="avg"`) and check
#    `spp_backward` for it with `numerical_grad_of_output`, as in section 5. Why does the average
#    need no tie-free input?
# 4. Make one bin of the 9x9 example tie (copy its maximum into a second cell) and run the
#    gradient check of section 5 on it. Which entries disagree, by how much, and why?
