# %% [markdown]
# # 04 · Region pooling and detection: thousands of windows, one convolution pass
#
# **What you will learn**
#
# * how an image window is mapped onto the cells of a feature map: the paper's formula and the
#   receptive-field-centre method, drawn over the image;
# * region SPP: pooling any number of windows from ONE feature map, each into the same fixed-length
#   vector;
# * selective-search proposals, the SPP-net detector (SVMs, box regression, NMS) on a small
#   synthetic set, and its precision-recall curves;
# * the SPP-net vs R-CNN feature-extraction time, measured here.
#
# **The paper, in our words.** R-CNN (Girshick et al. 2014) crops ~2,000 windows from an image,
# warps each to 227x227 and runs the whole CNN on every one of them. SPP-net (Sec. 4) runs the
# convolutional layers once on the whole image, maps each window onto the conv5 feature map, and
# applies spatial pyramid pooling to the window's part of the map: the fc layers then receive the
# same fixed-length vector they would receive from a warped crop. The convolutions, by far the most
# expensive part, are shared by all windows, which makes SPP-net one to two orders of magnitude
# faster at equal accuracy (59.2 vs 58.5 mAP on VOC 2007). Appendix A gives the mapping from a
# window in pixels to feature-map cells.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from tinyspp import viz
from tinyspp.detect.data import train_test_sets
from tinyspp.apps.detect_demo import FULL, QUICK as QUICK_CONFIG, pretrain_trunk
from tinyspp.detect.detector import SPPDetector
from tinyspp.detect.evaluate import evaluate_detections
from tinyspp.detect.geometry import image_to_feature_boxes, receptive_field
from tinyspp.detect.proposals import proposal_recall, selective_search
from tinyspp.detect.rcnn import RCNNDetector
from tinyspp.nn.models import small_spp_net, split_trunk_head
from tinyspp.ops.roi import roi_spp_forward
from tinyspp.ops.spp import spp_forward

QUICK = viz.quick_mode()
viz.setup()
SEED = 0
CFG = dict(QUICK_CONFIG if QUICK else FULL)      # the detection demo's configurations
if QUICK:
    CFG["pretrain_epochs"] = 1                    # the test suite only checks that it runs
SS = dict(max_boxes=CFG["max_boxes"], seed=SEED, ks=CFG.get("ss_ks", (50, 100, 200)),
          colour_spaces=CFG.get("ss_spaces", ("hsv", "lab")))   # selective search settings
print("quick mode:", QUICK)

# %% [markdown]
# ## 1. From an image window to feature-map cells
#
# Our trunk (the small SPP-net's conv layers) has two stride-2 poolings: neighbouring conv3 cells
# are $S = 4$ pixels apart. Walking the layers (kernel $k$, stride $s$, padding $p$) gives the
# centre of cell 0's receptive field: each layer moves it by $((k-1)/2 - p)$ times the stride so
# far. `receptive_field` does that walk.
#
# **The paper's formula** (Appendix A) assumes padding $\lfloor p/2 \rfloor$ everywhere, so that cell
# $x'$ is centred at about $S x'$, and maps a window $[x_0, x_1]$ to
# $$ x_0' = \left\lfloor x_0 / S \right\rfloor + 1, \qquad x_1' = \left\lceil x_1 / S \right\rceil - 1 .$$
# **The centre method** keeps exactly the cells whose receptive-field centre $c_0 + S x'$ lies inside
# the window: $x_0' = \lceil (x_0 - c_0)/S \rceil$, $x_1' = \lfloor (x_1 - c_0)/S \rfloor$.
#
# **Worked by hand** for the window $[x_0, y_0, x_1, y_1] = [10, 6, 41, 30]$ with $S = 4$ and
# $c_0 = 2$:
#
# | | $x_0'$ | $y_0'$ | $x_1'$ | $y_1'$ |
# |---|---|---|---|---|
# | paper | $\lfloor 10/4\rfloor + 1 = 3$ | $\lfloor 6/4\rfloor + 1 = 2$ | $\lceil 41/4\rceil - 1 = 10$ | $\lceil 30/4\rceil - 1 = 7$ |
# | centre | $\lceil 8/4\rceil = 2$ | $\lceil 4/4\rceil = 1$ | $\lfloor 39/4\rfloor = 9$ | $\lfloor 28/4\rfloor = 7$ |

# %%
net = small_spp_net(5, widths=CFG["widths"], hidden=CFG["hidden"], seed=SEED)
trunk, head = split_trunk_head(net)
S, c0, rf = receptive_field(trunk)
print(f"stride S = {S}, centre of cell 0 = {c0} px, receptive field {rf} px")
assert (S, c0) == (4, 2.0)

window = np.array([[10, 6, 41, 30]])
paper = image_to_feature_boxes(window, S, (16, 16), method="paper")
centre = image_to_feature_boxes(window, S, (16, 16), method="center", centre=c0)
print("paper :", paper[0], "\ncentre:", centre[0])
assert paper[0].tolist() == [3, 2, 10, 7] and centre[0].tolist() == [2, 1, 9, 7]

# %% [markdown]
# The picture: a 64x64 image region, the receptive-field centres of the 16x16 conv3 map as dots,
# the window in black, and the cells each method selects (their centres circled). The paper's rule
# ignores the 2-pixel offset $c_0$ of this network (the paper: "if the padding is not
# $\lfloor p/2\rfloor$, add a proper offset"), so its selection is shifted: it drops the left column
# and the top row whose centres lie inside the window, and takes a column on the right whose centres
# lie outside it.

# %%
def draw_mapping(ax, cells, color, title):
    ys, xs = np.mgrid[0:16, 0:16]
    ax.plot(c0 + S * xs.ravel(), c0 + S * ys.ravel(), ".", color="0.6", ms=3)
    x0, y0, x1, y1 = cells
    sel_x, sel_y = np.mgrid[x0:x1 + 1, y0:y1 + 1]
    ax.plot(c0 + S * sel_x.ravel(), c0 + S * sel_y.ravel(), "o", mfc="none", color=color, ms=5)
    viz.draw_boxes(ax, window, color="k", linewidth=1.5, offset=0)   # axes in box coordinates
    ax.set(xlim=(0, 64), ylim=(64, 0), aspect="equal", title=title)


fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.6))
draw_mapping(axes[0], paper[0], "tab:red", "paper formula: cells 3..10 x 2..7")
draw_mapping(axes[1], centre[0], "tab:blue", "centre method: cells 2..9 x 1..7")
fig.tight_layout()
viz.save_thumbnail(fig, "04_mapping")
plt.show()

# %% [markdown]
# ## 2. Region SPP: many windows, one feature map
#
# Region SPP of a RoI `[b, x0', y0', x1', y1']` (inclusive cells) is, by definition, the SPP of the
# cropped map `features[b, :, y0':y1'+1, x0':x1'+1]`, with adaptive bins over the RoI's own size.
# `roi_spp_forward` computes it for all RoIs at once from the one map. We take a synthetic test
# image, run the trunk ONCE, map every selective-search window and pool them all.

# %%
train, test = train_test_sets(CFG["n_train"], CFG["n_test"], seed=SEED,
                              size_range=CFG["size_range"])
image = test.images[0]
proposals = selective_search(image, **SS)
x = ((image.transpose(2, 0, 1)[None] - 0.5) / 0.25).astype(np.float32)     # (1, 3, H, W)

t0 = time.perf_counter()
fmap = trunk.forward(x)                                                   # once per image
t_conv = time.perf_counter() - t0
cells = image_to_feature_boxes(proposals, S, fmap.shape[2:], method="center", centre=c0)
rois = np.concatenate([np.zeros((len(cells), 1), np.int64), cells], axis=1)  # [b, x0, y0, x1, y1]
roi_spp_forward(fmap, rois[:1], levels=(4, 2, 1))  # the very first call compiles the CPU kernel
t0 = time.perf_counter()
pooled, _ = roi_spp_forward(fmap, rois, levels=(4, 2, 1))
t_pool = time.perf_counter() - t0
print(f"image {image.shape[:2]} -> conv3 map {fmap.shape}: {1e3 * t_conv:.1f} ms, once")
print(f"{len(rois)} windows -> pooled {pooled.shape}: {1e3 * t_pool:.1f} ms for all of them")

for r in np.random.default_rng(SEED).choice(len(rois), min(20, len(rois)), replace=False):
    _, a0, b0, a1, b1 = rois[r]
    crop = fmap[:, :, b0:b1 + 1, a0:a1 + 1]
    assert np.array_equal(pooled[r], spp_forward(crop, levels=(4, 2, 1))[0][0])
assert pooled.shape == (len(proposals), fmap.shape[1] * 21)

# %% [markdown]
# `roi_spp_forward` has several implementations behind `impl`. On NumPy arrays `"auto"` takes a
# compiled C++ kernel (`tinyspp/kernels/region_max.cpp`: the map channel-last, each finest-level
# bin scanned once with SIMD over the channels, coarser levels merged from finer ones) when the
# machine has a C++ compiler, and otherwise `"xp"`, the pure NumPy path (sparse tables of integer
# keys that encode "first maximum in row-major order"). Both give bitwise the same max pooling;
# here they are timed on this image's windows (forward only, median of a few runs).

# %%
from tinyspp.bench.common import median_ms  # the benchmarks' timer: median of repeats, in ms
from tinyspp.kernels import cpu as cpu_kernel

impls = ["xp"] + (["cpu"] if cpu_kernel.available() else [])
for impl in impls:
    out_i, cache_i = roi_spp_forward(fmap, rois, levels=(4, 2, 1), impl=impl)
    assert np.array_equal(out_i, pooled) and cache_i.impl == impl
    ms = median_ms(lambda: roi_spp_forward(fmap, rois, levels=(4, 2, 1), impl=impl), repeats=7)
    print(f"impl={impl!r:6}: {len(rois)} windows in {ms:.2f} ms")

# %% [markdown]
# ## 3. Selective-search proposals
#
# Selective search over-segments the image and greedily merges similar neighbouring regions; every
# region ever formed gives a window. The paper uses its "fast" mode, about 2,000 windows per image.
# Drawn: the 60 best-ranked windows (thin) and the ground truth (thick green); the recall is the
# fraction of objects that some window covers with IoU >= 0.5.

# %%
p_train = [selective_search(img, **SS) for img in train.images]
p_test = [proposals] + [selective_search(img, **SS) for img in test.images[1:]]
recall = proposal_recall(p_test, test.boxes, 0.5)
print(f"{np.mean([len(p) for p in p_test]):.0f} windows per test image; recall@0.5 = {recall:.2f}")

fig, ax = plt.subplots(figsize=(4.2, 3.6))
ax.imshow(image)
viz.draw_boxes(ax, proposals[:60], color="tab:orange", linewidth=0.6, alpha=0.8)
viz.draw_boxes(ax, test.boxes[0], color="tab:green", linewidth=2.2,
               labels=[test.class_names[k] for k in test.labels[0]])
ax.set_title(f"60 of {len(proposals)} proposals, ground truth in green")
ax.axis("off")
fig.tight_layout()
viz.save_thumbnail(fig, "04_proposals")
plt.show()

# %% [markdown]
# ## 4. The SPP-net detector
#
# The recipe of Sec. 4 (inherited from R-CNN), in miniature:
#
# 1. pre-train the network as a classifier (here: object vs background crops of the training
#    images, our stand-in for ImageNet pre-training);
# 2. for every window of every training image: conv once per image, region SPP, the pooled
#    vector (`SPPDetector.prepare`);
# 3. one linear SVM per class: positives are the ground-truth boxes, negatives windows with IoU
#    <= 0.3, one round of hard-negative mining; a ridge box regressor per class on the pooled
#    features;
# 4. test: score every window, regress its box, non-maximum suppression at IoU 0.3.

# %%
t0 = time.perf_counter()
net, mean, std = pretrain_trunk(train, p_train, CFG, seed=SEED)
trunk, head = split_trunk_head(net)
print(f"trunk pre-trained in {time.perf_counter() - t0:.0f} s")

K = len(train.class_names)
detector = SPPDetector(trunk, K, levels=(4, 2, 1), scales=CFG["single"], input_size=CFG["crop"],
                       mapping="center", mean=mean, std=std, seed=SEED)
t0 = time.perf_counter()
detector.fit(train.images, train.boxes, train.labels, proposals=p_train)
detections = detector.predict(test.images, p_test)
print(f"detector trained and run on {len(test.images)} test images in "
      f"{time.perf_counter() - t0:.0f} s")

# %%
fig, axes = plt.subplots(1, 3, figsize=(9.0, 3.2))
for ax, img, (boxes, scores, labels), gt in zip(axes, test.images, detections, test.boxes):
    ax.imshow(img)
    viz.draw_boxes(ax, gt, color="tab:green", linewidth=2.0)
    top = np.argsort(-scores)[:3]
    viz.draw_boxes(ax, boxes[top], color="tab:red",
                   labels=[f"{test.class_names[labels[i]]} {scores[i]:.1f}" for i in top])
    ax.axis("off")
fig.suptitle("top-3 detections (red, SVM score) and ground truth (green)", fontsize=9)
fig.tight_layout()
viz.save_thumbnail(fig, "04_detections")
plt.show()

# %% [markdown]
# ## 5. Precision and recall
#
# For each class, detections over all test images are sorted by score; a detection is a true
# positive when it overlaps a not-yet-matched object of its class with IoU >= 0.5. Average precision
# (AP) is the area under the precision-recall curve (VOC 2007's 11-point version here, as in the
# paper); mAP is its mean over classes.

# %%
result = evaluate_detections(detections, list(zip(test.boxes, test.labels)), K, method="11point")
fig, ax = plt.subplots(figsize=(4.6, 3.4))
for name, curve, ap in zip(test.class_names, result["curves"], result["ap"]):
    if curve.n_ground_truth:
        ax.plot(curve.recall, curve.precision, label=f"{name} (AP {ap:.2f})")
ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.05),
       title=f"SPP-net detector: mAP {result['map']:.2f}")
ax.legend(fontsize=8)
fig.tight_layout()
viz.save_thumbnail(fig, "04_precision_recall")
plt.show()
print("AP per class:", {name: round(float(ap), 3) for name, ap in zip(test.class_names, result["ap"])})
assert 0.0 <= result["map"] <= 1.0

# %% [markdown]
# ## 6. SPP-net vs R-CNN: feature-extraction time, measured
#
# Both detectors produce the same kind of feature (the $(4, 2, 1)$ pyramid over conv3) for the same
# windows with the same trunk. R-CNN warps each window to the training size and runs the trunk on
# every warped crop, a convolution cost of $O(R \cdot s^2)$ for $R$ windows of side $s$; SPP-net runs
# the trunk once on the image, $O(H W)$, and only the cheap pooling is per window. We time the
# feature extraction of one test image (median of a few runs) on this machine's CPU.

# %%
rcnn = RCNNDetector(trunk, K, levels=(4, 2, 1), scales=CFG["single"], input_size=CFG["crop"],
                    mean=mean, std=std, seed=SEED)
# the paper's setting is ~2,000 windows per image: top the proposals up with random windows
R = CFG["timing_windows"]
rng = np.random.default_rng(SEED)
H, W = image.shape[:2]
extra = max(0, R - len(proposals))
x0, y0 = rng.uniform(0, W - 8, extra), rng.uniform(0, H - 8, extra)
random_windows = np.stack([x0, y0, x0 + rng.uniform(8, W - x0), y0 + rng.uniform(8, H - y0)], 1)
windows = np.concatenate([proposals, random_windows])[:R]

t_spp = median_ms(lambda: detector.pool(image, windows), repeats=5, warmup=0) / 1e3
t_rcnn = median_ms(lambda: rcnn.pool(image, windows), repeats=1 if QUICK else 3, warmup=0) / 1e3
print(f"{len(windows)} windows on a {image.shape[0]}x{image.shape[1]} image, CPU:")
print(f"  SPP-net (conv once, region SPP) {1e3 * t_spp:9.1f} ms")
print(f"  R-CNN (warp + conv per window)  {1e3 * t_rcnn:9.1f} ms")
print(f"  ratio R-CNN / SPP-net           {t_rcnn / t_spp:9.1f}x")
assert detector.pool(image, windows[:5]).shape == rcnn.pool(image, windows[:5]).shape
assert t_rcnn > t_spp

# %% [markdown]
# ## Summary
#
# * A window maps to feature cells by $\lfloor x_0/S\rfloor + 1 .. \lceil x_1/S\rceil - 1$ (paper)
#   or by the cells whose receptive-field centres it contains (exact for any padding).
# * Region SPP pools every window from one feature map into a fixed-length vector, equal to SPP of
#   the cropped map; the convolutions are shared by all windows.
# * The detector scores windows with per-class linear SVMs on those vectors, refines boxes with
#   ridge regression and suppresses duplicates; precision-recall and AP are computed VOC-style.
# * Measured above: R-CNN's per-window convolutions make its feature extraction many times slower
#   than SPP-net's on the same windows. The paper measured 24-102x on a GPU with a 5-layer ZF
#   network and 2,000 windows; our ratio depends on the image size, the window count and the CPU.
# * The full comparison (multi-scale, fine-tuning, R-CNN accuracy) is `python -m tinyspp detect --demo`.
