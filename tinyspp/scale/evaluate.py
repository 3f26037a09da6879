"""VOC average precision of a trained head on a test store: detection as one Dask task per image.

Each task reads one image's record, keeps its proposal windows (the ground-truth rows are there
for training only), and runs :meth:`DetectionHead.detect_windows`: scores, box regression, NMS.
The driver receives only the detections (at most ``max_per_image`` per image) and the ground
truth, and computes the precision/recall curves and AP with
:func:`tinyspp.detect.evaluate.evaluate_detections`.
"""

from __future__ import annotations

import time

import numpy as np

from ..validate import check_choice
from .cluster import connect, run_tasks
from .extract import open_complete_store
from .store import FeatureStore


def detect_image(image_id: str, store_path: str, head, verify: bool = True):
    """Detections and ground truth of one stored image (the Dask task).

    Returns
    -------
    detections : (boxes (D, 4), scores (D,), labels (D,))
    ground_truth : (boxes (G, 4), labels (G,), difficult (G,))
        Every object, difficult ones too (VOC evaluation ignores detections of those).
    """
    stored = FeatureStore(store_path).read(image_id, verify)
    rec, obj = stored.record, stored.arrays
    props = np.flatnonzero(rec.labels == -1)
    dets = head.detect_windows(rec.boxes[props], rec.features[props], stored.image_shape)
    return dets, (obj["objects"], obj["object_labels"], obj["object_difficult"])


def evaluate_store(store_path, head, *, workers: int | None = None, scheduler: str | None = None,
                   iou_threshold: float = 0.5, method: str = "11point", verify: bool = True,
                   progress: bool = True, log=print) -> dict:
    """Per-class AP and mAP of ``head`` on every image of a complete store.

    Parameters
    ----------
    store_path : path
        A test store made by ``detect extract`` (e.g. ``--split test``).
    head : DetectionHead or path
        A fitted head, or a file written by :func:`tinyspp.scale.train.save_head`.
    workers, scheduler
        Where the detection tasks run (:func:`tinyspp.scale.cluster.connect`).
    iou_threshold : float
    method : {"11point", "area"}
        VOC 2007's 11-point AP, or the area under the envelope (VOC 2010+).

    Returns
    -------
    dict
        ``ap`` (list, nan for a class without objects), ``map``, ``class_names``, ``images``,
        ``seconds`` (the tasks), ``detections`` (list per image, store order).
    """
    from ..detect.evaluate import AP_METHODS, evaluate_detections
    from .train import load_head

    func = "evaluate_store"
    check_choice(method, "method", func, AP_METHODS)
    store = open_complete_store(store_path, func)
    if not hasattr(head, "detect_windows"):
        head = load_head(head)
    trained_on = getattr(head, "saved_extra", {}).get("class_names")
    if trained_on is not None and tuple(trained_on) != store.class_names:
        raise ValueError(f"{func}: the head was trained on classes {tuple(trained_on)}, the "
                         f"store has {store.class_names}; extract both with the same --classes")
    if head.n_classes != len(store.class_names):
        raise ValueError(f"{func}: the head has {head.n_classes} classes, the store "
                         f"{len(store.class_names)} ({', '.join(store.class_names)})")
    results = {}
    with connect(workers, scheduler, log=log) as client:
        t0 = time.perf_counter()
        arg = head if client is None else client.scatter(head, broadcast=True)
        for image_id, res in run_tasks(client, detect_image, store.image_ids, store.path, arg,
                                       verify, progress=progress, desc="evaluate", key="detect"):
            if isinstance(res, Exception):
                raise RuntimeError(f"{func}: image {image_id!r} failed: "
                                   f"{type(res).__name__}: {res}") from res
            results[image_id] = res
        seconds = time.perf_counter() - t0
    dets = [results[i][0] for i in store.image_ids]
    gts = [results[i][1] for i in store.image_ids]
    res = evaluate_detections(dets, gts, len(store.class_names), iou_threshold, method)
    return {"ap": [float(a) for a in res["ap"]], "map": res["map"],
            "class_names": list(store.class_names), "images": len(store.image_ids),
            "seconds": round(seconds, 3), "detections": dets}
