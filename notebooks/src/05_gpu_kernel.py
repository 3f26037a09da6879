# %% [markdown]
# # 05 · The GPU kernel: one thread per output, run on the CPU too
#
# **Assumes:** the SPP layer's forward and backward passes and its output layout
# ([notebook 02](02_spp_layer.ipynb)); region pooling of detection windows
# ([notebook 04](04_region_pooling_detection.ipynb)); reading a little C. No GPU needed.
# **Previous:** [04 · Region pooling and detection](04_region_pooling_detection.ipynb).
# **Next:** none, this is the last notebook ([index of the notebooks](README.md)).
#
# **What you will learn**
#
# * how `tinyspp/kernels/pyramid_pool.cu` computes every bin of every pyramid level in one
#   launch, read piece by piece;
# * how a thread index becomes an output element (the thread-to-output mapping, with a
#   grid-stride loop), drawn;
# * how the *same* `.cu` file runs on the CPU through the emulation harness (`impl="emulate"`), and
#   that it equals the NumPy path (outputs and winners bit for bit, ties and NaN included, in
#   float32 and float64; gradients to rounding);
# * on a machine with an NVIDIA GPU: the same kernel through CuPy, with timings. Without a GPU this
#   notebook says so and skips that part.
#
# **The paper, in our words.** SPP-net's speed claim (Sec. 4: conv5 features of a whole image once,
# instead of once per window as in R-CNN; 24-102x faster overall) is a GPU claim. Pyramid pooling
# itself is cheap but irregular: bins have different sizes and, in adaptive mode, overlap. The
# simplest correct GPU formulation is one thread per output number, each thread scanning its own
# bin; every output is written by exactly one thread, so no synchronisation is needed.

# %%
import matplotlib.pyplot as plt
import numpy as np

from tinyspp import kernels, viz
from tinyspp.backend import gpu_available
from tinyspp.bench import median_ms
from tinyspp.bins import bin_table
from tinyspp.kernels import emulate, launch_config
from tinyspp.ops import spp_backward, spp_forward

QUICK = viz.quick_mode()
viz.setup()
rng = np.random.default_rng(5)
SOURCE = kernels.kernel_source()
print("quick mode:", QUICK)
entries = [line.split("void ")[1].split("(")[0] for line in SOURCE.splitlines()
           if line.startswith('extern "C" __global__ void')]
print(f"pyramid_pool.cu: {len(SOURCE.splitlines())} lines; {len(entries)} entry points:")
print("  " + ", ".join(entries))

# %% [markdown]
# ## 1. The kernel, read piece by piece
#
# The file opens with the bin rule, in the same integer arithmetic as `tinyspp.bins`, so that the
# CPU and the GPU agree bit for bit:
#
# $$ \text{start}_i = \lfloor i a / n \rfloor = (i a) \,/\!/\, n, \qquad
#    \text{end}_i = \lceil (i+1) a / n \rceil = ((i+1) a + n - 1) \,/\!/\, n .$$
#
# For image SPP the host passes a *bin table* (the `(y0, y1, x0, x1)` of every bin of every level,
# built by `tinyspp.bins.bin_table`), so the kernel supports all three bin modes without knowing
# about them. The work of one thread is a plain max over a rectangle, with the library's tie rule
# (strict `>`: the first maximum in row-major order wins) and a sticky NaN:

# %%
print(viz.source_excerpt(SOURCE, "// Max over rows", "}"))

# %% [markdown]
# The forward kernel: the flat thread index `t` is unravelled as `(i, c, m)` with the bin index
# `m` fastest, and the bin's output column follows the library's layout (level by level, each
# level channel-major): `col = C * bin0[l] + c * n * n + (m - bin0[l])`.

# %%
print(viz.source_excerpt(SOURCE, "// Image SPP forward", "}"))

# %% [markdown]
# `FOR_EACH_THREAD_ITEM` is a grid-stride loop. A launch has `blocks x threads` threads; thread
# $g = \text{blockIdx} \cdot \text{blockDim} + \text{threadIdx}$ handles items
# $t = g,\; g + G,\; g + 2G, \ldots$ with $G = \text{gridDim} \cdot \text{blockDim}$, so a launch
# capped at 65,535 blocks still covers any number of outputs.

# %%
print(viz.source_excerpt(SOURCE, "// Grid-stride loop"))
print("launch_config(total=1000)       ->", launch_config(1000), " (blocks, threads)")
print("launch_config(10**9, 4096 max)  ->", launch_config(10**9, max_blocks=4096))

# %% [markdown]
# ## 2. The thread-to-output mapping, drawn
#
# A toy launch: $N = 2$ images, $C = 2$ channels, levels (2, 1), so $M = 5$ bins per channel and
# $N C M = 20$ outputs. We cap the launch at 2 blocks of 4 threads ($G = 8$) to make the grid-stride
# loop visible: each of the 8 threads computes 2 or 3 outputs. The arithmetic below is the kernel's
# index arithmetic written out. An output does not record which thread wrote it, so the cell after
# the picture checks what *can* be checked: the thread assignment against the kernel's own
# grid-stride macro and unravelling lines (read from the source), the output column of every
# item against what the emulated kernel wrote there, and that the 2-block launch writes the same
# numbers as a launch with one thread per output.

# %%
N, C, H, W = 2, 2, 5, 6
levels = (2, 1)
table = bin_table(H, W, levels, channels=C)
M = sum(n * n for n in levels)
bin0 = np.cumsum([0] + [n * n for n in levels])[:-1]          # first bin of each level
blocks, threads = launch_config(N * C * M, threads=4, max_blocks=2)
G = blocks * threads

rows = []   # (t, block, thread, step, i, c, m, output column)
for t in range(N * C * M):
    g, step = t % G, t // G
    m, c, i = t % M, (t // M) % C, t // (M * C)
    l = int(np.searchsorted(bin0, m, side="right") - 1)
    n = levels[l]
    col = C * bin0[l] + c * n * n + (m - bin0[l])
    rows.append((t, g // threads, g % threads, step, i, c, m, int(col)))
rows = np.array(rows)

fig, ax = plt.subplots(figsize=(11.0, 2.9))
colors = plt.get_cmap("tab10")
for t, blk, thr, step, i, c, m, col in rows:
    x = i * C * M + col                                    # flat position in out (N, C*M)
    ax.add_patch(plt.Rectangle((x, 0), 1, 1, facecolor=colors(blk * threads + thr), alpha=0.8,
                               edgecolor="white"))
    ax.text(x + 0.5, 0.7, f"b{blk}", ha="center", fontsize=8)
    ax.text(x + 0.5, 0.45, f"t{thr}", ha="center", fontsize=8)
    ax.text(x + 0.5, 0.15, f"s{step}", ha="center", fontsize=8)
    ax.text(x + 0.5, -0.12, f"c{c}\nm{m}", ha="center", va="top", fontsize=8)
ax.axvline(C * M, color="k", lw=1.5)
for i in range(N):
    ax.text(i * C * M + C * M / 2, 1.12, f"image i={i}: out[{i}, 0:{C * M}]", ha="center",
            fontsize=9)
ax.set_xlim(0, N * C * M)
ax.set_ylim(-0.62, 1.3)
ax.set_xticks(np.arange(N * C * M) + 0.5, [str(k % (C * M)) for k in range(N * C * M)])
ax.set_yticks([])
ax.set_xlabel("output column within the image's row (levels in order, channel-major)")
for side in ("left", "right", "top"):
    ax.spines[side].set_visible(False)
ax.set_title(f"who writes each output: block b, thread t (one colour per thread), grid-stride "
             f"step s ({blocks} blocks x {threads} threads); below: channel c, bin m", fontsize=10)
fig.tight_layout()
viz.save_thumbnail(fig, "05_threads")
plt.show()

# 1. the assignment drawn is the kernel's: its grid-stride macro and its unravelling, verbatim
macro = viz.source_excerpt(SOURCE, "#define FOR_EACH_THREAD_ITEM")
assert "blockIdx.x * blockDim.x + threadIdx.x" in macro and "blockDim.x * gridDim.x" in macro
body = viz.source_excerpt(SOURCE, "// Image SPP forward", "}")
for line in ("m = t % M;", "c = (t / M) % C;", "i = t / (M * C);",
             "col = C * bin0[l] + c * level_n[l] * level_n[l] + (m - bin0[l]);"):
    assert line in body, line
# 2. every item's output column holds the max of the bin the mapping assigns to it
x = rng.standard_normal((N, C, H, W))
out, argmax = kernels.spp_forward(x, table, "max", threads=4, max_blocks=2)
for t, blk, thr, step, i, c, m, col in rows:
    y0, y1, x0, x1 = table.y0[m], table.y1[m], table.x0[m], table.x1[m]
    assert out[i, col] == x[i, c, y0:y1, x0:x1].max()
# 3. the 2-block launch (grid-stride steps 0-2) writes exactly what one thread per output writes
full, _ = kernels.spp_forward(x, table, "max", threads=N * C * M, max_blocks=1)
assert np.array_equal(out, full)
print("mapping = the kernel's source; every column holds its bin's max; 2 blocks == 1 thread "
      "per output")

# %% [markdown]
# ## 3. The same source on the CPU
#
# `tinyspp.kernels.emulate` compiles `pyramid_pool.cu` with the host C++ compiler behind a short
# prelude (`__global__` and `__device__` defined away, `blockIdx`/`threadIdx` as globals, a serial
# `atomicAdd`) and runs every block and thread in order. Because the kernels use no shared memory
# and no `__syncthreads`, the serial run computes what the GPU computes.

# %%
print(emulate.PRELUDE)
print("compiler:", emulate.find_compiler())

# %% [markdown]
# ### Equal to the NumPy path
#
# `spp_forward(x, impl="emulate")` runs the kernel on the CPU; `impl="xp"` is the
# vectorised NumPy implementation of `tinyspp.ops.spp`. Outputs and winners must be identical, bit
# for bit: in float32 and float64, for all three bin modes, with ties and a NaN in the input (in
# both dtypes; the cell asserts that the NaN reached the output). The
# gradients agree to rounding: a cell that wins several bins sums their gradients, and the two
# paths add in a different order and precision (the kernel gathers in the input's dtype, level by
# level; the NumPy path scatters with one `np.add.at` in the input's dtype, in index order). We print the largest difference.
# Finally a launch so small that the grid-stride loop runs many steps must change nothing.

# %%
cases = [((2, 3, 13, 13), (6, 3, 2, 1), "paper"), ((3, 4, 10, 17), (6, 3, 2, 1), "adaptive"),
         ((2, 2, 12, 12), (4, 2, 1), "caffe"), ((1, 2, 3, 4), (6, 3, 2, 1), "adaptive")]
print(f"{'shape':>15s} {'mode':>9s} {'dtype':>8s}  forward  argmax  max |dx_kernel - dx_xp|")
for shape, lv, mode in cases:
    for dtype in (np.float32, np.float64):
        x = np.round(rng.standard_normal(shape), 1).astype(dtype)     # rounding makes ties
        x.flat[rng.integers(x.size)] = np.nan                          # a NaN in both dtypes
        y_k, c_k = spp_forward(x, levels=lv, mode=mode, impl="emulate")
        y_x, c_x = spp_forward(x, levels=lv, mode=mode, impl="xp")
        g = rng.standard_normal(y_x.shape).astype(dtype)
        same_y = np.array_equal(y_k, y_x, equal_nan=True)
        same_arg = np.array_equal(c_k.argmax, c_x.argmax)
        dx_k, dx_x = spp_backward(g, c_k), spp_backward(g, c_x)
        diff = np.abs(dx_k.astype(np.float64) - dx_x).max()
        print(f"{str(shape):>15s} {mode:>9s} {np.dtype(dtype).name:>8s}  {str(same_y):>7s} "
              f"{str(same_arg):>7s}  {diff:.1e}")
        assert same_y and same_arg and dx_k.dtype == dx_x.dtype == dtype
        assert np.isnan(y_k).any() and np.isnan(y_x).any()             # the NaN propagated
        tol = 1e-5 if dtype == np.float32 else 1e-12     # |g| ~ 1, a few terms per cell
        assert np.allclose(dx_k, dx_x, rtol=tol, atol=tol)

small, _ = kernels.spp_forward(x, bin_table(3, 4, (6, 3, 2, 1), channels=2), threads=2,
                               max_blocks=1)
assert np.array_equal(small, spp_forward(x, impl="xp")[0], equal_nan=True)

# %% [markdown]
# ### Region pooling: one kernel, thousands of windows
#
# The region kernel pools each RoI `[b, x0, y0, x1, y1]` (inclusive feature cells) with adaptive
# bins over the RoI's own size. By definition that equals image SPP of the cropped map, which we
# check for a few hundred random RoIs. Its backward is a *scatter* with `atomicAdd` (a cell can lie
# in any number of RoIs), unlike the image backward, which is a *gather* (one thread per input
# cell):

# %%
print(viz.source_excerpt(SOURCE, "// Region SPP backward as a SCATTER", "}"))

features = rng.standard_normal((2, 3, 14, 18))
R = 50 if QUICK else 400
x0 = rng.integers(0, 18, R)
y0 = rng.integers(0, 14, R)
rois = np.stack([rng.integers(0, 2, R), x0, y0, rng.integers(x0, 18), rng.integers(y0, 14)], 1)
out, _ = kernels.roi_spp_forward(features, rois.astype(np.int64), (6, 3, 2, 1), "max")
for r, (b, a0, b0, a1, b1) in enumerate(rois):
    crop = features[b:b + 1, :, b0:b1 + 1, a0:a1 + 1]
    assert np.array_equal(out[r], spp_forward(crop, impl="xp")[0][0])
print(f"{R} RoIs: region kernel == image SPP of each crop, (R, D) = {out.shape}")

# %% [markdown]
# ## 4. Timings
#
# On the CPU the emulation runs every thread serially: it exists to make the kernel readable,
# testable and debuggable without a GPU, not to be fast. We time it against the NumPy path on a
# ZF-5-sized conv5 map (256 channels, 13x13), reporting medians.

# %%
repeats = 3 if QUICK else 15
conv5 = rng.standard_normal((4 if QUICK else 16, 256, 13, 13)).astype(np.float32)
t_xp = median_ms(lambda: spp_forward(conv5, impl="xp"), repeats)
t_emu = median_ms(lambda: spp_forward(conv5, impl="emulate"), repeats)
print(f"CPU, x = {conv5.shape} float32, levels (6, 3, 2, 1), median of {repeats}:")
print(f"  NumPy path (impl='xp')          {t_xp:8.2f} ms")
print(f"  kernel emulated (impl='emulate') {t_emu:7.2f} ms   ({t_emu / t_xp:.1f}x the NumPy time)")

# %% [markdown]
# ### On a GPU
#
# With CuPy arrays `impl="auto"` launches the compiled kernel (`cupy.RawModule`, compiled once per
# device and cached). Where a GPU is present the cell below checks that the GPU result equals the
# CPU result and times kernel vs the CuPy array path; where there is none it says so.

# %%
if gpu_available():
    import cupy as cp

    xg = cp.asarray(conv5)
    y_gpu, c_gpu = spp_forward(xg)                     # auto -> kernel on CuPy input
    y_cpu, c_cpu = spp_forward(conv5, impl="xp")
    assert np.array_equal(cp.asnumpy(y_gpu), y_cpu)
    assert np.array_equal(cp.asnumpy(c_gpu.argmax), c_cpu.argmax)

    from tinyspp.bench.gpu import event_ms  # median between CUDA events

    t_kernel = event_ms(cp, lambda: spp_forward(xg, impl="cuda"), 50)
    t_cupy = event_ms(cp, lambda: spp_forward(xg, impl="xp"), 50)
    print(f"GPU {cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}, x = {conv5.shape}:")
    print(f"  raw kernel     {t_kernel:7.3f} ms")
    print(f"  CuPy xp path   {t_cupy:7.3f} ms   ({t_cupy / t_kernel:.1f}x the kernel time)")
    print(f"  NumPy on CPU   {t_xp:7.3f} ms")
else:
    print("No CUDA GPU here (or CuPy cannot use one): the GPU comparison is skipped. "
          "On a GPU machine re-run this notebook, or `make test-gpu`.")

# %% [markdown]
# ## Summary
#
# * `pyramid_pool.cu` is one thread per output: `t -> (i, c, m)` with the bin fastest, each thread
#   scanning its own bin, with the library's tie rule and NaN semantics and the library's output
#   layout; a grid-stride loop covers any size.
# * Image backward gathers (one thread per input cell, no atomics, deterministic); region backward
#   scatters with `atomicAdd`, because a cell can belong to any number of RoIs.
# * The same source compiles as C++ and runs serially on the CPU: outputs and winners equal the
#   NumPy path bit for bit and gradients to rounding, so the kernel is tested without a GPU.
# * On a GPU, CuPy runs the same file; the timing cell above reports what this machine measured.
#
# This is the last notebook; the [index](README.md) lists them all, and
# [docs/exercises.md](../docs/exercises.md) the graded exercises.
#
# ## Exercises
#
# 1. Change the toy launch of section 2 to 3 blocks of 2 threads and predict, before running,
#    which thread writes `out[1, 4]` and in which grid-stride step; then redraw the picture.
# 2. The image backward is a *gather* (one thread per input cell). Read
#    `viz.source_excerpt(SOURCE, "// Image SPP backward", "}")` and explain why it needs no
#    `atomicAdd`, and what a scatter version (one thread per output) would need instead.
# 3. Break the tie rule on purpose: in a copy of `max_over_bin` use `>=` instead of `>`. Which
#    check of section 3 fails, and why only on inputs with ties? (The graded exercise
#    `spp_max_backward`, `python -m tinyspp grade exercises/ --only spp_max_backward`, tests the
#    same rule in NumPy.)
