"""The detection demo and experiment: SPP-net vs R-CNN on the synthetic detection set.

:func:`run_detection_demo` (``python -m tinyspp detect demo``, also ``--demo``; one seed):

1. draws the synthetic train/test sets and their selective-search proposals (recall at IoU 0.5
   and 0.7, windows per image);
2. pre-trains the small SPP-net (``tinyspp.nn.small_spp_net``) with :class:`tinyspp.train.Trainer`
   as a classifier of object / background crops of the training images -- our stand-in for
   ImageNet pre-training;
3. trains and evaluates detectors that share that trunk (:data:`METHODS`): SPP-net at 1 scale and
   at several scales, with and without box regression, with the three window mappings, with the
   fc layers fine-tuned on cached pool5 features (the paper) or trunk + fc fine-tuned through
   ``roi_spp_backward`` (Fast R-CNN style), and the R-CNN baseline -- one shared
   :class:`~tinyspp.detect.head.DetectionHead` design, two extractors;
4. times feature extraction per image for SPP-net and R-CNN at the same number of windows;
5. writes ``results.md``, ``summary.json``, ``detections.png`` and ``pr_curves.png``.

:func:`run_detection_experiment` (``python -m tinyspp detect experiment``) runs steps 1-4 for
several seeds on one shared test set of :data:`EXPERIMENT` ``.n_test`` images and writes
``results/detect.json``: mAP mean +- sd per method, a paired bootstrap over test images for each
comparison (:func:`tinyspp.stats.paired_bootstrap`) and the claims with computed verdicts.

Configuration is a frozen :class:`DetectionConfig` (:data:`FULL`, :data:`QUICK`,
:data:`EXPERIMENT`); change one field with ``dataclasses.replace(FULL, n_test=100)``.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..detect.data import make_detection_set, train_test_sets
from ..detect.detector import Detector
from ..detect.evaluate import average_precision, evaluate_detections
from ..detect.features import SPPFeatures
from ..detect.geometry import iou
from ..detect.head import DetectionHead
from ..detect.proposals import proposal_recall, selective_search


@dataclass(frozen=True)
class DetectionConfig:
    """Every setting of the detection demo and experiment.

    Attributes
    ----------
    n_train, n_test : synthetic training / test images
    size_range : image sides are drawn from this range (px)
    widths, hidden : channels of the small SPP-net's conv layers, fc width
    crop : side of the pre-training crops = the trunk's ``input_size`` (scale selection)
    pretrain_epochs, pretrain_lr : :class:`tinyspp.train.Trainer` schedule (constant lr)
    single, multi : shorter image side(s) of 1-scale and multi-scale SPP-net (px)
    ft_iters, trunk_iters : fine-tuning iterations (fc on cached features; trunk + fc)
    proposal_mode, max_boxes : selective search (``"fast"`` is the paper's)
    timing_windows, timing_images : feature-extraction timing: windows per image, images
    """

    n_train: int = 48
    n_test: int = 40
    size_range: tuple = (96, 144)
    widths: tuple = (8, 16, 32)
    hidden: int = 64
    crop: int = 24
    pretrain_epochs: int = 12
    pretrain_lr: float = 0.02
    single: tuple = (72,)
    multi: tuple = (48, 72, 108)
    ft_iters: int = 1000
    trunk_iters: int = 1000
    proposal_mode: str = "fast"
    max_boxes: int = 2000
    timing_windows: int = 2000
    timing_images: int = 3


#: The demo's full run (minutes).
FULL = DetectionConfig()
#: A tiny run for tests and notebooks in quick mode (seconds).
QUICK = DetectionConfig(n_train=24, n_test=10, size_range=(64, 96), widths=(8, 16, 16),
                        hidden=32, pretrain_epochs=15, single=(56,), multi=(40, 56, 80),
                        ft_iters=40, trunk_iters=10, proposal_mode="single", max_boxes=150,
                        timing_windows=150, timing_images=1)
#: The multi-seed experiment: FULL with a test set large enough that one image is not a point.
EXPERIMENT = replace(FULL, n_test=200, ft_iters=600, trunk_iters=400, timing_images=2)

#: The methods every run trains and evaluates, in order.
METHODS = (
    "SPP-net 1-scale, pool",
    "SPP-net 1-scale, pool, bbox",
    "SPP-net 1-scale, pool, bbox, paper+offset mapping",
    "SPP-net 1-scale, pool, bbox, centre mapping",
    "SPP-net multi-scale, pool",
    "SPP-net multi-scale, pool, bbox",
    "SPP-net multi-scale, fc (pre-trained), bbox",
    "SPP-net multi-scale, ftfc, bbox",
    "SPP-net multi-scale, ftfc + ft trunk, bbox",
    "R-CNN (warped windows), pool, bbox",
)

# a test-set stream no training seed uses: every seed of the experiment sees the same test images
TEST_STREAM = 10_000


# ---------------------------------------------------------------------------- pre-training
def crop_set(ds, proposals, size: int, rng, jitters: int = 6, backgrounds: int = 6):
    """Warped object / background crops of detection images, for pre-training a classifier.

    Every ground-truth box gives ``jitters`` crops (corners moved by up to 10% of its size),
    labelled ``class + 1``; up to ``backgrounds`` proposals per image with IoU < 0.3 with every
    object give crops labelled 0 (background).

    Returns
    -------
    ImageSet
        Crops ``(3, size, size)`` float32 in [0, 1]; classes ``("background", *class_names)``.
    """
    from ..data.dataset import ImageSet
    from ..data.transforms import resize

    crops, labels = [], []

    def add(img, box, label):
        H, W = img.shape[:2]
        xa, ya = int(np.clip(np.floor(box[0]), 0, W - 2)), int(np.clip(np.floor(box[1]), 0, H - 2))
        xb = int(np.clip(np.ceil(box[2]), xa + 2, W))
        yb = int(np.clip(np.ceil(box[3]), ya + 2, H))
        patch = np.ascontiguousarray(img[ya:yb, xa:xb].transpose(2, 0, 1))   # (3, h, w)
        crops.append(resize(patch, size, size).astype(np.float32))
        labels.append(label)

    for img, boxes, labs, props in zip(ds.images, ds.boxes, ds.labels, proposals):
        for box, lab in zip(boxes, labs):
            w, h = box[2] - box[0], box[3] - box[1]
            for _ in range(jitters):
                add(img, box + rng.uniform(-0.1, 0.1, 4) * [w, h, w, h], int(lab) + 1)
        far = props[iou(props, boxes).max(axis=1) < 0.3] if len(boxes) else props
        for k in rng.choice(len(far), min(backgrounds, len(far)), replace=False):
            add(img, far[k], 0)
    return ImageSet(crops, np.array(labels, dtype=np.int64),
                    ("background", *ds.class_names))


def pretrain_trunk(train, proposals, cfg: DetectionConfig, seed: int = 0, device: str = "cpu",
                   log=print):
    """Pre-train ``small_spp_net(K + 1)`` on object / background crops with the Trainer.

    Our stand-in for the paper's ImageNet pre-training: :class:`tinyspp.train.Trainer` (SGD with
    momentum 0.9, weight decay 5e-4, random crops, flips and colour jitter) at the single size
    ``cfg.crop``, a constant learning rate ``cfg.pretrain_lr`` for ``cfg.pretrain_epochs``.

    Returns
    -------
    net : Sequential
    mean, std : ndarray of shape (3,), the normalisation the net was trained with
    """
    from ..nn import small_spp_net
    from ..train import Trainer

    crops = crop_set(train, proposals, cfg.crop, np.random.default_rng([seed, 7]))
    net = small_spp_net(len(crops.classes), levels=(4, 2, 1), widths=cfg.widths,
                        hidden=cfg.hidden, seed=seed)
    trainer = Trainer(net, crops, sizes=(cfg.crop,), lr=cfg.pretrain_lr, seed=seed,
                      device=device, progress=False)
    history = trainer.fit(cfg.pretrain_epochs)
    log(f"pre-training: {len(crops)} crops, {cfg.pretrain_epochs} epochs, final loss "
        f"{history[-1]['train_loss']:.3f}, training error {history[-1]['train_error']:.3f}")
    net.eval()
    return net, trainer.mean, trainer.std


# ---------------------------------------------------------------------------- one seed
def _proposals(images, cfg: DetectionConfig, seed: int):
    return [selective_search(img, cfg.proposal_mode, max_boxes=cfg.max_boxes, seed=seed)
            for img in images]


def _windows_for_timing(image, proposals, n, rng):
    """``n`` windows: the image's proposals topped up with random boxes."""
    H, W = image.shape[:2]
    k = max(0, n - len(proposals))
    x0, y0 = rng.uniform(0, W - 8, k), rng.uniform(0, H - 8, k)
    extra = np.stack([x0, y0, x0 + rng.uniform(8, W - x0), y0 + rng.uniform(8, H - y0)], axis=1)
    return np.concatenate([proposals, extra])[:n]


def _median_pool(extractor, image, windows, repeats=3) -> dict:
    """Median seconds of ``extractor.pool(image, windows)`` (one image's feature extraction),
    with its two parts from ``extractor.timings``: ``trunk`` (resize or warp + conv) and
    ``pool``."""
    total = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        extractor.pool(image, windows)
        total.append(time.perf_counter() - t0)
    return {"total": float(np.median(total)),
            "trunk": float(np.median(extractor.timings["trunk"][-repeats:])),
            "pool": float(np.median(extractor.timings["pool"][-repeats:]))}


def train_and_test(cfg: DetectionConfig, seed: int, train, test, p_train, p_test, *,
                   device: str = "cpu", log=print) -> dict:
    """Pre-train, train every method of :data:`METHODS` on ``train``, detect on ``test``.

    Returns
    -------
    dict
        ``detections[name]`` (a list of ``(boxes, scores, labels)`` per test image),
        ``seconds[name]``, ``timing`` (feature-extraction seconds of SPP-net 1-scale,
        multi-scale and R-CNN on ``cfg.timing_images`` test images) and ``pretrain_s``.
    """
    from ..detect.finetune import finetune_fc, finetune_trunk
    from ..detect.rcnn import RCNNFeatures
    from ..nn.models import split_trunk_head

    K = len(train.class_names)
    t0 = time.perf_counter()
    net, mean, std = pretrain_trunk(train, p_train, cfg, seed=seed, device=device, log=log)
    pretrain_s = time.perf_counter() - t0
    trunk, head_layers = split_trunk_head(net)
    fc = head_layers[1:-1]    # after the pyramid pooling: fc, ReLU, Dropout (last fc dropped)
    common = dict(levels=(4, 2, 1), input_size=cfg.crop, mean=mean, std=std, device=device)
    gt = (train.images, train.boxes, train.labels)
    detections, seconds = {}, {}

    def head(**kw):
        return DetectionHead(K, device=device, seed=seed, **kw)

    def features(extractor):
        """Training records and test pool5 features of one extractor."""
        t = time.perf_counter()
        records = Detector(extractor, head()).records(*gt, proposals=p_train)
        pooled = [extractor.pool(img, p) for img, p in zip(test.images, p_test)]
        return records, pooled, time.perf_counter() - t

    def run(name, h, records, pooled, extra_s=0.0):
        t = time.perf_counter()
        h.fit(records)
        detections[name] = [h.detect_windows(p, f, img.shape)
                            for img, p, f in zip(test.images, p_test, pooled)]
        seconds[name] = extra_s + time.perf_counter() - t
        res = evaluate_detections(detections[name], list(zip(test.boxes, test.labels)), K,
                                  method="11point")
        log(f"{name:<52s} mAP {res['map']:.3f}   ({seconds[name]:.1f} s)")

    e1 = SPPFeatures(trunk, scales=cfg.single, **common)
    r1, f1, s1 = features(e1)
    run(METHODS[0], head(bbox_regression=False), r1, f1, s1)
    run(METHODS[1], head(), r1, f1)
    for name, mapping in ((METHODS[2], "paper_offset"), (METHODS[3], "center")):
        r, f, s = features(SPPFeatures(trunk, scales=cfg.single, mapping=mapping, **common))
        run(name, head(), r, f, s)
    em = SPPFeatures(trunk, scales=cfg.multi, **common)
    rm, fm, sm = features(em)
    run(METHODS[4], head(bbox_regression=False), rm, fm, sm)
    run(METHODS[5], head(), rm, fm)
    run(METHODS[6], head(fc=fc, features="fc"), rm, fm)
    # fine-tune fc on cached pool5 features (the paper): a copy of the fc layers, trunk untouched
    t = time.perf_counter()
    hft = head(fc=copy.deepcopy(fc), features="fc")
    finetune_fc(hft, rm, iterations=cfg.ft_iters, seed=seed)
    run(METHODS[7], hft, rm, fm, time.perf_counter() - t)
    # then trunk + fc through roi_spp_backward (Fast R-CNN style), warm-started from ftfc
    t = time.perf_counter()
    htr = copy.deepcopy(hft)
    etr = SPPFeatures(copy.deepcopy(trunk), scales=cfg.multi, **common)
    finetune_trunk(etr, htr, train.images, rm, iterations=cfg.trunk_iters, lr=0.003, seed=seed)
    rt, ft, st = features(etr)
    run(METHODS[8], htr, rt, ft, time.perf_counter() - t)
    del rt, ft
    er = RCNNFeatures(trunk, levels=(4, 2, 1), input_size=cfg.crop, mean=mean, std=std,
                      device=device)
    rr, fr, sr = features(er)
    run(METHODS[9], head(), rr, fr, sr)

    rng = np.random.default_rng(seed)
    timing = {"spp_1scale": [], "spp_multiscale": [], "rcnn": []}
    for j in range(min(cfg.timing_images, len(test.images))):
        img = test.images[j]
        windows = _windows_for_timing(img, p_test[j], cfg.timing_windows, rng)
        timing["spp_1scale"].append(_median_pool(e1, img, windows, repeats=5))
        timing["spp_multiscale"].append(_median_pool(em, img, windows, repeats=5))
        timing["rcnn"].append(_median_pool(er, img, windows, repeats=1))
    return {"detections": detections, "seconds": seconds, "timing": timing,
            "timing_windows": cfg.timing_windows, "pretrain_s": pretrain_s}


# ---------------------------------------------------------------------------- evaluation
class MatchTable:
    """Per-detection true/false-positive flags, for mAP over any multiset of test images.

    VOC matching is decided within one image (a detection is a true positive when its best-IoU
    object of its class, IoU >= 0.5, is not yet taken by a higher-scoring detection of that
    image), so each detection's flag is fixed once; the mAP of a resampled set of images is then
    a sort of the concatenated flags -- fast enough for a bootstrap. ``map(np.arange(N))`` equals
    :func:`tinyspp.detect.evaluate.evaluate_detections` (VOC07 11-point; ties in image order).
    """

    def __init__(self, detections, ground_truth, n_classes: int, iou_threshold: float = 0.5):
        self.K = n_classes
        self.scores, self.labels, self.tp, self.n_gt = [], [], [], []
        for (boxes, scores, labels), (g_boxes, g_labels) in zip(detections, ground_truth):
            labels = np.asarray(labels).reshape(-1)
            g_labels = np.asarray(g_labels).reshape(-1)
            tp = np.zeros(len(scores), dtype=bool)
            for c in np.unique(labels):
                rows = np.flatnonzero(labels == c)
                rows = rows[np.argsort(-np.asarray(scores)[rows], kind="stable")]
                g = np.asarray(g_boxes)[g_labels == c]
                if len(g) == 0:
                    continue
                ov = iou(np.asarray(boxes)[rows], g)
                taken = np.zeros(len(g), dtype=bool)
                for r, o in zip(rows, ov):
                    j = int(np.argmax(o))
                    if o[j] >= iou_threshold and not taken[j]:
                        tp[r] = taken[j] = True
            self.scores.append(np.asarray(scores, dtype=np.float64))
            self.labels.append(labels)
            self.tp.append(tp)
            self.n_gt.append(np.bincount(g_labels, minlength=n_classes))

    def map(self, idx) -> float:
        """VOC07 11-point mAP over the test images ``idx`` (repeats count again)."""
        s = np.concatenate([self.scores[i] for i in idx])
        lab = np.concatenate([self.labels[i] for i in idx])
        tp = np.concatenate([self.tp[i] for i in idx])
        n_gt = np.sum([self.n_gt[i] for i in idx], axis=0)
        aps = []
        for c in range(self.K):
            if n_gt[c] == 0:
                continue                                  # no object: left out (devkit)
            m = lab == c
            order = np.argsort(-s[m], kind="stable")
            hit = tp[m][order]
            ctp, cfp = np.cumsum(hit), np.cumsum(~hit)
            if len(hit) == 0:
                aps.append(0.0)
                continue
            aps.append(average_precision(ctp / np.maximum(ctp + cfp, 1), ctp / n_gt[c],
                                         method="11point"))
        return float(np.mean(aps)) if aps else float("nan")


# ---------------------------------------------------------------------------- the demo
def run_detection_demo(out_dir: str = "runs/detect", *, quick: bool = False, seed: int = 0,
                       device: str = "cpu", log=print, blas_threads: int | None = 1,
                       config: DetectionConfig | None = None):
    """Train and evaluate SPP-net and R-CNN detectors on the synthetic set (one seed).

    Parameters
    ----------
    out_dir : str
        Where results.md, summary.json and the figures go (created).
    quick : bool
        :data:`QUICK` instead of :data:`FULL` (seconds instead of minutes).
    seed : int
    device : {"cpu", "gpu"}
    log : callable
        Progress messages (``print`` by default).
    blas_threads : int or None
        Threads for NumPy's BLAS during the demo (the GEMMs here are small: one thread is
        fastest on a busy machine); None leaves the default.
    config : DetectionConfig, optional
        Overrides ``quick``.

    Returns
    -------
    summary : dict
        ``map_11point`` per method, proposal recall, timings and the SPP-net / R-CNN speed ratio.
    markdown : str
        The report written to ``out_dir/results.md``.
    """
    from ..train import blas_threads as limit_threads

    cfg = config or (QUICK if quick else FULL)
    with limit_threads(blas_threads):
        return _run_demo(out_dir, cfg, quick, seed, device, log)


def _proposal_stats(proposals, boxes, seconds):
    return {"proposals_per_image": float(np.mean([len(p) for p in proposals])),
            "proposal_recall_0.5": proposal_recall(proposals, boxes, 0.5),
            "proposal_recall_0.7": proposal_recall(proposals, boxes, 0.7),
            "selective_search_s_per_image": seconds / max(1, len(proposals))}


def _timing_summary(timing) -> dict:
    med = {k: {part: float(np.median([t[part] for t in v])) for part in ("total", "trunk", "pool")}
           for k, v in timing.items()}
    return {"feature_s_spp_1scale": med["spp_1scale"], "feature_s_spp_multiscale":
            med["spp_multiscale"], "feature_s_rcnn": med["rcnn"],
            "speedup_1scale": med["rcnn"]["total"] / med["spp_1scale"]["total"],
            "speedup_multiscale": med["rcnn"]["total"] / med["spp_multiscale"]["total"],
            "conv_speedup_1scale": med["rcnn"]["trunk"] / med["spp_1scale"]["trunk"]}


def _run_demo(out_dir, cfg, quick, seed, device, log):
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.perf_counter()
    train, test = train_test_sets(cfg.n_train, cfg.n_test, seed=seed, size_range=cfg.size_range)
    K = len(train.class_names)
    t0 = time.perf_counter()
    p_train = _proposals(train.images, cfg, seed)
    p_test = _proposals(test.images, cfg, seed)
    props = _proposal_stats(p_test, test.boxes, time.perf_counter() - t0)
    props["selective_search_s_per_image"] = (time.perf_counter() - t0) / (len(p_train)
                                                                          + len(p_test))
    log(f"proposals ({cfg.proposal_mode}): {props['proposals_per_image']:.0f} per test image, "
        f"recall@0.5 {props['proposal_recall_0.5']:.3f}, @0.7 {props['proposal_recall_0.7']:.3f}")
    out = train_and_test(cfg, seed, train, test, p_train, p_test, device=device, log=log)
    gts = list(zip(test.boxes, test.labels))
    curves = {name: evaluate_detections(d, gts, K, method="11point")
              for name, d in out["detections"].items()}
    summary = {
        "quick": quick, "seed": seed, "device": device, "classes": list(train.class_names),
        "n_train": cfg.n_train, "n_test": cfg.n_test, "config": asdict(cfg), **props,
        "map_11point": {k: v["map"] for k, v in curves.items()},
        "ap_per_class": {k: [float(a) for a in v["ap"]] for k, v in curves.items()},
        "method_seconds": out["seconds"], "timing_windows": cfg.timing_windows,
        "image_shape": list(test.images[0].shape[:2]), **_timing_summary(out["timing"]),
        "total_s": time.perf_counter() - t_start,
    }
    md = _markdown(summary, cfg)
    _figures(out_dir, test, out["detections"], curves, train.class_names)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    log(md)
    return summary, md


def _markdown(s, cfg) -> str:
    lines = [
        "# SPP-net detection on the synthetic set",
        "",
        f"{s['n_train']} training and {s['n_test']} test images (one seed: a single run, not a "
        f"finding -- the multi-seed numbers are `python -m tinyspp detect experiment`), classes "
        f"{', '.join(s['classes'])}; selective search ({cfg.proposal_mode}) gives "
        f"{s['proposals_per_image']:.0f} windows per test image with recall "
        f"{s['proposal_recall_0.5']:.3f} at IoU 0.5 and {s['proposal_recall_0.7']:.3f} at 0.7 "
        f"({s['selective_search_s_per_image']:.2f} s per image). Scales: 1-scale "
        f"{cfg.single}, multi-scale {cfg.multi} (shorter side, px).",
        "",
    ]
    multi = _multi_seed()
    if multi is None:
        lines += ["| method | mAP (VOC07 11-point), this run |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in s["map_11point"].items()]
    else:
        lines += [f"| method | mAP (VOC07 11-point), this run | multi-seed mean ± sd "
                  f"({len(multi['seeds'])} seeds, {multi['n_test']} test images) |",
                  "|---|---|---|"]
        lines += [f"| {k} | {v:.3f} | " + (_pm(multi["map"], k) if k in multi["map"] else "--")
                  + " |" for k, v in s["map_11point"].items()]
        lines += ["", f"The paper's detection claims, judged on the multi-seed run "
                      f"(`{multi['command']}`, results/detect.json):", ""]
        lines += [f"- {c['claim']}: **{c['verdict']}** ({c['statistic']})"
                  for c in multi["claims"]]
    lines += [
        "",
        f"Feature extraction for {s['timing_windows']} windows per image ({s['device']}, "
        "medians):",
        "",
        "| | resize/warp + conv (s) | pooling (s) | total (s) | R-CNN / this |",
        "|---|---|---|---|---|",
    ]
    for name, key in [("SPP-net 1-scale", "feature_s_spp_1scale"),
                      ("SPP-net multi-scale", "feature_s_spp_multiscale"),
                      ("R-CNN", "feature_s_rcnn")]:
        t = s[key]
        ratio = s["feature_s_rcnn"]["total"] / t["total"]
        lines.append(f"| {name} | {t['trunk']:.3f} | {t['pool']:.3f} | {t['total']:.3f} | "
                     f"{ratio:.1f}x |")
    lines += [
        "",
        f"Resizing/warping and the conv layers alone: R-CNN takes "
        f"{s['conv_speedup_1scale']:.0f}x as long as 1-scale SPP-net.",
        "",
        f"Total demo time {s['total_s']:.0f} s.",
        "",
        "![detections](detections.png)",
        "",
        "![precision-recall](pr_curves.png)",
        "",
    ]
    return "\n".join(lines)


def _multi_seed():
    """``results/detect.json`` when the repository has one (a checkout), else None."""
    from .publish import load_results

    try:
        return load_results("detect")
    except (FileNotFoundError, ValueError):
        return None


def draw_detections(ax, image, gt_boxes, detections, class_names, *, top: int = 3,
                    min_score: float = 0.0, fontsize: float = 8):
    """Draw an image, its ground truth (dashed white) and its top detections (green, labelled).

    Boxes are in the continuous coordinates of :mod:`tinyspp.detect.geometry` (drawn half a
    pixel left and up, where ``imshow`` puts pixel edges). Labels sit inside the top-left corner
    of their box; a label that would cover an earlier one moves down by one line, so overlapping
    boxes keep readable labels.
    """
    import matplotlib.pyplot as plt

    ax.imshow(image)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4) - 0.5
    boxes, scores, labels = detections
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) - 0.5
    for x0, y0, x1, y1 in gt_boxes:
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="white", ls="--",
                                   lw=1))
    H = image.shape[0]
    fig_h_in = ax.get_position().height * ax.figure.get_figheight()
    line = 1.35 * fontsize / 72 * H / max(fig_h_in, 1e-6)          # one text line, in px
    placed = []
    for (x0, y0, x1, y1), s, c in zip(boxes[:top], scores[:top], labels[:top]):
        if s < min_score:
            continue
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1.5))
        text = f"{class_names[c]} {s:.1f}"
        width = 0.6 * len(text) * line / 1.35
        y = max(y0, -0.5)
        while any(abs(y - py) < line and x0 < px + pw and px < x0 + width for px, py, pw in placed):
            y += line
        placed.append((x0, y, width))
        ax.text(x0, y, text, color="black", fontsize=fontsize, va="top",
                bbox=dict(fc="lime", pad=1, lw=0, alpha=0.85))
    ax.set_xticks([])
    ax.set_yticks([])


def _figures(out_dir, test, all_dets, curves, class_names):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = max(curves, key=lambda k: curves[k]["map"])
    n = min(4, len(test.images))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6))
    for ax, img, gt, det in zip(np.atleast_1d(axes), test.images, test.boxes, all_dets[best]):
        draw_detections(ax, img, gt, det, class_names)
    fig.suptitle(f"{best}: top-3 detections (green, SVM score >= 0) and ground truth (dashed)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "detections.png"), dpi=120)
    plt.close(fig)

    K = len(class_names)
    shown = [k for k in curves if "bbox" in k and "pre-trained" not in k and "mapping" not in k]
    fig, axes = plt.subplots(1, K, figsize=(3 * K, 3.8), sharey=True)
    for c, ax in enumerate(np.atleast_1d(axes)):
        for name in shown:
            cur = curves[name]["curves"][c]
            ax.plot(cur.recall, cur.precision, lw=1, label=name)
        ax.set_title(class_names[c], fontsize=9)
        ax.set_xlabel("recall (fraction of objects)", fontsize=8)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
    np.atleast_1d(axes)[0].set_ylabel("precision (fraction of detections)", fontsize=8)
    fig.legend(*np.atleast_1d(axes)[0].get_legend_handles_labels(), fontsize=8,
               loc="lower center", ncol=3)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.savefig(os.path.join(out_dir, "pr_curves.png"), dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------- the experiment
#: (id, method A, method B, what "A beats B" means, the paper's side)
COMPARISONS = (
    ("detect_vs_rcnn", METHODS[1], METHODS[9]),
    ("detect_multiscale", METHODS[5], METHODS[1]),
    ("detect_bbox", METHODS[5], METHODS[4]),
    ("detect_finetune", METHODS[7], METHODS[6]),
    ("mapping_offset", METHODS[2], METHODS[1]),
    ("mapping_centre", METHODS[3], METHODS[1]),
    ("finetune_trunk", METHODS[8], METHODS[7]),
)
#: SPP-net's mAP may trail R-CNN's by at most this for "comparable" (a non-inferiority margin)
COMPARABLE_MARGIN = 0.05


def _versions() -> dict:
    import matplotlib
    import scipy
    import skimage
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "scikit-image": skimage.__version__,
            "scikit-learn": sklearn.__version__, "matplotlib": matplotlib.__version__}


def _git_commit() -> str | None:
    """The checkout's HEAD commit (``+dirty`` when tracked files differ), or None outside git."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty.strip() else "")


def run_detection_experiment(seeds=(0, 1, 2), *, config: DetectionConfig = EXPERIMENT,
                             out: str | os.PathLike | None = "results/detect.json",
                             device: str = "cpu", threads: int | None = 1, n_boot: int = 1000,
                             command: str = "", log=print) -> dict:
    """Every method of :data:`METHODS` over several seeds on one shared test set.

    Each seed draws its own training set, proposals' ranking, pre-training and SVM negatives;
    the ``config.n_test`` test images (stream :data:`TEST_STREAM`) and their proposals are the
    same for every seed, so each comparison is paired: a bootstrap over test images
    (:func:`tinyspp.stats.paired_bootstrap`) of the seed-mean mAP difference.

    Returns the results dict (also written to ``out`` unless it is None).
    """
    from ..stats import binom_two_sided, mean_sd, paired_bootstrap
    from ..train import blas_threads

    seeds = [int(s) for s in seeds]
    if len(seeds) < 1:
        raise ValueError("run_detection_experiment: seeds must not be empty")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t_start = time.perf_counter()
    commit = _git_commit()
    cfg = config
    with blas_threads(threads):
        test = make_detection_set(cfg.n_test, seed=(TEST_STREAM, 1), size_range=cfg.size_range)
        K = len(test.class_names)
        gts = list(zip(test.boxes, test.labels))
        t0 = time.perf_counter()
        p_test = _proposals(test.images, cfg, TEST_STREAM)
        props = _proposal_stats(p_test, test.boxes, time.perf_counter() - t0)
        log(f"test proposals ({cfg.proposal_mode}): {props['proposals_per_image']:.0f} per image,"
            f" recall@0.5 {props['proposal_recall_0.5']:.3f}, "
            f"@0.7 {props['proposal_recall_0.7']:.3f}")
        tables = {m: [] for m in METHODS}
        per_seed = []
        for seed in seeds:
            t_seed = time.perf_counter()
            log(f"seed {seed}")
            train = make_detection_set(cfg.n_train, seed=(seed, 0), size_range=cfg.size_range)
            p_train = _proposals(train.images, cfg, seed)
            res = train_and_test(cfg, seed, train, test, p_train, p_test, device=device,
                                 log=log)
            maps = {}
            for m in METHODS:
                table = MatchTable(res["detections"][m], gts, K)
                tables[m].append(table)
                maps[m] = table.map(np.arange(cfg.n_test))
            per_seed.append({"seed": seed, "map": maps, "method_seconds": res["seconds"],
                             "pretrain_s": res["pretrain_s"], "timing": res["timing"],
                             "seconds": time.perf_counter() - t_seed})
            log(f"seed {seed} done in {per_seed[-1]['seconds']:.0f} s")
        summary = {}
        for m in METHODS:
            mu, sd = mean_sd([p["map"][m] for p in per_seed]) if len(seeds) > 1 else (
                per_seed[0]["map"][m], float("nan"))
            summary[m] = {"mean": mu, "sd": sd, "per_seed": [p["map"][m] for p in per_seed]}
        comparisons = {}
        for cid, a, b in COMPARISONS:
            def stat(idx, a=a, b=b):
                return float(np.mean([ta.map(idx) - tb.map(idx)
                                      for ta, tb in zip(tables[a], tables[b])]))
            boot = paired_bootstrap(stat, cfg.n_test, n_boot=n_boot, seed=0)
            diffs = [p["map"][a] - p["map"][b] for p in per_seed]
            comparisons[cid] = {"a": a, "b": b, "diff": boot.diff, "ci95": [boot.low, boot.high],
                                "p_value": boot.p_value, "per_seed_diff": diffs,
                                "n_boot": n_boot}
        speed = {k: [t[k][j]["total"] for t in (p["timing"] for p in per_seed)
                     for j in range(len(t[k]))] for k in ("spp_1scale", "spp_multiscale", "rcnn")}
        ratio_1 = np.array(speed["rcnn"]) / np.array(speed["spp_1scale"])
        ratio_m = np.array(speed["rcnn"]) / np.array(speed["spp_multiscale"])
        faster = int((ratio_m > 1).sum())
        speed_stats = {"ratio_1scale": ratio_1.tolist(), "ratio_multiscale": ratio_m.tolist(),
                       "median_ratio_1scale": float(np.median(ratio_1)),
                       "median_ratio_multiscale": float(np.median(ratio_m)),
                       "faster_images": faster, "timed_images": len(ratio_m),
                       "sign_test_p": binom_two_sided(faster, len(ratio_m)),
                       "timing_windows": cfg.timing_windows, "seconds": speed}
    results = {
        "command": command or "python -m tinyspp detect experiment",
        "seeds": seeds, "versions": _versions(), "threads": threads, "device": device,
        "started": started, "seconds": time.perf_counter() - t_start, "commit": commit,
        "config": asdict(cfg),
        "classes": list(test.class_names), "n_test": cfg.n_test, "n_train": cfg.n_train,
        "test_stream": TEST_STREAM, "proposals": props, "methods": list(METHODS),
        "map": summary, "comparisons": comparisons, "speed": speed_stats,
        "per_seed": [{k: v for k, v in p.items() if k != "timing"} for p in per_seed],
    }
    results["claims"] = claims(results)
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        os.replace(tmp, path)
        log(f"wrote {path}")
    return results


def _p_text(cmp) -> str:
    """``p = 0.013``, or ``p <= 0.002`` at the smallest p-value ``n_boot`` resamples can give."""
    floor = 2 / (cmp["n_boot"] + 1)
    if cmp["p_value"] <= floor * (1 + 1e-9):
        return f"p <= {floor:.2g}"
    return f"p = {cmp['p_value']:.2g}"


def _pm(summary, m) -> str:
    s = summary[m]
    return f"{s['mean']:.3f} ± {s['sd']:.3f}"


def claims(results: dict) -> list:
    """The detection claims, paper vs tinyspp, with verdicts computed from the statistics.

    Comparisons of mAP use the paired bootstrap's p-value with :func:`tinyspp.stats.verdict`
    (and whether every seed has the paper's sign); "comparable to R-CNN" is a non-inferiority
    claim: reproduced when the 95% interval of SPP-net minus R-CNN lies above
    ``-COMPARABLE_MARGIN``, partly when only the mean difference does. Speed uses a sign test
    over the timed images.
    """
    from ..stats import VERDICTS, verdict

    m, c, sp = results["map"], results["comparisons"], results["speed"]
    n_seeds, n_test = len(results["seeds"]), results["n_test"]

    def stat_text(cmp):
        return (f"paired bootstrap over {n_test} test images ({cmp['n_boot']} resamples) of the "
                f"{n_seeds}-seed mean mAP difference: {cmp['diff']:+.3f}, 95% CI "
                f"[{cmp['ci95'][0]:+.3f}, {cmp['ci95'][1]:+.3f}], {_p_text(cmp)}")

    def paired(cid, claim, paper):
        cmp = c[cid]
        agree = all(d > 0 for d in cmp["per_seed_diff"])
        return {"id": cid, "claim": claim, "paper": paper,
                "tinyspp": f"{_pm(m, cmp['a'])} vs {_pm(m, cmp['b'])} mAP ({n_seeds} seeds)",
                "statistic": stat_text(cmp),
                "verdict": verdict(cmp["diff"] > 0, cmp["p_value"], seeds_agree=agree)}

    rc = c["detect_vs_rcnn"]
    if rc["ci95"][0] > -COMPARABLE_MARGIN:
        v_rcnn = VERDICTS[0]
    elif rc["diff"] > -COMPARABLE_MARGIN:
        v_rcnn = VERDICTS[1]
    else:
        v_rcnn = VERDICTS[2]
    out = [{
        "id": "detect_vs_rcnn",
        "claim": "SPP-net's detection mAP is comparable to R-CNN's (same trunk, same head)",
        "paper": "59.2 vs 58.5 mAP on VOC 2007 (SPP-net 5-scale vs R-CNN, both ftfc7 + bbox)",
        "tinyspp": f"1-scale SPP-net {_pm(m, rc['a'])} vs R-CNN {_pm(m, rc['b'])} mAP "
                   f"(pool5 + bbox, {n_seeds} seeds)",
        "statistic": stat_text(rc) + f"; comparable = CI above -{COMPARABLE_MARGIN}",
        "verdict": v_rcnn,
    }, {
        "id": "detect_speed",
        "claim": "SPP-net computes window features much faster than R-CNN",
        "paper": "24-102x faster overall; conv features 0.053 s (1 scale) vs 14.37 s per image",
        "tinyspp": f"{sp['median_ratio_1scale']:.0f}x (1 scale), "
                   f"{sp['median_ratio_multiscale']:.0f}x (multi-scale) faster per image at "
                   f"{sp['timing_windows']} windows, CPU (medians)",
        "statistic": f"multi-scale SPP-net faster on {sp['faster_images']} of "
                     f"{sp['timed_images']} timed images; sign test p = {sp['sign_test_p']:.3g}",
        "verdict": verdict(sp["median_ratio_multiscale"] > 1, sp["sign_test_p"],
                           seeds_agree=sp["faster_images"] == sp["timed_images"]),
    }]
    out.append(paired("detect_multiscale", "Multi-scale feature extraction raises mAP over one "
                      "scale", "59.2 (5 scales) vs 58.0 (1 scale) mAP, ftfc7 + bbox"))
    out.append(paired("detect_bbox", "Bounding-box regression raises mAP",
                      "box regression on pool5 raises mAP (Sec. 4, after R-CNN)"))
    out.append(paired("detect_finetune", "Fine-tuning the fc layers raises mAP",
                      "fine-tuned fc7 beats pre-trained fc7 (Sec. 4)"))
    return out


def render_claims(results_dir: Path) -> str:
    """Markdown of the detection claims (publish block ``detect.claims``)."""
    from .publish import load_results

    r = load_results("detect", results_dir)
    lines = ["| claim | paper | tinyspp | statistic | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {c['claim']} | {c['paper']} | {c['tinyspp']} | {c['statistic']} | "
              f"{c['verdict']} |" for c in r["claims"]]
    return "\n".join(lines) + "\n"


def render_table(results_dir: Path) -> str:
    """Markdown of mAP per method and the comparisons (publish block ``detect.results``)."""
    from .publish import load_results

    r = load_results("detect", results_dir)
    p = r["proposals"]
    lines = [
        f"{len(r['seeds'])} seeds ({', '.join(map(str, r['seeds']))}), {r['n_train']} training "
        f"images per seed, {r['n_test']} shared test images; selective search "
        f"({r['config']['proposal_mode']}) gives {p['proposals_per_image']:.0f} windows per "
        f"test image, recall {p['proposal_recall_0.5']:.3f} at IoU 0.5 and "
        f"{p['proposal_recall_0.7']:.3f} at IoU 0.7. Run: `{r['command']}` "
        f"({r['seconds'] / 60:.0f} min, {r['threads']} BLAS thread).",
        "",
        "| method | mAP (VOC07 11-point), mean ± sd |",
        "|---|---|",
    ]
    lines += [f"| {name} | {_pm(r['map'], name)} |" for name in r["methods"]]
    lines += ["", "| comparison (A - B) | mean mAP difference | 95% CI | p |", "|---|---|---|---|"]
    for cmp in r["comparisons"].values():
        lines.append(f"| {cmp['a']} - {cmp['b']} | {cmp['diff']:+.3f} | "
                     f"[{cmp['ci95'][0]:+.3f}, {cmp['ci95'][1]:+.3f}] | "
                     f"{_p_text(cmp).removeprefix('p = ')} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- a VOC folder
def train_test_voc(root, *, train_split: str = "trainval", test_split: str = "test",
            config: DetectionConfig = QUICK, seed: int = 0, device: str = "cpu",
            out_dir: str | None = None, log=print) -> dict:
    """Train SPP-net (1-scale, pool5 + bbox) on one split of a VOC folder, test on another.

    Images are read lazily (:class:`tinyspp.detect.voc.VOCDataset`), one at a time. Training
    leaves difficult objects out (as R-CNN); evaluation keeps them and ignores detections on
    them, as the devkit does. The trunk is pre-trained on crops of the training split
    (:func:`pretrain_trunk`): a small pipeline check, not a VOC benchmark.

    Returns
    -------
    dict
        ``map`` (VOC07 11-point), ``ap`` per class, class names, image counts, seconds.
    """
    from ..detect.data import load_voc
    from ..detect.detector import SPPDetector
    from ..nn.models import split_trunk_head

    t0 = time.perf_counter()
    train = load_voc(str(root), train_split)
    test = load_voc(str(root), test_split, class_names=train.class_names)
    K = len(train.class_names)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"train_test_voc: splits {train_split!r} ({len(train)} images) and "
                         f"{test_split!r} ({len(test)} images) must both be non-empty")
    log(f"VOC folder {root}: {len(train)} {train_split} and {len(test)} {test_split} images, "
        f"classes {', '.join(train.class_names)}")
    p_train = _proposals(train.images, config, seed)
    net, mean, std = pretrain_trunk(train, p_train, config, seed=seed, device=device, log=log)
    trunk, _ = split_trunk_head(net)
    det = SPPDetector(trunk, K, levels=(4, 2, 1), scales=config.single, input_size=config.crop,
                      mean=mean, std=std, device=device, head_options=dict(seed=seed),
                      proposal_options=dict(mode=config.proposal_mode,
                                            max_boxes=config.max_boxes, seed=seed))
    det.fit(train.images, train.boxes, train.labels, proposals=p_train,
            difficult=train.difficult)
    dets = det.predict(test.images)
    res = evaluate_detections(dets, list(zip(test.boxes, test.labels, test.difficult)), K,
                              method="11point")
    summary = {"root": str(root), "train_split": train_split, "test_split": test_split,
               "classes": list(train.class_names), "n_train": len(train), "n_test": len(test),
               "map": float(res["map"]), "ap": [float(a) for a in res["ap"]],
               "seconds": time.perf_counter() - t0}
    log(f"mAP (VOC07 11-point, difficult ignored) {summary['map']:.3f} on {len(test)} images "
        f"({summary['seconds']:.0f} s)")
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "run.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


# ---------------------------------------------------------------------------- the commands
def _common(parser, out: str) -> None:
    from .options import add_run_options

    add_run_options(parser)
    parser.add_argument("--out", default=out, help=f"output (default {out})")


def add_demo_arguments(parser) -> None:
    """``python -m tinyspp detect demo [--quick] [--seed N] [--out DIR]``."""
    _common(parser, "runs/detect")
    parser.add_argument("--quick", action="store_true", help="a tiny configuration (seconds)")
    parser.add_argument("--seed", type=int, default=0)


def run_demo(args) -> int:
    run_detection_demo(args.out, quick=args.quick, seed=args.seed, device=args.device,
                       blas_threads=1 if args.threads is None else args.threads)
    print(f"wrote {args.out}/results.md, summary.json, detections.png, pr_curves.png")
    return 0


def add_experiment_arguments(parser) -> None:
    """``python -m tinyspp detect experiment [--seeds 0 1 2] [--quick] [--out FILE]``."""
    from .options import add_run_options

    add_run_options(parser)
    parser.add_argument("--out", default=None,
                        help="results file (default: the checkout's results/detect.json; with "
                             "--quick runs/detect-quick/detect.json, so a smoke test never "
                             "replaces the published results)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true",
                        help="the QUICK configuration (a smoke test; do not publish it)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")


def run_experiment(args) -> int:
    import sys

    cmd = "python -m tinyspp detect experiment " + " ".join(sys.argv[3:]) if len(
        sys.argv) > 2 and sys.argv[1:3] == ["detect", "experiment"] else ""
    from .publish import RESULTS

    threads = 1 if args.threads is None else args.threads
    out = args.out or ("runs/detect-quick/detect.json" if args.quick
                       else str(RESULTS / "detect.json"))
    run_detection_experiment(args.seeds, config=QUICK if args.quick else EXPERIMENT,
                             out=out, device=args.device, threads=threads,
                             n_boot=args.n_boot, command=cmd.strip())
    return 0


def add_voc_arguments(parser) -> None:
    """``python -m tinyspp detect run --data voc:PATH [--train-split S] [--test-split S]``."""
    _common(parser, "runs/detect-run")
    parser.add_argument("--data", required=True, help="voc:PATH, a VOC2007-layout folder")
    parser.add_argument("--train-split", default="trainval")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--full", action="store_true",
                        help="the FULL configuration (default QUICK: a pipeline check)")
    parser.add_argument("--seed", type=int, default=0)


def run_voc(args) -> int:
    from ..train import blas_threads

    kind, _, path = args.data.partition(":")
    if kind != "voc" or not path:
        print(f"python -m tinyspp detect run: --data must be voc:PATH, got {args.data!r}")
        return 2
    with blas_threads(1 if args.threads is None else args.threads):
        train_test_voc(path, train_split=args.train_split, test_split=args.test_split,
                config=FULL if args.full else QUICK, seed=args.seed, device=args.device,
                out_dir=args.out)
    print(f"wrote {args.out}/run.json")
    return 0
