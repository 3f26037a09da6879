# %% [markdown]
# # 00 · Layers and their backward passes, checked numerically
#
# **Assumes:** NumPy arrays and broadcasting, matrix products, the chain rule. Nothing about
# SPP-net yet. **Previous:** none, this is the first notebook ([index of the notebooks](README.md)).
# **Next:** [01 · Pyramid bin math](01_bin_math.ipynb).
#
# **What you will learn**
#
# * convolution as *im2col* + one matrix product (GEMM), beside a deliberately naive loop twin;
# * the backward pass of every layer an SPP-net uses, derived: convolution ($dx$, $dw$, $db$ and
#   *col2im*), max pooling (and where ties send the gradient), ReLU, linear, softmax
#   cross-entropy;
# * how to check each one with centred finite differences (`tinyspp.gradcheck`), and a whole
#   SPP-net at once with a *directional* check;
# * why the vectorised version is worth the trouble: naive loops vs im2col, timed.
#
# **The paper, in our words.** SPP-net (He et al. 2014) is trained end to end by
# back-propagation: the SPP layer passes gradients to the convolutional layers below it like any
# pooling layer (Sec. 2.3). tinyspp writes every backward pass by hand, so each one must be
# derived and tested; this notebook does that for the ordinary layers, and notebook 02 for the
# SPP layer itself.

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np

from tinyspp import viz
from tinyspp.bench import median_ms
from tinyspp.gradcheck import directional_check, numerical_grad, numerical_grad_of_output, rel_error
from tinyspp.nn import small_spp_net
from tinyspp.ops import (
    col2im, conv2d_backward, conv2d_forward, conv2d_forward_naive, im2col, linear_backward, linear_forward,
    max_pool2d_backward, max_pool2d_forward, relu_backward, relu_forward, softmax_cross_entropy,
)

QUICK = viz.quick_mode()
viz.setup()
rng = np.random.default_rng(0)
print("quick mode:", QUICK)

# %% [markdown]
# ## 1. Convolution as one matrix product
#
# A convolutional layer (a cross-correlation, as in every deep-learning library) with filters
# $w \in \mathbb{R}^{F\times C\times k_h\times k_w}$, bias $b \in \mathbb{R}^F$, stride $s$ and zero
# padding $p$ computes, for the padded input $\bar x$,
#
# $$ y_{n,f,i,j} = b_f + \sum_{c,u,v} \bar x_{n,c,\,is+u,\,js+v}\; w_{f,c,u,v}, \qquad
#    o_h = \left\lfloor \frac{H + 2p - k_h}{s} \right\rfloor + 1 . $$
#
# **im2col** copies every receptive field into one column of a matrix
# $X_\text{col} \in \mathbb{R}^{(Ck_hk_w) \times (N o_h o_w)}$; then the whole layer is one GEMM,
# $Y = W_\text{row} X_\text{col} + b$ with $W_\text{row} = w$ reshaped to $(F, Ck_hk_w)$.
#
# Worked by hand: the 3x3 image 0..8 with a 2x2 window has four positions; column $j$ holds
# the $j$-th window read row by row.

# %%
x = np.arange(9.0).reshape(1, 1, 3, 3)
cols = im2col(x, 2, 2)
print(cols)
assert cols[:, 0].tolist() == [0, 1, 3, 4] and cols[:, 3].tolist() == [4, 5, 7, 8]

# %% [markdown]
# The **naive twin** below is deliberately slow and written only to be read: one output number at
# a time, straight from the formula. It ships with the library as `conv2d_forward_naive`, beside
# the real `conv2d_forward` in [`tinyspp/ops/conv.py`](../tinyspp/ops/conv.py), which gathers with
# `im2col` and does the one GEMM (in chunks of images, to bound the memory of the columns). The
# twin is the oracle the fast version must equal, here and in the test suite.

# %%
print(inspect.getsource(conv2d_forward_naive))


# %%
x = rng.standard_normal((2, 3, 7, 6))
w = rng.standard_normal((4, 3, 3, 3))
b = rng.standard_normal(4)
for stride, pad in [(1, 0), (1, 1), (2, 1), (3, 2)]:
    fast, _ = conv2d_forward(x, w, b, stride=stride, pad=pad)
    slow = conv2d_forward_naive(x, w, b, stride=stride, pad=pad)
    print(f"stride {stride}, pad {pad}: out {fast.shape}, max |fast - naive| = "
          f"{np.abs(fast - slow).max():.1e}")
    assert np.allclose(fast, slow, rtol=1e-12, atol=1e-12)

# %% [markdown]
# ## 2. The convolution's backward pass
#
# Given $\partial L/\partial Y$ (`dout`, reshaped to $D \in \mathbb{R}^{F\times N o_h o_w}$), the GEMM
# $Y = W_\text{row} X_\text{col} + b$ gives the three gradients by the matrix chain rule:
#
# $$ \frac{\partial L}{\partial W_\text{row}} = D\, X_\text{col}^{\top}, \qquad
#    \frac{\partial L}{\partial b_f} = \sum_{n,i,j} D_{f,(n,i,j)}, \qquad
#    \frac{\partial L}{\partial X_\text{col}} = W_\text{row}^{\top} D . $$
#
# The last one is a gradient with respect to the *columns*; a pixel was copied into every column
# whose window covers it, so its gradient is the **sum** over those copies. That scatter-add is
# **col2im**, the adjoint (transpose) of im2col: $\langle \text{im2col}(x), Z\rangle =
# \langle x, \text{col2im}(Z)\rangle$ for every $x$ and $Z$. Finally the padding is cropped
# away. The library's `col2im` is short: one strided add per kernel offset, never a loop over
# positions.

# %%
print(inspect.getsource(col2im).split('"""')[-1].strip())

# %% [markdown]
# Two facts to check: the adjoint identity, and that `col2im` of all-ones *counts* the windows
# that cover each pixel.

# %%
for kh, stride, pad in [(3, 1, 1), (3, 2, 1), (2, 2, 0)]:
    xa = rng.standard_normal((2, 3, 6, 6))
    Z = rng.standard_normal(im2col(xa, kh, kh, stride, pad).shape)
    lhs = np.sum(im2col(xa, kh, kh, stride, pad) * Z)
    rhs = np.sum(xa * col2im(Z, xa.shape, kh, kh, stride, pad))
    print(f"k={kh} s={stride} p={pad}: <im2col(x), Z> = {lhs:+.6f}, <x, col2im(Z)> = {rhs:+.6f}")
    assert np.isclose(lhs, rhs, rtol=1e-12)

configs = [(3, 1, 1), (3, 2, 1), (2, 2, 0)]
fig, axes = plt.subplots(1, 3, figsize=(9.0, 3.3))
for ax, (kh, stride, pad) in zip(axes, configs):
    ones = np.ones(im2col(np.zeros((1, 1, 6, 6)), kh, kh, stride, pad).shape)
    counts = col2im(ones, (1, 1, 6, 6), kh, kh, stride, pad)[0, 0]
    viz.draw_values(ax, counts, fmt="{:.0f}", title=f"{kh}x{kh} kernel, stride {stride}, pad {pad}",
                    vmin=0, vmax=9)
fig.suptitle("col2im(ones): how many windows cover each pixel of a 6x6 input", fontsize=10)
fig.tight_layout()
viz.save_thumbnail(fig, "00_col2im_counts")
plt.show()

counts = col2im(np.ones((9, 36)), (1, 1, 6, 6), 3, 3, 1, 1)[0, 0]
assert counts[0, 0] == 4 and counts[0, 1] == 6 and counts[2, 2] == 9   # corner, edge, inside

# %% [markdown]
# The naive twin of the backward pass applies the same rule one output at a time: every
# `dout[n, f, i, j]` adds `dout * window` into `dw[f]` and `dout * w[f]` back onto the window of
# the padded gradient. The library (`conv2d_backward`: two GEMMs and `col2im`) must equal it.

# %%
def conv2d_backward_naive(dout, x, w, stride=1, pad=0):
    """NAIVE TWIN (for teaching and timing only): the backward pass, loop by loop."""
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for n in range(N):
        for f in range(F):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    rows, cols = slice(i * stride, i * stride + kh), slice(j * stride, j * stride + kw)
                    dw[f] += dout[n, f, i, j] * xp[n, :, rows, cols]
                    dxp[n, :, rows, cols] += dout[n, f, i, j] * w[f]
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, dout.sum(axis=(0, 2, 3))


for stride, pad in [(1, 0), (1, 1), (2, 1), (3, 2)]:
    out, cache = conv2d_forward(x, w, b, stride=stride, pad=pad)
    dout = rng.standard_normal(out.shape)
    fast = conv2d_backward(dout, cache)
    slow = conv2d_backward_naive(dout, x, w, stride=stride, pad=pad)
    assert all(np.allclose(f, s, rtol=1e-12, atol=1e-12) for f, s in zip(fast, slow))
print("conv2d_backward == its naive twin for 4 (stride, pad) settings")

# %% [markdown]
# ## 3. Numerical gradient checks, layer by layer
#
# For an op $y = g(x)$ and a random upstream gradient $u$, the backward pass computes the
# vector-Jacobian product $\nabla_x \langle g(x), u\rangle$. Centred differences approximate the
# same vector element by element:
#
# $$ \frac{\partial}{\partial x_k} \langle g(x), u \rangle \approx
#    \frac{\langle g(x + \varepsilon e_k), u\rangle - \langle g(x - \varepsilon e_k), u\rangle}{2\varepsilon},
#    \qquad \varepsilon = 10^{-6}, $$
#
# with error $O(\varepsilon^2)$ for smooth $g$. We compare with the maximum relative error
# $\max_k |a_k - n_k| / \max(|a_k| + |n_k|, 10^{-12})$ (`tinyspp.gradcheck.rel_error`), in
# float64. Convolution and linear layers are smooth; ReLU and max pooling are only piecewise
# linear, so their inputs must stay away from the kinks (no value near 0 for ReLU, no ties
# for max pooling): then no $\pm\varepsilon$ step crosses a kink and the check is exact to rounding.

# %%
def tie_free(shape, rng, scale=1.0):
    """Distinct magnitudes 0.1 + k/size (shuffled) with random signs: no ties, nothing near 0."""
    size = int(np.prod(shape))
    signs = rng.choice([-1.0, 1.0], size)
    return scale * (signs * (0.1 + (rng.permutation(size) + 1) / size)).reshape(shape)


checks = {}
xc, wc, bc = rng.standard_normal((2, 2, 6, 5)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
out, cache = conv2d_forward(xc, wc, bc, stride=2, pad=1)
u = rng.standard_normal(out.shape)
dx, dw, db = conv2d_backward(u, cache)
checks["conv dx"] = rel_error(dx, numerical_grad_of_output(lambda v: conv2d_forward(v, wc, bc, 2, 1)[0], xc, u))
checks["conv dw"] = rel_error(dw, numerical_grad_of_output(lambda v: conv2d_forward(xc, v, bc, 2, 1)[0], wc, u))
checks["conv db"] = rel_error(db, numerical_grad_of_output(lambda v: conv2d_forward(xc, wc, v, 2, 1)[0], bc, u))

xm = tie_free((2, 2, 6, 6), rng)
out, cache = max_pool2d_forward(xm, 3, stride=2, pad=1)
u = rng.standard_normal(out.shape)
checks["max-pool dx"] = rel_error(max_pool2d_backward(u, cache), numerical_grad_of_output(
    lambda v: max_pool2d_forward(v, 3, stride=2, pad=1)[0], xm, u))

xr = tie_free((3, 7), rng)
out, cache = relu_forward(xr)
u = rng.standard_normal(out.shape)
checks["relu dx"] = rel_error(relu_backward(u, cache), numerical_grad_of_output(lambda v: relu_forward(v)[0], xr, u))

xl, wl, bl = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)
out, cache = linear_forward(xl, wl, bl)
u = rng.standard_normal(out.shape)
dx, dw, db = linear_backward(u, cache)
for name, got, v, f in [("linear dx", dx, xl, lambda v: linear_forward(v, wl, bl)[0]),
                        ("linear dw", dw, wl, lambda v: linear_forward(xl, v, bl)[0]),
                        ("linear db", db, bl, lambda v: linear_forward(xl, wl, v)[0])]:
    checks[name] = rel_error(got, numerical_grad_of_output(f, v, u))

logits, labels = rng.standard_normal((5, 4)), np.array([0, 3, 1, 1, 2])
loss, dlogits = softmax_cross_entropy(logits, labels)
checks["softmax-CE dlogits"] = rel_error(
    dlogits, numerical_grad(lambda z: softmax_cross_entropy(z, labels)[0], logits))

print(f"{'gradient':>20s}  max relative error")
for name, err in checks.items():
    print(f"{name:>20s}  {err:.1e}")
assert max(checks.values()) < 1e-7

# %% [markdown]
# ## 4. The backward passes of the other layers, derived
#
# **Max pooling.** A window's output is one of its inputs, the winner $a = \arg\max$; so
# $\partial y/\partial x$ is 1 at the winner and 0 elsewhere, and the backward pass *routes*
# each `dout` to its window's winner (adding up where overlapping windows pick the same pixel).
# At a **tie** the maximum is not differentiable; tinyspp (like PyTorch) picks the *first* maximal
# element in row-major order, and the whole gradient goes there. The picture: a 4x4 input with
# ties, 2x2 windows with stride 2 (left) and stride 1 (overlapping, right), $\partial L/\partial y = 1$.

# %%
xt = np.array([[[[1.0, 3.0, 2.0, 2.0],
                 [3.0, 0.0, 2.0, 2.0],
                 [0.0, 1.0, 5.0, 4.0],
                 [1.0, 1.0, 4.0, 5.0]]]])
fig, axes = plt.subplots(1, 3, figsize=(9.0, 3.3))
viz.draw_values(axes[0], xt[0, 0], title="input x (ties: 3, 2, 5)", cmap="Greys", vmin=0, vmax=8)
for k in range(1, 4):  # the stride-2 windows
    axes[0].axhline(k - 0.5, color="k", lw=2 if k == 2 else 0.5)
    axes[0].axvline(k - 0.5, color="k", lw=2 if k == 2 else 0.5)
grads = {}
for ax, stride in zip(axes[1:], (2, 1)):
    out, cache = max_pool2d_forward(xt, 2, stride=stride)
    grads[stride] = max_pool2d_backward(np.ones_like(out), cache)[0, 0]
    viz.draw_values(ax, grads[stride], fmt="{:.0f}", cmap="Oranges", vmin=0, vmax=4,
                    title=f"dL/dx: 2x2 windows, stride {stride}")
fig.tight_layout()
viz.save_thumbnail(fig, "00_maxpool_ties")
plt.show()

# stride 2: the top-left window ties (3 at (0,1) and (1,0)): the first in row-major order wins;
# the top-right window is all 2s: its first cell (0, 2) wins; the bottom-right ties 5 at (2,2), (3,3)
assert grads[2][0, 1] == 1 and grads[2][1, 0] == 0
assert grads[2][0, 2] == 1 and grads[2][2, 2] == 1 and grads[2][3, 3] == 0
assert grads[1].sum() == 9 and grads[1][2, 2] == 4          # stride 1: 9 windows; (2, 2) wins 4

# %% [markdown]
# Why the check above needed tie-free inputs: at a tie the two one-sided slopes differ, and a
# centred difference averages them. On the all-equal window below, raising any one element by
# $\varepsilon$ makes it the maximum (slope 1) while lowering it changes nothing (slope 0), so the
# numerical gradient puts $1/2$ on *every* element; the backward pass gives 1 to the first one.
# Both are valid subgradients; the library's is the deterministic one.

# %%
flat = np.zeros((1, 1, 2, 2))
out, cache = max_pool2d_forward(flat, 2)
analytic = max_pool2d_backward(np.ones_like(out), cache)[0, 0]
numeric = numerical_grad_of_output(lambda v: max_pool2d_forward(v, 2)[0], flat, np.ones_like(out))[0, 0]
print("backward:", analytic.tolist(), "  centred differences:", numeric.round(6).tolist())
assert analytic.tolist() == [[1, 0], [0, 0]] and np.allclose(numeric, 0.5)

# %% [markdown]
# **ReLU.** $y = \max(x, 0)$, so $\partial L/\partial x = \partial L/\partial y \cdot [x > 0]$. At
# exactly 0 the library uses the subgradient 0 (the same kink argument as a tie).
#
# **Linear.** $Y = XW + b$ with $X \in \mathbb{R}^{N\times D_\text{in}}$: $\;dX = dY\,W^\top$,
# $\;dW = X^\top dY$, $\;db = \sum_n dY_n$. Each is the only product with the right shape, which
# is a good way to remember them.
#
# **Softmax cross-entropy.** For one row, $p = \text{softmax}(z)$ and $L = -\log p_t$ for the
# label $t$. Since $\log p_t = z_t - \log\sum_k e^{z_k}$,
# $\partial L / \partial z_k = p_k - [k = t]$; averaged over a batch of $N$, the gradient is
# $(p - \text{onehot}(t))/N$. The loss subtracts each row's maximum before exponentiating, so huge
# logits neither overflow nor produce $\log 0$:

# %%
x3 = np.array([[-1.0, 0.0, 2.0]])
_, cache = relu_forward(x3)
d3 = relu_backward(np.array([[5.0, 5.0, 5.0]]), cache)
print("ReLU: x =", x3.tolist(), " dout = 5 everywhere  ->  dx =", d3.tolist())
assert d3.tolist() == [[0.0, 0.0, 5.0]]                      # the subgradient 0 at x = 0

out, cache = linear_forward(xl, wl, bl)
u = rng.standard_normal(out.shape)
dx, dw, db = linear_backward(u, cache)
assert np.allclose(dx, u @ wl.T) and np.allclose(dw, xl.T @ u) and np.allclose(db, u.sum(0))
print("linear: dX = dY W^T, dW = X^T dY, db = sum_n dY  (shapes", dx.shape, dw.shape, db.shape, ")")

big = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]])
loss, dlogits = softmax_cross_entropy(big, np.array([1, 2]))
print(f"logits of size 1e4: loss = {loss:.1f} (finite), dlogits =\n{dlogits}")
assert np.isfinite(loss) and np.isclose(loss, (1e4 + np.log(2)) / 2)
assert np.allclose(dlogits.sum(axis=1), 0)        # softmax sums to 1, the one-hot too

# %% [markdown]
# ## 5. A whole SPP-net, checked in one number per direction
#
# An element-wise check costs $2\times$(number of inputs) forward passes; for a network with
# thousands of weights that is slow. A **directional** check perturbs everything at once along
# a random unit direction $u$:
#
# $$ \frac{L(\theta + \varepsilon u) - L(\theta - \varepsilon u)}{2\varepsilon} \approx
#    \langle \nabla_\theta L, u \rangle , $$
#
# two forward passes per direction, whatever the size (`tinyspp.gradcheck.directional_check`).
# We build a small SPP-net with `small_spp_net`, the architecture notebook 03 trains, made
# narrower (three conv layers of 4, 6 and 8 channels, an SPP layer with levels 4, 2, 1, two fully
# connected layers), in float64 with dropout off (evaluation mode), and check the
# gradient with respect to the input image and to every parameter tensor, at two input sizes:
# the same weights take both, which is what the SPP layer is for.

# %%
net = small_spp_net(num_classes=3, in_channels=1, widths=(4, 6, 8), hidden=16, seed=0)
net.astype(np.float64).eval()
labels = np.array([0, 2])


def loss_at(image):
    return softmax_cross_entropy(net.forward(image), labels)[0]


rows = []
for size in [(20, 20), (27, 17)]:
    image = tie_free((2, 1) + size, rng, scale=4.0)
    _, dlogits = softmax_cross_entropy(net.forward(image), labels)
    dimage = net.backward(dlogits)
    grads = {k: g.copy() for k, g in net.grads().items()}
    rows.append((size, "input image", *directional_check(loss_at, image, dimage, rng=1)))
    for name, p in net.params().items():
        def loss_of_param(v, p=p):
            saved = p.copy()
            p[...] = v
            try:
                return loss_at(image)
            finally:
                p[...] = saved
        rows.append((size, name, *directional_check(loss_of_param, p.copy(), grads[name], rng=2)))

print(f"{'input':>9s} {'tensor':>12s} {'numeric':>13s} {'analytic':>13s} {'rel. diff':>10s}")
worst = 0.0
for size, name, numeric, analytic in rows:
    diff = abs(numeric - analytic) / max(abs(numeric) + abs(analytic), 1e-12)
    worst = max(worst, diff)
    print(f"{str(size):>9s} {name:>12s} {numeric:13.8f} {analytic:13.8f} {diff:10.1e}")
print(f"{len(rows)} directional checks through {net.num_params():,} parameters; worst {worst:.1e}")
assert worst < 1e-6

# %% [markdown]
# ## 6. Naive loops vs im2col + GEMM, timed
#
# Same numbers, very different costs: the naive twin runs the Python loop $N F o_h o_w$ times,
# while im2col moves the loops into one strided copy and one matrix product (run by the BLAS
# library, vectorised and cache-blocked). The library is timed as the median of several calls
# (`tinyspp.bench.median_ms`), the naive twin once (it takes seconds), for one conv layer shaped
# like the small SPP-net's second one (16 to 32 channels, 3x3, on a 32x32 map, batch of 8; quick
# mode shrinks it).

# %%
N, C, F, H = (2, 4, 8, 12) if QUICK else (8, 16, 32, 32)
xb = rng.standard_normal((N, C, H, H))
wb, bb = rng.standard_normal((F, C, 3, 3)), np.zeros(F)
out, cache = conv2d_forward(xb, wb, bb, pad=1)
doutb = rng.standard_normal(out.shape)
repeats = 3 if QUICK else 7
times = {
    ("forward", "naive loops"): median_ms(lambda: conv2d_forward_naive(xb, wb, bb, pad=1), 1, warmup=0),
    ("forward", "im2col + GEMM"): median_ms(lambda: conv2d_forward(xb, wb, bb, pad=1), repeats),
    ("backward", "naive loops"): median_ms(lambda: conv2d_backward_naive(doutb, xb, wb, pad=1), 1, warmup=0),
    ("backward", "im2col + GEMM"): median_ms(lambda: conv2d_backward(doutb, cache), repeats),
}
print(f"conv 3x3, pad 1: x {xb.shape}, w {wb.shape}")
for (phase, impl), ms in times.items():
    print(f"  {phase:8s} {impl:14s} {ms:10.2f} ms")
speedups = {phase: times[(phase, "naive loops")] / times[(phase, "im2col + GEMM")]
            for phase in ("forward", "backward")}
print("speed-up of the vectorised version:", {k: f"{v:.0f}x" for k, v in speedups.items()})
assert min(speedups.values()) > 1

fig, ax = plt.subplots(figsize=(6.0, 3.0))
phases = ["forward", "backward"]
for k, (impl, color) in enumerate([("naive loops", "tab:red"), ("im2col + GEMM", "tab:blue")]):
    ax.bar(np.arange(2) + (k - 0.5) * 0.38, [times[(p, impl)] for p in phases], width=0.36,
           color=color, label=impl)
for k, phase in enumerate(phases):
    ax.text(k + 0.19, times[(phase, "im2col + GEMM")] * 1.3, f"{speedups[phase]:.0f}x faster",
            ha="center", fontsize=8)
ax.set_yscale("log")
ax.set_xticks(range(2), phases)
ax.set_xlabel("pass of the layer")
ax.set_ylabel("median time per call (ms, log scale)")
ax.set_title(f"one 3x3 conv layer, x {xb.shape}, {F} filters")
ax.legend()
fig.tight_layout()
viz.save_thumbnail(fig, "00_timing")
plt.show()

# %% [markdown]
# ## Summary
#
# * Convolution is im2col + one GEMM; its backward pass is two more GEMMs
#   ($dW = D X_\text{col}^\top$, $dX_\text{col} = W^\top D$) and col2im, the adjoint of im2col,
#   which adds each pixel's copies back together. The naive twin gives the same numbers.
# * Max pooling routes each gradient to its window's winner; at ties the first maximum in
#   row-major order takes it all (a centred difference would split it, which is why checks use
#   tie-free inputs). ReLU masks, linear transposes, softmax cross-entropy gives $(p - y)/N$.
# * Every backward pass agrees with centred differences to a relative error below $10^{-7}$
#   (the table of section 3), and a
#   directional check through a whole SPP-net agrees for the input and every parameter tensor,
#   at two input sizes.
# * The vectorised convolution is many times faster than its loop twin, forward and backward (the
#   speed-ups printed above were measured by this run, on this machine).
#
# ## Exercises
#
# 1. **(graded) `conv2d_backward(dout, x, w, stride, pad) -> (dx, dw, db)`.** Write it in
#    `exercises/conv2d_backward.py` (loops are fine) and run
#    `python -m tinyspp grade exercises/ --only conv2d_backward`. The grader checks $db$, then
#    $dw$ and $dx$ as exact slopes of $L = \langle \text{dout}, \text{conv}(x, w)\rangle$ (it is
#    linear in each), then compares with `tinyspp.ops.conv2d_backward`; on a failure it prints
#    the smallest input it found. See [docs/exercises.md](../docs/exercises.md).
# 2. Prove the adjoint identity $\langle \text{im2col}(x), Z\rangle = \langle x,
#    \text{col2im}(Z)\rangle$ from the definitions, and explain with it why the numbers in the
#    col2im picture are what they are (e.g. why a 3x3, stride-2 layer leaves a checkerboard of
#    1, 2 and 4).
# 3. Label smoothing replaces the one-hot target by $(1-\alpha)\,\text{onehot} + \alpha/K$.
#    Derive the gradient of the smoothed loss with respect to the logits and check your formula
#    with `tinyspp.gradcheck.numerical_grad`.
# 4. **(graded) `softmax_cross_entropy(logits, labels) -> (loss, dlogits)`**, stable for huge
#    logits, in `exercises/softmax_cross_entropy.py`; grade it with
#    `python -m tinyspp grade exercises/ --only softmax_cross_entropy`. Besides comparing with
#    the library, the grader differentiates *your* loss numerically and checks it against *your*
#    gradient, and feeds it logits of size $10^4$.
