# %% [markdown]
# # 04 · Region pooling and detection: thousands of windows, one convolution pass
#
# **Previous:** [03 · Multi-size training](03_multi_size_training.ipynb). **Next:**
# [05 · The GPU kernel](05_gpu_kernel.ipynb).
#
# **Assumes** the pyramid bins of [01](01_bin_math.ipynb) (adaptive bins over any size), the SPP
# layer of [02](02_spp_layer.ipynb) and the small SPP-net trained in
# [03](03_multi_size_training.ipynb); NumPy and the idea of a convolutional feature map. Its
# full run time is listed in the README's learning path (measured by `notebooks/run.py`).
#
# **What you will learn**
#
# * how an image window is mapped onto the cells of a feature map: the paper's formula, the same
#   formula with the "proper offset" of a real network, and the receptive-field-centre method;
# * region SPP: pooling any number of windows from ONE feature map, each into the same fixed-length
#   vector;
# * selective-search proposals ("fast" mode), the SPP-net detector -- an extractor plus one SVM /
#   box-regression head -- on a small synthetic set, and its precision-recall curves;
# * the SPP-net vs R-CNN feature-extraction time, measured here, and the multi-seed experiment's
#   verdicts on the paper's detection claims.
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
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np

from tinyspp import viz
from tinyspp.apps.detect_demo import FULL, QUICK as QUICK_CONFIG, draw_detections, pretrain_trunk
from tinyspp.apps.publish import load_results
from tinyspp.bench import median_ms
from tinyspp.detect.data import train_test_sets
from tinyspp.detect.detector import SPPDetector
from tinyspp.detect.evaluate import evaluate_detections
from tinyspp.detect.geometry import image_to_feature_boxes, iou, mapping_offset, receptive_field
from tinyspp.detect.proposals import proposal_recall, selective_search
from tinyspp.detect.rcnn import RCNNFeatures
from tinyspp.nn.models import small_spp_net, split_trunk_head
from tinyspp.ops.roi import roi_spp_forward
from tinyspp.ops.spp import spp_forward

QUICK = viz.quick_mode()
viz.setup()
SEED = 0
# the detection demo's frozen configurations (tinyspp.apps.detect_demo.DetectionConfig)
CFG = replace(QUICK_CONFIG, pretrain_epochs=1) if QUICK else FULL
print("quick mode:", QUICK)
print(CFG)

# %% [markdown]
# ## 1. From an image window to feature-map cells
#
# Our trunk (the small SPP-net's conv layers) has two stride-2 poolings: neighbouring conv3 cells
# are $S = 4$ pixels apart. Walking the layers (kernel $k$, stride $s$, padding $p$) gives the
# centre $c_0$ of cell 0's receptive field: each layer moves it by $((k-1)/2 - p)$ times the stride
# so far. `receptive_field` does that walk. Boxes are continuous: pixel $i$ covers $[i, i+1)$, so
# a box's right edge $x_1$ is its last pixel plus one.
#
# **The paper's formula** (Appendix A) assumes padding $\lfloor p/2 \rfloor$ everywhere, so that cell
# $x'$ is centred on pixel $S x'$, and maps a window to
# $$ x_0' = \left\lfloor x_0 / S \right\rfloor + 1, \qquad x_1' = \left\lceil x_1 / S \right\rceil - 1 ,$$
# both applied to the window's *edges*: the cells whose centre $S x'$ lies strictly inside
# $(x_0, x_1)$. A cell centred exactly on an edge is dropped on both sides.
#
# **With the proper offset.** Our 2x2 poolings have no padding, which moves the centres right;
# "if the padding is not $\lfloor p/2\rfloor$, we need to add a proper offset". The offset is
# $o = c_0 - 0.5$ (the real centre of cell 0 minus the centre of pixel 0), and the rule becomes
# $\lfloor (x_0 - o)/S \rfloor + 1 .. \lceil (x_1 - o)/S \rceil - 1$ (`mapping_offset`).
#
# **The centre method** keeps exactly the cells whose receptive-field centre $c_0 + S x'$ lies inside
# the closed window: $x_0' = \lceil (x_0 - c_0)/S \rceil$, $x_1' = \lfloor (x_1 - c_0)/S \rfloor$.
#
# **Worked by hand** for the window $[x_0, y_0, x_1, y_1] = [10, 6, 41, 30]$ with $S = 4$,
# $c_0 = 2$ and $o = 1.5$:
#
# | | $x_0'$ | $y_0'$ | $x_1'$ | $y_1'$ |
# |---|---|---|---|---|
# | paper | $\lfloor 10/4\rfloor + 1 = 3$ | $\lfloor 6/4\rfloor + 1 = 2$ | $\lceil 41/4\rceil - 1 = 10$ | $\lceil 30/4\rceil - 1 = 7$ |
# | paper + offset | $\lfloor 8.5/4\rfloor + 1 = 3$ | $\lfloor 4.5/4\rfloor + 1 = 2$ | $\lceil 39.5/4\rceil - 1 = 9$ | $\lceil 28.5/4\rceil - 1 = 7$ |
# | centre | $\lceil 8/4\rceil = 2$ | $\lceil 4/4\rceil = 1$ | $\lfloor 39/4\rfloor = 9$ | $\lfloor 28/4\rfloor = 7$ |

# %%
net = small_spp_net(5, widths=CFG.widths, hidden=CFG.hidden, seed=SEED)
trunk, head = split_trunk_head(net)
S, c0, rf = receptive_field(trunk)
offset = mapping_offset(trunk)
print(f"stride S = {S}, centre of cell 0 = {c0} px, offset o = {offset} px, receptive field {rf} px")
assert (S, c0, offset) == (4, 2.0, 1.5)

window = np.array([[10, 6, 41, 30]])
maps = {
    "paper": image_to_feature_boxes(window, S, (16, 16), method="paper")[0],
    "paper + offset": image_to_feature_boxes(window, S, (16, 16), method="paper", offset=offset)[0],
    "centre": image_to_feature_boxes(window, S, (16, 16), method="center", centre=c0)[0],
}
for name, cells in maps.items():
    print(f"{name:15s}", cells)
assert maps["paper"].tolist() == [3, 2, 10, 7]
assert maps["paper + offset"].tolist() == [3, 2, 9, 7]
assert maps["centre"].tolist() == [2, 1, 9, 7]

# %% [markdown]
# The picture: a 64x64 image region, the receptive-field centres of the 16x16 conv3 map as dots,
# the window in black, and the cells each rule selects (their centres circled). The plain paper
# rule ignores the network's offset, so its selection is shifted: it drops the left column and the
# top row whose centres lie inside the window and takes a column on the right whose centres lie
# outside it. With the offset it agrees with the centre method except on the left column and the
# top row, whose centres lie exactly on the window's edges $x_0 = 10$ and $y_0 = 6$ (the strict
# rule drops them, the closed centre rule keeps them).

# %%
def draw_mapping(ax, cells, color, title):
    ys, xs = np.mgrid[0:16, 0:16]
    ax.plot(c0 + S * xs.ravel(), c0 + S * ys.ravel(), ".", color="0.6", ms=3)
    x0, y0, x1, y1 = cells
    sel_x, sel_y = np.mgrid[x0:x1 + 1, y0:y1 + 1]
    ax.plot(c0 + S * sel_x.ravel(), c0 + S * sel_y.ravel(), "o", mfc="none", color=color, ms=5)
    viz.draw_boxes(ax, window, color="k", linewidth=1.5, offset=0)   # axes in box coordinates
    ax.set(xlim=(0, 64), ylim=(64, 0), aspect="equal", xlabel="x (px)", ylabel="y (px)")
    ax.set_title(title, fontsize=9)


fig, axes = plt.subplots(1, 3, figsize=(10.2, 3.8))
for ax, (name, cells), color in zip(axes, maps.items(), ["tab:red", "tab:purple", "tab:blue"]):
    x0, y0, x1, y1 = cells
    draw_mapping(ax, cells, color, f"{name}: cells {x0}..{x1} x {y0}..{y1}")
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
train, test = train_test_sets(CFG.n_train, CFG.n_test, seed=SEED, size_range=CFG.size_range)
image = test.images[0]
proposals = selective_search(image, CFG.proposal_mode, max_boxes=CFG.max_boxes, seed=SEED)
x = ((image.transpose(2, 0, 1)[None] - 0.5) / 0.25).astype(np.float32)     # (1, 3, H, W)

t0 = time.perf_counter()
fmap = trunk.forward(x)                                                   # once per image
t_conv = time.perf_counter() - t0
cells = image_to_feature_boxes(proposals, S, fmap.shape[2:], method="center", centre=c0)
rois = np.concatenate([np.zeros((len(cells), 1), np.int64), cells], axis=1)  # [b, x0, y0, x1, y1]
roi_spp_forward(fmap, rois[:1], levels=(4, 2, 1))  # a first call may compile the CPU kernel
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
# `roi_spp_forward` has several implementations behind `impl`. `"xp"` is the pure array path
# (sparse tables of integer keys that encode "first maximum in row-major order"); on NumPy arrays
# `"auto"` takes the compiled C++ kernel (`tinyspp/kernels/region_max.cpp`: the map channel-last,
# each finest-level bin scanned once with SIMD over the channels, coarser levels merged from finer
# ones) when the machine has a C++ compiler. Both give bitwise the same max pooling; here they are
# timed on this image's windows (forward only, median of a few runs), and `cache.impl` says which
# one ran.

# %%
for impl in ("xp", "auto"):
    out_i, cache_i = roi_spp_forward(fmap, rois, levels=(4, 2, 1), impl=impl)
    assert np.array_equal(out_i, pooled)
    ms = median_ms(lambda: roi_spp_forward(fmap, rois, levels=(4, 2, 1), impl=impl), repeats=7)
    print(f"impl={impl!r:7} ran {cache_i.impl!r:6}: {len(rois)} windows in {ms:.2f} ms")

# %% [markdown]
# ## 3. Selective-search proposals
#
# Selective search over-segments the image (Felzenszwalb's graph segmentation at scale $k$) and
# greedily merges the most similar neighbouring regions; every region ever formed gives a window.
# The paper uses its "fast" mode: every combination of two colour spaces {HSV, Lab}, $k \in$
# {50, 100} and two similarity sets {colour + texture + size + fill, texture + size + fill} -- 8
# groupings per image, their windows ranked and merged. `mode="single"` runs one of them. The
# recall at IoU $t$ is the fraction of objects some window covers with IoU $\ge t$.

# %%
n_cmp = 3 if QUICK else 10
rows = []
for mode in ("single", "fast"):
    t0 = time.perf_counter()
    props = [selective_search(img, mode, max_boxes=CFG.max_boxes, seed=SEED)
             for img in test.images[:n_cmp]]
    sec = (time.perf_counter() - t0) / n_cmp
    rows.append((mode, np.mean([len(p) for p in props]),
                 proposal_recall(props, test.boxes[:n_cmp], 0.5),
                 proposal_recall(props, test.boxes[:n_cmp], 0.7), sec))
print(f"{n_cmp} test images | windows per image | recall@0.5 | recall@0.7 | s per image")
for mode, n, r5, r7, sec in rows:
    print(f"{mode:>13s} | {n:17.0f} | {r5:10.3f} | {r7:10.3f} | {sec:.2f}")
assert rows[1][1] > rows[0][1]           # fast: more windows than one grouping

p_train = [selective_search(img, CFG.proposal_mode, max_boxes=CFG.max_boxes, seed=SEED)
           for img in train.images]
p_test = [proposals] + [selective_search(img, CFG.proposal_mode, max_boxes=CFG.max_boxes,
                                         seed=SEED) for img in test.images[1:]]
print(f"detector's proposals ({CFG.proposal_mode}): {np.mean([len(p) for p in p_test]):.0f} "
      f"windows per test image, recall@0.5 {proposal_recall(p_test, test.boxes, 0.5):.3f}")

fig, ax = plt.subplots(figsize=(4.4, 3.8))
ax.imshow(image)
viz.draw_boxes(ax, proposals[:60], color="tab:orange", linewidth=0.6, alpha=0.8)
viz.draw_boxes(ax, test.boxes[0], color="tab:green", linewidth=2.2,
               labels=[test.class_names[k] for k in test.labels[0]])
ax.set_title(f"60 of {len(proposals)} proposals (orange), ground truth (green)", fontsize=9)
ax.set(xlabel="x (px)", ylabel="y (px)")
fig.tight_layout()
viz.save_thumbnail(fig, "04_proposals")
plt.show()

# %% [markdown]
# ## 4. The SPP-net detector: an extractor and a head
#
# The recipe of Sec. 4 (inherited from R-CNN), in miniature. A detector is three parts:
# proposals, an *extractor* that turns an image and its windows into one vector per window
# (`SPPFeatures`: conv once per image, region SPP per window), and a *head* shared with R-CNN
# (`DetectionHead`: linear SVMs, box regression, NMS):
#
# 1. pre-train the network as a classifier (here: object vs background crops of the training
#    images with `tinyspp.train.Trainer`, our stand-in for ImageNet pre-training);
# 2. for every training image, one `ImageRecord`: the ground-truth boxes and proposals, their
#    pooled vectors and their IoU with each object (`SPPDetector.records`) -- image by image, so
#    they could as well be written to disk and streamed back;
# 3. one linear SVM per class: positives are the ground-truth boxes; negatives are windows whose
#    IoU with every object of the class is at most 0.3, and a negative overlapping another
#    negative by more than 0.7 is removed; one round of hard-negative mining; a ridge box regressor
#    per class on the pooled features of windows with IoU >= 0.6;
# 4. test: score every window, regress its box, non-maximum suppression at IoU 0.3.

# %%
t0 = time.perf_counter()
net, mean, std = pretrain_trunk(train, p_train, CFG, seed=SEED)
trunk, head = split_trunk_head(net)
print(f"trunk pre-trained in {time.perf_counter() - t0:.0f} s")

K = len(train.class_names)
detector = SPPDetector(trunk, K, levels=(4, 2, 1), scales=CFG.single, input_size=CFG.crop,
                       mapping="center", mean=mean, std=std, head_options=dict(seed=SEED))
t0 = time.perf_counter()
records = detector.records(train.images, train.boxes, train.labels, proposals=p_train)
detector.fit_records(records)
detections = detector.predict(test.images, p_test)
print(f"detector trained and run on {len(test.images)} test images in "
      f"{time.perf_counter() - t0:.0f} s")
rec = records[0]
print(f"record of training image 0: {len(rec.boxes)} windows ({len(rec.gt_boxes)} ground truth), "
      f"features {rec.features.shape}, overlaps {rec.overlap.shape}")

# %% [markdown]
# The paper's two negative rules, counted on the training records: how many windows overlap every
# object of a class by at most 0.3, and how many of those survive the removal of negatives that
# overlap another negative by more than 0.7 (greedily, in window order).

# %%
h = detector.head
before = sum(int(((r.overlap[:, c] <= h.neg_iou) & (r.labels != c)).sum())
             for r in records for c in range(K))
after = sum(len(h.negatives(r, c)) for r in records for c in range(K))
print(f"negatives over all classes and images: {before} with IoU <= {h.neg_iou}, "
      f"{after} after removing overlaps > {h.neg_overlap}")
kept = h.negatives(records[0], 0)
ov = iou(records[0].boxes[kept], records[0].boxes[kept])
np.fill_diagonal(ov, 0)
assert after <= before and (ov <= h.neg_overlap).all()
print("SVM training set sizes per class:", h.fit_stats)

# %%
fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.6))
for ax, img, det, gt in zip(axes, test.images, detections, test.boxes):
    draw_detections(ax, img, gt, det, test.class_names, top=3, min_score=-np.inf)
fig.suptitle("top-3 detections (green, label: class and SVM score) and ground truth (dashed)",
             fontsize=9)
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
fig, ax = plt.subplots(figsize=(4.8, 3.6))
for name, curve, ap in zip(test.class_names, result["curves"], result["ap"]):
    if curve.n_ground_truth:
        ax.plot(curve.recall, curve.precision, label=f"{name} (AP {ap:.2f})")
ax.set(xlabel="recall (fraction of objects found)", ylabel="precision (fraction correct)",
       xlim=(0, 1.02), ylim=(0, 1.05))
ax.set_title(f"SPP-net detector, one run: mAP {result['map']:.2f}", fontsize=9)
ax.legend(fontsize=8)
fig.tight_layout()
viz.save_thumbnail(fig, "04_precision_recall")
plt.show()
print("AP per class:", {name: round(float(ap), 3) for name, ap in zip(test.class_names, result["ap"])})
assert 0.0 <= result["map"] <= 1.0

# %% [markdown]
# ## 6. SPP-net vs R-CNN: feature-extraction time, measured
#
# Both extractors produce the same kind of feature (the $(4, 2, 1)$ pyramid over conv3) for the
# same windows with the same trunk. R-CNN (`RCNNFeatures`) warps each window to the training size
# and runs the trunk on every warped crop, a convolution cost of $O(R \cdot s^2)$ for $R$ windows of
# side $s$; SPP-net runs the trunk once on the image, $O(H W)$, and only the cheap pooling is per
# window. We time the feature extraction of one test image (median of a few runs) on this
# machine's CPU.

# %%
rcnn = RCNNFeatures(trunk, levels=(4, 2, 1), input_size=CFG.crop, mean=mean, std=std)
# the paper's setting is ~2,000 windows per image: top the proposals up with random windows
R = CFG.timing_windows
rng = np.random.default_rng(SEED)
H, W = image.shape[:2]
extra = max(0, R - len(proposals))
x0, y0 = rng.uniform(0, W - 8, extra), rng.uniform(0, H - 8, extra)
random_windows = np.stack([x0, y0, x0 + rng.uniform(8, W - x0), y0 + rng.uniform(8, H - y0)], 1)
windows = np.concatenate([proposals, random_windows])[:R]

spp = detector.extractor
t_spp = median_ms(lambda: spp.pool(image, windows), repeats=5, warmup=0) / 1e3
t_rcnn = median_ms(lambda: rcnn.pool(image, windows), repeats=1 if QUICK else 3, warmup=0) / 1e3
print(f"{len(windows)} windows on a {image.shape[0]}x{image.shape[1]} image, CPU:")
print(f"  SPP-net (conv once, region SPP) {1e3 * t_spp:9.1f} ms")
print(f"  R-CNN (warp + conv per window)  {1e3 * t_rcnn:9.1f} ms")
print(f"  ratio R-CNN / SPP-net           {t_rcnn / t_spp:9.1f}x")
assert spp.pool(image, windows[:5]).shape == rcnn.pool(image, windows[:5]).shape
assert t_rcnn > t_spp

# %% [markdown]
# ## 7. The paper's detection claims, over several seeds
#
# One run on a few test images is an anecdote. `python -m tinyspp detect experiment` trains every
# detector variant over several seeds (each seed: its own training set, pre-training and SVM
# negatives) and tests all of them on the same synthetic test images, so every comparison is
# paired; the statistic is a bootstrap over test images of the seed-mean mAP difference. The
# results file it writes, `results/detect.json`, is loaded here (the same file the README's claims
# table is made from).

# %%
res = load_results("detect")
print(f"command: {res['command']}  ({res['seconds'] / 60:.0f} min, seeds {res['seeds']}, "
      f"{res['n_test']} test images)")
print(f"\n{'method':52s} mAP mean ± sd")
for name in res["methods"]:
    m = res["map"][name]
    print(f"{name:52s} {m['mean']:.3f} ± {m['sd']:.3f}")
print()
for claim in res["claims"]:
    print(f"- {claim['claim']}: {claim['verdict'].upper()}\n    paper:   {claim['paper']}\n"
          f"    tinyspp: {claim['tinyspp']}\n    {claim['statistic']}")

# %% [markdown]
# ## Summary
#
# * A window maps to feature cells by $\lfloor x_0/S\rfloor + 1 .. \lceil x_1/S\rceil - 1$ on its
#   edges (paper), the same with the network's offset, or by the cells whose receptive-field
#   centres it contains; the multi-seed experiment measures all three.
# * Region SPP pools every window from one feature map into a fixed-length vector, equal to SPP of
#   the cropped map; the convolutions are shared by all windows.
# * The head scores windows with per-class linear SVMs on those vectors, refines boxes with ridge
#   regression and suppresses duplicates; it is the same for SPP-net and R-CNN, which differ only
#   in the extractor. Precision-recall and AP are computed as the VOC devkit does.
# * Measured above: R-CNN's per-window convolutions make its feature extraction many times slower
#   than SPP-net's on the same windows. The paper measured 24-102x on a GPU with a 5-layer ZF
#   network and 2,000 windows; our ratio depends on the image size, the window count and the CPU.
# * Section 7 states which of the paper's detection claims reproduce at this scale, with the
#   statistic behind each verdict.
#
# ## Exercises
#
# 1. **(graded)** Implement the paper's mapping of one window, `map_window(box, stride)`, in
#    `exercises/map_window.py` (the stub states the rule and the collapse convention) and check it
#    with `python -m tinyspp grade exercises/ --only map_window`; the grader's hypothesis
#    properties show a shrunk counterexample when a case fails.
# 2. Which windows does the paper rule map differently from the centre rule on our trunk? Draw 1000
#    random windows, map them with `mapping="paper"`, `"paper_offset"` and `"center"`
#    (`SPPFeatures.feature_rois`), and count per rule how often the cells differ; explain the
#    counts with $c_0$ and the offset.
# 3. Train the head with `DetectionHead(K, neg_overlap=1.0)` (no removal of overlapping
#    negatives) and with `neg_iou=0.5` on the same `records`, and compare the test mAP and the
#    number of negatives in `fit_stats`. Is one run enough to tell?
# 4. Time `RCNNFeatures` and `SPPFeatures.pool` at 100, 500 and 2000 windows and plot seconds
#    against windows: which part of each grows with the window count?
