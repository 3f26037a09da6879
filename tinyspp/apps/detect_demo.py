"""The detection demo: SPP-net vs R-CNN on the synthetic detection set, end to end.

:func:`run_detection_demo` (also ``python -m tinyspp detect --demo``):

1. draws the synthetic train/test sets and their selective-search proposals (recall at IoU 0.5);
2. pre-trains the small SPP-net (``tinyspp.nn.small_spp_net``) as a classifier of object /
   background crops of the training images -- our stand-in for ImageNet pre-training;
3. trains and evaluates detectors that share that trunk: SPP-net at 1 scale and at several
   scales, with and without box regression, with the fc layers fine-tuned on cached pooled
   features (the paper) or trunk + fc fine-tuned through ``roi_spp_backward`` (Fast R-CNN
   style), and the R-CNN baseline;
4. times feature extraction per image at 2,000 windows for SPP-net and R-CNN;
5. writes ``results.md``, ``summary.json``, ``detections.png`` and ``pr_curves.png`` to ``out_dir``.
"""

from __future__ import annotations

import copy
import json
import os
import time

import numpy as np

from ..detect.data import train_test_sets
from ..detect.detector import SPPDetector
from ..detect.evaluate import evaluate_detections
from ..detect.geometry import iou
from ..detect.proposals import proposal_recall, selective_search

FULL = dict(n_train=48, n_test=40, size_range=(96, 144), widths=(8, 16, 32), hidden=64,
            crop=24, pretrain_epochs=12, single=(72,), multi=(48, 72, 108), ft_iters=1000,
            trunk_iters=1000, max_boxes=2000, timing_windows=2000, rcnn_timing_repeats=1)
QUICK = dict(n_train=24, n_test=10, size_range=(64, 96), widths=(8, 16, 16), hidden=32,
             crop=24, pretrain_epochs=15, single=(56,), multi=(40, 56, 80), ft_iters=40,
             trunk_iters=10, max_boxes=150, timing_windows=150, rcnn_timing_repeats=1,
             ss_ks=(50, 150), ss_spaces=("hsv",))


def crop_set(ds, proposals, size: int, rng, jitters: int = 6, backgrounds: int = 6):
    """Warped object / background crops of detection images, for pre-training a classifier.

    Every ground-truth box gives ``jitters`` crops (corners moved by up to 10% of its size),
    labelled ``class + 1``; up to ``backgrounds`` proposals per image with IoU < 0.3 with every
    object give crops labelled 0 (background).

    Returns
    -------
    x : ndarray of shape (N, 3, size, size), float32 in [0, 1]
    y : ndarray of shape (N,), int64
    """
    from ..data.transforms import resize

    crops, labels = [], []

    def add(img, box, label):
        H, W = img.shape[:2]
        xa, ya = int(np.clip(np.floor(box[0]), 0, W - 2)), int(np.clip(np.floor(box[1]), 0, H - 2))
        xb = int(np.clip(np.ceil(box[2]), xa + 2, W))
        yb = int(np.clip(np.ceil(box[3]), ya + 2, H))
        patch = np.ascontiguousarray(img[ya:yb, xa:xb].transpose(2, 0, 1))   # (3, h, w)
        crops.append(resize(patch, size, size))
        labels.append(label)

    for img, boxes, labs, props in zip(ds.images, ds.boxes, ds.labels, proposals):
        for box, lab in zip(boxes, labs):
            w, h = box[2] - box[0], box[3] - box[1]
            for _ in range(jitters):
                add(img, box + rng.uniform(-0.1, 0.1, 4) * [w, h, w, h], int(lab) + 1)
        far = props[iou(props, boxes).max(axis=1) < 0.3] if len(boxes) else props
        for k in rng.choice(len(far), min(backgrounds, len(far)), replace=False):
            add(img, far[k], 0)
    return np.stack(crops).astype(np.float32), np.array(labels, dtype=np.int64)


def pretrain_trunk(train, proposals, cfg, seed=0, device="cpu", log=print):
    """Pre-train ``small_spp_net(K + 1)`` to classify object / background crops.

    Our stand-in for the paper's ImageNet pre-training: a short SGD loop (momentum 0.9, weight
    decay 5e-4, random horizontal flips) over pre-warped crops (:func:`crop_set`).

    Returns
    -------
    net : Sequential
    mean, std : ndarray of shape (3,), the normalisation the net was trained with
    """
    from ..backend import to_device
    from ..nn import SGD, small_spp_net
    from ..ops import softmax_cross_entropy

    rng = np.random.default_rng([seed, 7])
    x, y = crop_set(train, proposals, cfg["crop"], rng)
    mean, std = x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3)) + 1e-6
    x = (x - mean[:, None, None]) / std[:, None, None]
    net = small_spp_net(len(train.class_names) + 1, levels=(4, 2, 1), widths=cfg["widths"],
                        hidden=cfg["hidden"], seed=seed)
    net.to(device)
    opt = SGD(net, lr=0.02, momentum=0.9, weight_decay=5e-4)
    net.train()
    for epoch in range(cfg["pretrain_epochs"]):
        order, losses = rng.permutation(len(x)), []
        for start in range(0, len(x), 32):
            idx = order[start:start + 32]
            xb = x[idx]
            flip = rng.random(len(idx)) < 0.5
            xb[flip] = xb[flip][..., ::-1]                        # horizontal flips
            loss, dlogits = softmax_cross_entropy(net.forward(to_device(xb, device)),
                                                  to_device(y[idx], device))
            net.backward(dlogits, input_grad=False)
            opt.step()
            losses.append(loss)
        log(f"pre-training epoch {epoch + 1}: loss {np.mean(losses):.3f} on {len(x)} crops")
    net.eval()
    return net, mean, std


def _detector(net, mean, std, n_classes, scales, crop, device, cls=SPPDetector, **kw):
    from ..nn.models import split_trunk_head

    trunk, head = split_trunk_head(net)
    fc = head[1:-1]          # after the pyramid pooling: fc, ReLU, Dropout (the last fc is dropped)
    return cls(trunk, n_classes, head=fc, levels=(4, 2, 1), scales=scales, input_size=crop,
               mean=mean, std=std, device=device, **kw)


def _evaluate(det, test, proposals):
    dets = det.predict(test.images, proposals)
    res = evaluate_detections(dets, list(zip(test.boxes, test.labels)),
                              len(test.class_names), method="11point")
    return res, dets


def _windows_for_timing(image, proposals, n, rng):
    """``n`` windows: the image's proposals topped up with random boxes."""
    H, W = image.shape[:2]
    k = max(0, n - len(proposals))
    x0, y0 = rng.uniform(0, W - 8, k), rng.uniform(0, H - 8, k)
    extra = np.stack([x0, y0, x0 + rng.uniform(8, W - x0), y0 + rng.uniform(8, H - y0)], axis=1)
    return np.concatenate([proposals, extra])[:n]


def run_detection_demo(out_dir: str = "runs/detect", *, quick: bool = False, seed: int = 0,
                       device: str = "cpu", log=print, blas_threads: int | None = 1):
    """Train and evaluate SPP-net and R-CNN detectors on the synthetic set.

    Parameters
    ----------
    out_dir : str
        Where results.md, summary.json and the figures go (created).
    quick : bool
        A tiny configuration for tests (seconds instead of minutes).
    seed : int
    device : {"cpu", "gpu"}
    log : callable
        Progress messages (``print`` by default).
    blas_threads : int or None
        Threads for NumPy's BLAS during the demo (``threadpoolctl``); None leaves the default.
        The GEMMs here are small: on 2 busy cores one thread ran the quick demo 5x faster
        (20 s instead of 98 s wall) than the default two, with identical results.

    Returns
    -------
    summary : dict
        ``map`` per method, proposal recall, timings and the SPP-net / R-CNN speed ratio.
    markdown : str
        The report written to ``out_dir/results.md``.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=blas_threads):
        return _run_demo(out_dir, quick, seed, device, log)


def _run_demo(out_dir, quick, seed, device, log):
    from ..detect.finetune import finetune_fc, finetune_trunk
    from ..detect.rcnn import RCNNDetector

    cfg = QUICK if quick else FULL
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.perf_counter()
    train, test = train_test_sets(cfg["n_train"], cfg["n_test"], seed=seed,
                                  size_range=cfg["size_range"])
    K = len(train.class_names)
    t0 = time.perf_counter()
    ss = dict(max_boxes=cfg["max_boxes"], seed=seed, ks=cfg.get("ss_ks", (50, 100, 200)),
              colour_spaces=cfg.get("ss_spaces", ("hsv", "lab")))
    p_train = [selective_search(img, **ss) for img in train.images]
    p_test = [selective_search(img, **ss) for img in test.images]
    t_ss = (time.perf_counter() - t0) / (len(p_train) + len(p_test))
    recall = proposal_recall(p_test, test.boxes, 0.5)
    log(f"proposals: {np.mean([len(p) for p in p_test]):.0f} per test image, "
        f"recall@0.5 {recall:.3f}, {t_ss:.2f} s/image")

    net, mean, std = pretrain_trunk(train, p_train, cfg, seed=seed, device=device, log=log)
    results, curves, all_dets = {}, {}, {}
    gt = (train.images, train.boxes, train.labels)

    def run(name, det, cache=None):
        t = time.perf_counter()
        if cache is None:
            cache = det.prepare(*gt, proposals=p_train)
        det.fit(cache=cache)
        res, dets = _evaluate(det, test, p_test)
        results[name] = res["map"]
        curves[name], all_dets[name] = res, dets
        log(f"{name:<50s} mAP {res['map']:.3f}   ({time.perf_counter() - t:.1f} s)")
        return cache

    common = dict(n_classes=K, crop=cfg["crop"], device=device)
    d1 = _detector(net, mean, std, scales=cfg["single"], bbox_regression=False, **common)
    c1 = run("SPP-net 1-scale, pool", d1)
    d1.bbox_regression = True
    run("SPP-net 1-scale, pool, bbox", d1, c1)
    dc = _detector(net, mean, std, scales=cfg["single"], mapping="center", **common)
    run("SPP-net 1-scale, pool, bbox, centre mapping", dc)
    dm = _detector(net, mean, std, scales=cfg["multi"], bbox_regression=False, **common)
    cm = run("SPP-net multi-scale, pool", dm)
    dm.bbox_regression = True
    run("SPP-net multi-scale, pool, bbox", dm, cm)

    dpre = _detector(net, mean, std, scales=cfg["multi"], features="fc", **common)
    run("SPP-net multi-scale, fc (pre-trained), bbox", dpre, cm)

    # fine-tune fc on cached pooled features (the paper): a copy of the net, trunk untouched
    dfc = _detector(copy.deepcopy(net), mean, std, scales=cfg["multi"], features="fc", **common)
    finetune_fc(dfc, cm, iterations=cfg["ft_iters"], seed=seed)
    run("SPP-net multi-scale, ftfc, bbox", dfc, cm)

    # then trunk + fc through roi_spp_backward (Fast R-CNN style), warm-started from ftfc
    dtr = copy.deepcopy(dfc)
    finetune_trunk(dtr, train.images, cm, iterations=cfg["trunk_iters"], lr=0.003, seed=seed)
    ctr = run("SPP-net multi-scale, ftfc + ft trunk, bbox", dtr)
    dtr.features = "pool"
    run("SPP-net multi-scale, ftfc + ft trunk, pool, bbox", dtr, ctr)

    rc = _detector(net, mean, std, scales=cfg["single"], cls=RCNNDetector, **common)
    run("R-CNN (warped windows), pool, bbox", rc)

    # feature-extraction time per image at the same number of windows
    rng = np.random.default_rng(seed)
    img = test.images[0]
    windows = _windows_for_timing(img, p_test[0], cfg["timing_windows"], rng)
    t_spp1 = _median_pool(d1, img, windows, repeats=7)  # ~10 ms each: cheap to steady
    t_sppm = _median_pool(dm, img, windows, repeats=7)
    t_rcnn = _median_pool(rc, img, windows, repeats=cfg["rcnn_timing_repeats"])
    summary = {
        "quick": quick, "seed": seed, "device": device, "classes": list(train.class_names),
        "n_train": cfg["n_train"], "n_test": cfg["n_test"],
        "proposals_per_image": float(np.mean([len(p) for p in p_test])),
        "proposal_recall_0.5": recall, "selective_search_s_per_image": t_ss,
        "map_11point": results,
        "ap_per_class": {k: [float(a) for a in v["ap"]] for k, v in curves.items()},
        "timing_windows": len(windows), "image_shape": list(img.shape[:2]),
        "feature_s_spp_1scale": t_spp1, "feature_s_spp_multiscale": t_sppm,
        "feature_s_rcnn": t_rcnn,
        "speedup_1scale": t_rcnn["total"] / t_spp1["total"],
        "speedup_multiscale": t_rcnn["total"] / t_sppm["total"],
        "conv_speedup_1scale": t_rcnn["trunk"] / t_spp1["trunk"],
        "total_s": time.perf_counter() - t_start,
    }
    md = _markdown(summary, cfg)
    _figures(out_dir, test, all_dets, curves, train.class_names)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    log(md)
    return summary, md


def _median_pool(det, image, windows, repeats=3) -> dict:
    """Median seconds of ``det.pool(image, windows)`` (one image's feature extraction), with its
    two parts from ``det.timings``: ``trunk`` (resizing or warping + conv layers) and ``pool``."""
    total = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        det.pool(image, windows)
        total.append(time.perf_counter() - t0)
    return {"total": float(np.median(total)),
            "trunk": float(np.median(det.timings["trunk"][-repeats:])),
            "pool": float(np.median(det.timings["pool"][-repeats:]))}


def _markdown(s, cfg) -> str:
    lines = [
        "# SPP-net detection on the synthetic set",
        "",
        f"{s['n_train']} training and {s['n_test']} test images, classes "
        f"{', '.join(s['classes'])}; selective search gives {s['proposals_per_image']:.0f} "
        f"windows per test image with recall {s['proposal_recall_0.5']:.3f} at IoU 0.5 "
        f"({s['selective_search_s_per_image']:.2f} s per image). Scales: 1-scale "
        f"{cfg['single']}, multi-scale {cfg['multi']} (shorter side, px).",
        "",
        "| method | mAP (VOC07 11-point) |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.3f} |" for k, v in s["map_11point"].items()]
    lines += [
        "",
        f"Feature extraction for {s['timing_windows']} windows on one "
        f"{s['image_shape'][0]}x{s['image_shape'][1]} test image ({s['device']}, medians):",
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


def _figures(out_dir, test, all_dets, curves, class_names):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = max(curves, key=lambda k: curves[k]["map"])
    n = min(4, len(test.images))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4))
    for ax, img, gt, det in zip(np.atleast_1d(axes), test.images, test.boxes, all_dets[best]):
        ax.imshow(img)
        for x0, y0, x1, y1 in gt:
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="white",
                                       ls="--", lw=1))
        boxes, scores, labels = det
        for (x0, y0, x1, y1), s, c in zip(boxes[:5], scores[:5], labels[:5]):
            if s < 0:
                continue
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1.5))
            ax.text(x0, y0, f"{class_names[c]} {s:.1f}", color="black", fontsize=7,
                    bbox=dict(fc="lime", pad=1, lw=0))
        ax.axis("off")
    fig.suptitle(f"{best}: detections (green, score >= 0) and ground truth (dashed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "detections.png"), dpi=90)
    plt.close(fig)

    K = len(class_names)
    shown = [k for k in curves if "bbox" in k and "pre-trained" not in k]
    fig, axes = plt.subplots(1, K, figsize=(3 * K, 3.6), sharey=True)
    for c, ax in enumerate(np.atleast_1d(axes)):
        for name in shown:
            res = curves[name]
            cur = res["curves"][c]
            ax.plot(cur.recall, cur.precision, lw=1, label=name)
        ax.set_title(class_names[c], fontsize=9)
        ax.set_xlabel("recall")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
    np.atleast_1d(axes)[0].set_ylabel("precision")
    fig.legend(*np.atleast_1d(axes)[0].get_legend_handles_labels(), fontsize=7,
               loc="lower center", ncol=3)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.savefig(os.path.join(out_dir, "pr_curves.png"), dpi=90)
    plt.close(fig)
