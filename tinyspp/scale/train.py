"""Train the detection head from a feature store, image by image, and save it without pickle.

:func:`train_from_store` hands :class:`tinyspp.detect.head.DetectionHead` the store's re-iterable
of records (:meth:`FeatureStore.records`): each pass of hard-negative mining reads the store
again, one image at a time, so memory holds the positives, the box-regression rows and the
current negatives of every class -- never all windows of all images. It is the same ``fit`` the
in-memory detector runs, so on the same records it gives the same SVMs.

The trained head is saved as a ``.npz`` (:func:`save_head` / :func:`load_head`): the SVM weights,
the box regressors' coefficients and the head's options, all plain arrays and JSON.

Examples
--------
>>> import tempfile, numpy as np
>>> from tinyspp.detect.head import DetectionHead, make_record
>>> rng = np.random.default_rng(0)
>>> recs = [make_record(np.array([[2., 2, 10, 10]]), np.array([0]),
...                     np.array([[20., 20, 30, 30], [3, 3, 11, 11]]),
...                     rng.random((3, 5)).astype(np.float32), n_classes=1) for _ in range(3)]
>>> head = DetectionHead(1, initial_negatives=10).fit(recs)
>>> tmp = tempfile.TemporaryDirectory()
>>> path = tmp.name + "/head.npz"
>>> save_head(head, path)
>>> bool((load_head(path).score(recs[0].features) == head.score(recs[0].features)).all())
True
>>> tmp.cleanup()
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from .extract import open_complete_store

HEAD_FORMAT = "tinyspp-detection-head-1"
#: DetectionHead options that a saved head records (the constructor's keyword arguments).
HEAD_OPTIONS = ("svm_C", "neg_iou", "neg_overlap", "mining_rounds", "initial_negatives",
                "hard_threshold", "bbox_regression", "reg_iou", "ridge_alpha", "nms_threshold",
                "score_threshold", "max_per_image", "seed")


def save_head(head, path, extra: dict | None = None) -> None:
    """Write a fitted pool5 ``DetectionHead`` to ``path`` (``.npz``, atomically).

    ``extra``: JSON-serialisable values stored alongside (the store it came from, timings).
    """
    from ..nn.checkpoint import save_npz_atomic

    func = "save_head"
    if head.svm_w is None:
        raise ValueError(f"{func}: the head is not fitted (call fit first)")
    if head.features != "pool":
        raise ValueError(f"{func}: only heads on pool5 features (features='pool') are saved; "
                         f"this one has features={head.features!r}")
    meta = {"n_classes": head.n_classes, "options": {k: getattr(head, k) for k in HEAD_OPTIONS},
            "extra": extra or {}}
    arrays = {"format": np.array(HEAD_FORMAT), "svm_w": head.svm_w, "svm_b": head.svm_b,
              "meta": np.array(json.dumps(meta))}
    for c, reg in enumerate(head.regressors or []):
        if reg is not None:
            arrays[f"reg/{c}/coef"] = reg.coef_
            arrays[f"reg/{c}/intercept"] = np.asarray(reg.intercept_)
    arrays["has_regressors"] = np.array(head.regressors is not None)
    save_npz_atomic(path, arrays)


def load_head(path):
    """The ``DetectionHead`` saved by :func:`save_head` (its ``extra`` in ``head.saved_extra``)."""
    from sklearn.linear_model import Ridge

    from ..detect.head import DetectionHead
    from ..nn.checkpoint import load_npz

    func = "load_head"
    data = load_npz(path, func)
    if str(data.get("format", "")) != HEAD_FORMAT:
        raise ValueError(f"{func}: {os.fspath(path)!r} is not a saved detection head (written "
                         f"by `python -m tinyspp detect train`)")
    meta = json.loads(str(data["meta"]))
    head = DetectionHead(meta["n_classes"], **meta["options"])
    head.svm_w, head.svm_b = data["svm_w"], data["svm_b"]
    head.regressors = None
    if bool(data["has_regressors"]):
        head.regressors = []
        for c in range(head.n_classes):
            if f"reg/{c}/coef" not in data:
                head.regressors.append(None)
                continue
            reg = Ridge(alpha=head.ridge_alpha)           # predict = X @ coef_.T + intercept_
            reg.coef_, reg.intercept_ = data[f"reg/{c}/coef"], data[f"reg/{c}/intercept"]
            reg.n_features_in_ = reg.coef_.shape[1]
            head.regressors.append(reg)
    head.saved_extra = meta["extra"]
    return head


def train_from_store(store_path, out=None, *, verify: bool = True, log=print, **options):
    """Fit a ``DetectionHead`` on every image of a complete store; save it to ``out``.

    Parameters
    ----------
    store_path : path
        A store made by ``detect extract`` (every image complete).
    out : path, optional
        Where to save the head (default ``STORE/head.npz``).
    verify : bool
        Check every image's digests as it is read (each mining pass).
    **options
        ``DetectionHead`` options (:data:`HEAD_OPTIONS`).

    Returns
    -------
    head : DetectionHead
    info : dict
        ``seconds``, ``images``, ``positives``/``negatives`` per class, ``head`` (its path).
    """
    from ..detect.head import DetectionHead

    func = "train_from_store"
    unknown = set(options) - set(HEAD_OPTIONS)
    if unknown:
        raise ValueError(f"{func}: unknown head options {sorted(unknown)}; known: "
                         f"{list(HEAD_OPTIONS)}")
    store = open_complete_store(store_path, func)
    out = os.fspath(out) if out is not None else os.path.join(store.path, "head.npz")
    t0 = time.perf_counter()
    head = DetectionHead(len(store.class_names), **options).fit(store.records(verify))
    seconds = time.perf_counter() - t0
    info = {"seconds": round(seconds, 3), "images": len(store.image_ids),
            "store": os.path.abspath(store.path), **head.fit_stats}
    save_head(head, out, extra={"class_names": list(store.class_names), **info})
    log(f"trained the head on {len(store.image_ids)} images in {seconds:.1f} s; saved {out}")
    return head, {**info, "head": out}
