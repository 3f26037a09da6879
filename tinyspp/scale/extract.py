"""Fill a feature store: one Dask task per image, resumable, retried when a worker dies.

Per image (the task :func:`ensure_image`, run on a worker)::

    read the image and its objects (lazily: only this one)
      -> selective search proposals                         (P, 4)
      -> windows = ground truth + proposals, their overlaps  make_record
      -> conv trunk ONCE per scale, region SPP per window    SPPFeatures.pool -> (R, C*M)
      -> write the image's arrays, then its completion marker (FeatureStore.write)

The task first looks at the image's marker: a complete image (digests checked when ``verify``)
is skipped, a partial or corrupt one recomputed. So running the same command again after a crash
finishes the job, and a task that Dask re-runs after its worker died rewrites the same bytes.
A worker holds one image's work at a time (the image, its feature maps, its pooled features) plus
the trunk, whatever the data-set size: the driver holds only the image ids.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import resource
import sys
import time

import numpy as np

from ..validate import check_choice, check_int
from . import sources
from .cluster import connect, run_tasks, use_worker_gpu
from .store import FeatureStore, StoreError, digest

TRUNK_FILE = "trunk.npz"
DEFAULT_FEATURES = dict(levels=(6, 3, 2, 1), mode="adaptive", scales=(128,), input_size=64,
                        mapping="paper", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
DEFAULT_PROPOSALS = dict(mode="fast", max_boxes=2000)


# ---------------------------------------------------------------------------- the trunk
def make_trunk(weights=None, widths=(16, 32, 64), seed: int = 0):
    """The conv trunk of ``small_spp_net``: from a checkpoint, or freshly initialised.

    Parameters
    ----------
    weights : path, optional
        A checkpoint of a ``small_spp_net`` (``python -m tinyspp train`` writes one); the conv
        widths are read from its ``0.w``/``3.w``/``6.w`` shapes. ``None``: random weights from
        ``seed`` (features for trying the pipeline; train a trunk for real detection).
    widths : (int, int, int)
        conv1-3 channels when ``weights`` is None.
    """
    from ..nn import small_spp_net
    from ..nn.checkpoint import load_checkpoint
    from ..nn.models import split_trunk_head

    state = None
    if weights is not None:
        state, _ = load_checkpoint(weights, "make_trunk")
        try:
            widths = tuple(int(state[f"{i}.w"].shape[0]) for i in (0, 3, 6))
        except KeyError:
            raise ValueError(f"make_trunk: {os.fspath(weights)!r} is not a small_spp_net "
                             f"checkpoint (no conv weights '0.w', '3.w', '6.w')") from None
    trunk, _ = split_trunk_head(small_spp_net(2, widths=widths, seed=seed))
    if state is not None:
        trunk.load_state_dict({k: v for k, v in state.items() if k in trunk.params()},
                              "make_trunk")
    return trunk, tuple(widths)


def trunk_digest(trunk) -> str:
    """One SHA-256 over the trunk's parameters (in name order): what the store config records."""
    return digest(np.concatenate([v.ravel().astype(np.float64)
                                  for _, v in sorted(trunk.state_dict().items())]))


def config_token(config) -> str:
    """Digest of a store's configuration: what a worker's cached state is keyed by."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


@functools.lru_cache(maxsize=4)
def _worker_state(store_path: str, token: str):
    """Per worker process, once per store and configuration: the store, its trunk and the
    feature extractor. ``token`` (:func:`config_token`) keeps a long-lived worker from using
    the trunk of an earlier store made at the same path."""
    from ..detect.features import SPPFeatures
    from ..nn import small_spp_net
    from ..nn.models import split_trunk_head

    store = FeatureStore(store_path)
    cfg = store.config
    if config_token(cfg) != token:
        raise StoreError(f"extract: the store at {store_path!r} changed while this run was "
                         f"using it (another extract with other arguments?)")
    trunk, _ = split_trunk_head(small_spp_net(2, widths=cfg["trunk"]["widths"], seed=0))
    trunk.load(os.path.join(store_path, TRUNK_FILE))
    if trunk_digest(trunk) != cfg["trunk"]["sha256"]:
        raise StoreError(f"extract: {os.path.join(store_path, TRUNK_FILE)!r} is not the trunk "
                         f"this store was made with (its digest differs); run the same extract "
                         f"command to rewrite it")
    device = cfg["device"]
    if device == "gpu":
        use_worker_gpu()
        trunk.to("gpu")
    f = cfg["features"]
    extractor = SPPFeatures(trunk, levels=tuple(f["levels"]), mode=f["mode"],
                            scales=tuple(f["scales"]), input_size=f["input_size"],
                            mapping=f["mapping"], mean=f["mean"], std=f["std"], device=device)
    return store, extractor


def _stored_trunk_digest(store_path: str, widths):
    """Digest of the trunk saved in a store, or ``None`` when it is missing or unreadable."""
    from ..nn import small_spp_net
    from ..nn.models import split_trunk_head

    trunk, _ = split_trunk_head(small_spp_net(2, widths=widths, seed=0))
    try:
        trunk.load(os.path.join(store_path, TRUNK_FILE))
    except (OSError, ValueError):
        return None
    return trunk_digest(trunk)


def warm_up(store_path: str, token: str) -> int:
    """Import the libraries and build the trunk of a store on this worker; returns the pid."""
    _worker_state(os.fspath(store_path), token)
    return os.getpid()


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10)


# ---------------------------------------------------------------------------- one image
def image_record(extractor, image, boxes, labels, n_classes, proposal_options, difficult=None):
    """The head's record of one image: proposals, windows, overlaps, pooled features.

    The same function serves the store's tasks and the in-process check, so both compute the
    features with the same calls in the same order.
    """
    from ..detect.head import make_record
    from ..detect.proposals import selective_search

    props = selective_search(image, **proposal_options)
    return make_record(boxes, labels, props, lambda w: extractor.pool(image, w), n_classes,
                       difficult=difficult)


def ensure_image(image_id: str, store_path: str, token: str, verify: bool = True) -> dict:
    """Make image ``image_id`` of the store complete (the Dask task); returns what it did.

    ``token`` is :func:`config_token` of the store's configuration, as the driver saw it.

    Returns
    -------
    dict
        ``image_id``, ``before`` (``"complete"``, ``"missing"``, ``"partial"``, ``"corrupt"``),
        and for a computed image ``seconds`` (wall), ``cpu_seconds`` (this process's CPU time:
        what the image costs on a core of its own), ``windows``, ``peak_rss_mb``, ``pid``.
    """
    store, extractor = _worker_state(os.fspath(store_path), token)
    if extractor.device == "gpu":
        use_worker_gpu()          # CuPy's current device is per thread: set it in this one
    before = store.status(image_id, verify=verify)
    if before == "complete":
        return {"image_id": image_id, "before": before}
    cfg = store.config
    t0, c0 = time.perf_counter(), time.process_time()
    image, boxes, labels, difficult = sources.load_item(cfg["data"], cfg["split"], image_id,
                                                        store.class_names)
    record = image_record(extractor, image, boxes, labels, len(store.class_names),
                          cfg["proposals"], difficult)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    info = {"seconds": round(seconds, 4), "cpu_seconds": round(cpu, 4),
            "windows": int(len(record.boxes)),
            "peak_rss_mb": round(_peak_rss_mb(), 1), "pid": os.getpid()}
    store.write(image_id, record, image.shape[:2], extra=info,
                arrays={"objects": boxes, "object_labels": labels, "object_difficult": difficult})
    return {"image_id": image_id, "before": before, **info}


# ---------------------------------------------------------------------------- the data set
def extract_store(data: str, out, *, split: str | None = "trainval", weights=None,
                  widths=(16, 32, 64), seed: int = 0, features=None, proposals=None,
                  dtype: str = "float32", device: str = "cpu", workers: int | None = None,
                  scheduler: str | None = None, verify: bool = True, max_images=None,
                  class_names=None, progress: bool = True, log=print) -> dict:
    """Compute (or finish computing) the feature store of a data set.

    Parameters
    ----------
    data : str
        ``"voc:PATH"``: a VOC-layout folder (see :mod:`tinyspp.scale.sources`).
    out : path
        The store. If it exists it must have been made with the same arguments; then only the
        images not marked complete (or failing their digests) are computed.
    split : str, optional
        ``ImageSets/Main/<split>.txt``; ``None``: every annotation.
    weights, widths, seed
        The trunk (:func:`make_trunk`).
    features : dict, optional
        :class:`tinyspp.detect.features.SPPFeatures` options over :data:`DEFAULT_FEATURES`.
    proposals : dict, optional
        :func:`tinyspp.detect.proposals.selective_search` options over
        :data:`DEFAULT_PROPOSALS`.
    dtype : {"float32", "float16"}
    device : {"cpu", "gpu"}
    workers, scheduler
        Where the tasks run (:func:`tinyspp.scale.cluster.connect`).
    verify : bool
        Re-read complete images and check their digests (``False``: trust the markers).
    max_images : int, optional
        Only the first images of the split.
    class_names : sequence of str, optional
        Fixes the label order (default: sorted names in the annotations).

    Returns
    -------
    dict
        ``images``, ``computed``, ``skipped``, ``recomputed`` (partial or corrupt before),
        ``failed`` (``{image_id: message}``), ``seconds`` (tasks only), ``images_per_second``,
        ``peak_rss_mb`` (largest over workers), ``store_bytes``.
    """
    func = "extract_store"
    check_choice(device, "device", func, ("cpu", "gpu"))
    if max_images is not None:
        check_int(max_images, "max_images", func)
    source = sources.parse_data(data, func)
    feats = {**DEFAULT_FEATURES, **(features or {})}
    unknown = set(feats) - set(DEFAULT_FEATURES)
    if unknown:
        raise ValueError(f"{func}: unknown feature options {sorted(unknown)}; known: "
                         f"{sorted(DEFAULT_FEATURES)}")
    props = {**DEFAULT_PROPOSALS, **(proposals or {})}
    ids, names = sources.index(source, split, max_images, class_names)
    if not ids:
        raise ValueError(f"{func}: {data!r} split {split!r} has no images")
    trunk, widths = make_trunk(weights, widths, seed)
    config = {"data": source, "split": split, "device": device, "proposals": props,
              "features": feats, "trunk": {"widths": list(widths), "sha256": trunk_digest(trunk)}}
    store = FeatureStore.create(out, image_ids=ids, class_names=names, config=config,
                                dtype=dtype)
    if _stored_trunk_digest(store.path, widths) != config["trunk"]["sha256"]:
        trunk.save(os.path.join(store.path, TRUNK_FILE))     # atomic (missing or damaged)
    token = config_token(store.config)
    todo = ids if verify else [i for i in ids if store.status(i, verify=False) != "complete"]
    summary = {"images": len(ids), "computed": 0, "skipped": len(ids) - len(todo),
               "recomputed": 0, "failed": {}, "seconds": 0.0, "peak_rss_mb": 0.0,
               "workers": None}
    t0 = time.perf_counter()
    with connect(workers, scheduler, device, log=log) as client:
        if client is not None:
            summary["workers"] = len(client.scheduler_info()["workers"])
            client.run(warm_up, store.path, token)   # imports and trunk everywhere, untimed
            t0 = time.perf_counter()      # the tasks' time, without starting the cluster
        for image_id, res in run_tasks(client, ensure_image, todo, store.path, token, verify,
                                       progress=progress, desc="extract", key="extract"):
            if isinstance(res, Exception):
                summary["failed"][image_id] = f"{type(res).__name__}: {res}"
                continue
            if res["before"] == "complete":
                summary["skipped"] += 1
                continue
            summary["computed"] += 1
            summary["recomputed"] += res["before"] in ("partial", "corrupt")
            summary["peak_rss_mb"] = max(summary["peak_rss_mb"], res["peak_rss_mb"])
        summary["seconds"] = round(time.perf_counter() - t0, 3)
    summary["images_per_second"] = (round(summary["computed"] / summary["seconds"], 3)
                                    if summary["computed"] else None)
    summary["store_bytes"] = store.nbytes()
    for image_id, message in summary["failed"].items():
        log(f"extract: image {image_id} failed ({message}); run the same command again to retry")
    return summary


def open_complete_store(path, func: str) -> FeatureStore:
    """The store at ``path``, refusing (with the ids) one that has incomplete images."""
    store = FeatureStore(path)
    missing = store.incomplete(verify=False)
    if missing:
        raise StoreError(f"{func}: {len(missing)} of {len(store.image_ids)} images of "
                         f"{store.path!r} are not complete (first: {missing[:3]}); finish them "
                         f"with the same `detect extract` command")
    return store
