"""The feature store: the pooled features of every window of a data set, one Zarr group per image.

Layout (a Zarr v3 group on disk)::

    STORE/
      zarr.json            attributes: format, class_names, image_ids, dtype, config (what made
                           the features: data, split, trunk, scales, levels, proposals, ...)
      trunk.npz            the trunk's weights (tinyspp checkpoint), read by every worker
      images/<id>/         one group per image, written by one task: the fields of the
                           detection head's ImageRecord (tinyspp.detect.head), one array each
        boxes     (R, 4)  float64   ground-truth boxes first, then the proposals (the windows)
        features  (R, D)  float32 or float16, chunks of up to 1,024 rows: region SPP of a window
        labels    (R,)    int64     class of a ground-truth row, -1 for a proposal
        overlap   (R, K)  float64   IoU with the best-overlapping object of each class (0: none)
        match     (R, K)  int64     index (into gt_boxes) of that object
        gt_boxes  (G, 4)  float64   the image's objects, difficult ones left out (training)
        objects, object_labels, object_difficult   every object (difficult ones too), for AP
        attributes: "complete" = {"fields": [...], "arrays": [...], "sha256": {name: digest},
                                  "image_shape": [H, W], "seconds": ..., ...}

The ``complete`` attribute is written LAST, after every array, and holds a SHA-256 digest of each
array's bytes. An image counts as done only when the marker is there and (``verify=True``) every
array read back hashes to its digest: a task killed mid-write leaves no marker (``"partial"``), a
chunk damaged or lost later (a missing chunk reads as zeros) fails its digest (``"corrupt"``);
either way the image is recomputed by the next ``extract`` and refused by readers.

Examples
--------
>>> import tempfile, numpy as np
>>> from tinyspp.detect.head import make_record
>>> tmp = tempfile.TemporaryDirectory()
>>> path = tmp.name + "/store"
>>> store = FeatureStore.create(path, image_ids=["a"], class_names=["cat"], config={"v": 1})
>>> store.status("a")
'missing'
>>> rec = make_record(np.array([[0., 0, 4, 4]]), np.array([0]), np.array([[1., 1, 5, 5]]),
...                   np.ones((2, 3), np.float32), n_classes=1)
>>> store.write("a", rec, image_shape=(8, 8))
>>> store.status("a"), store.read("a").record.features.tolist()
('complete', [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
>>> tmp.cleanup()
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import NamedTuple

import numpy as np

FORMAT = "tinyspp-feature-store-1"
DTYPES = ("float32", "float16")
STATUSES = ("complete", "missing", "partial", "corrupt")
FEATURE_CHUNK_ROWS = 1024
_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class StoreError(RuntimeError):
    """A store that cannot be used as asked (incomplete image, other configuration, not a store)."""


def record_type():
    """The per-image record the detection head trains on (``tinyspp.detect.head.ImageRecord``)."""
    from ..detect.head import ImageRecord

    return ImageRecord


class StoredImage(NamedTuple):
    """One image read back from a store: the head's record and what evaluation needs besides."""

    image_id: str
    record: tuple            # tinyspp.detect.head.ImageRecord: boxes, features, labels, ...
    image_shape: tuple       # (H, W) of the image
    arrays: dict             # the extra arrays written with it (e.g. every object, difficult too)


def digest(a: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and C-order bytes (hex)."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _normalised(config) -> dict:
    """``config`` as plain JSON types (tuples -> lists), so stored and new configs compare."""
    try:
        return json.loads(json.dumps(config, sort_keys=True))
    except TypeError as err:
        raise TypeError(f"FeatureStore.create: config must be JSON-serialisable ({err})") from None


def check_image_id(image_id, func: str = "FeatureStore") -> str:
    if not isinstance(image_id, str) or not _ID.match(image_id):
        raise ValueError(f"{func}: image ids must be non-empty strings of letters, digits, '_', "
                         f"'.', '-' (not starting with '.' or '-'), got {image_id!r}")
    return image_id


class FeatureStore:
    """A feature store on disk (see the module docstring for the layout).

    Parameters
    ----------
    path : str or os.PathLike
        Folder of an existing store (made by :meth:`create`).

    Raises
    ------
    StoreError
        ``path`` holds no store, or a Zarr group that is not a tinyspp feature store.
    """

    def __init__(self, path):
        import zarr

        self.path = os.fspath(path)
        func = "FeatureStore"
        if not os.path.isfile(os.path.join(self.path, "zarr.json")):
            raise StoreError(f"{func}: no feature store at {self.path!r} (run `python -m tinyspp "
                             f"detect extract --out {self.path}` first)")
        try:
            attrs = dict(zarr.open_group(self.path, mode="r").attrs)
        except Exception as err:  # noqa: BLE001 -- any unreadable metadata means "not a store"
            raise StoreError(f"{func}: {self.path!r} is not a readable Zarr group ({err})") from err
        if attrs.get("format") != FORMAT or not {"config", "image_ids"} <= set(attrs):
            raise StoreError(f"{func}: {self.path!r} is a Zarr group but not a tinyspp feature "
                             f"store (format {attrs.get('format')!r}, expected {FORMAT!r})")
        self.class_names = tuple(attrs["class_names"])
        self.image_ids = list(attrs["image_ids"])
        self.dtype = attrs["dtype"]
        self.config = attrs["config"]

    @classmethod
    def create(cls, path, *, image_ids, class_names, config, dtype: str = "float32"):
        """Make a new store at ``path``, or re-open the one there if it was made the same way.

        Parameters
        ----------
        path : str or os.PathLike
        image_ids : sequence of str
            The images, in order (unique; letters, digits, ``_ . -``).
        class_names : sequence of str
        config : dict
            JSON-serialisable description of what makes the features (data, trunk, scales, ...).
            Re-opening with a different config, ids, classes or dtype is refused: features of two
            configurations never mix in one store.
        dtype : {"float32", "float16"}
            Storage type of the features.
        """
        import zarr

        func = "FeatureStore.create"
        if dtype not in DTYPES:
            raise ValueError(f"{func}: dtype must be one of {DTYPES}, got {dtype!r}")
        ids = [check_image_id(i, func) for i in image_ids]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{func}: image_ids must be unique")
        want = {"format": FORMAT, "class_names": list(class_names), "image_ids": ids,
                "dtype": dtype, "config": _normalised(config)}
        path = os.fspath(path)
        if os.path.exists(os.path.join(path, "zarr.json")):
            store = cls(path)
            have = {"format": FORMAT, "class_names": list(store.class_names),
                    "image_ids": store.image_ids, "dtype": store.dtype, "config": store.config}
            diff = sorted(k for k in want if want[k] != have[k])
            if "config" in diff:
                keys = sorted(set(want["config"]) | set(store.config))
                diff += [f"config.{k}" for k in keys
                         if want["config"].get(k) != store.config.get(k)]
            if diff:
                raise StoreError(f"{func}: the store at {path!r} was made differently "
                                 f"(differs in: {', '.join(diff)}); give a new --out folder or "
                                 f"delete that store")
            return store
        if os.path.exists(path) and os.listdir(path):
            raise StoreError(f"{func}: {path!r} exists and is not empty; give a new folder")
        os.makedirs(os.path.join(path, "images"), exist_ok=True)
        zarr.open_group(os.path.join(path, "images"), mode="w")
        zarr.open_group(path, mode="a", attributes=want)    # the root's metadata, in one write
        return cls(path)

    # ------------------------------------------------------------------ one image
    def _group(self, image_id, mode):
        import zarr

        return zarr.open_group(self.path, path=f"images/{check_image_id(image_id)}", mode=mode)

    def write(self, image_id, record, image_shape, extra: dict | None = None,
              arrays: dict | None = None) -> None:
        """Write one image's arrays, then its completion marker (replacing what was there).

        Parameters
        ----------
        image_id : str
            One of :attr:`image_ids`.
        record : NamedTuple of arrays
            The head's ``ImageRecord`` (``boxes, features, labels, overlap, match, gt_boxes``);
            every field is stored as an array of its name, ``features`` in the store's dtype.
        image_shape : (int, int)
            ``(H, W)`` of the image (detections are clipped to it).
        extra : dict, optional
            JSON-serialisable values kept in the marker (timings, peak memory).
        arrays : dict of str -> ndarray, optional
            More numeric arrays to keep (and check) with the image, read back in
            :attr:`StoredImage.arrays`; names must differ from the record's fields.
        """
        func = "FeatureStore.write"
        if image_id not in self.image_ids:
            raise ValueError(f"{func}: image {image_id!r} is not one of this store's images")
        fields = self._as_stored(record, func)
        more = {check_image_id(k, func): np.asarray(v) for k, v in (arrays or {}).items()}
        if set(more) & set(fields) or any(a.dtype == object for a in more.values()):
            raise ValueError(f"{func}: arrays must be numeric and named unlike the record's "
                             f"fields {tuple(fields)}, got {sorted(more)}")
        arrays = {**fields, **more}
        g = self._group(image_id, "w")               # removes any earlier (partial) version
        for name, a in arrays.items():
            chunks = tuple(max(1, s) for s in a.shape) or (1,)
            if name == "features":
                chunks = (max(1, min(len(a), FEATURE_CHUNK_ROWS)), max(1, a.shape[1]))
            g.create_array(name, shape=a.shape, dtype=a.dtype, chunks=chunks,
                           fill_value=0)[...] = a
        marker = {"fields": list(fields), "arrays": list(more),
                  "sha256": {k: digest(a) for k, a in arrays.items()},
                  "image_shape": [int(s) for s in image_shape]}
        marker.update(_normalised(extra or {}))
        g.attrs["complete"] = marker                 # last: the image is done only now

    def _as_stored(self, record, func) -> dict:
        fields = getattr(record, "_fields", None)
        if fields is None or "features" not in fields or "boxes" not in fields:
            raise TypeError(f"{func}: record must be a NamedTuple with 'boxes' and 'features' "
                            f"fields (tinyspp.detect.head.ImageRecord), got "
                            f"{type(record).__name__}")
        arrays = {k: np.asarray(v) for k, v in zip(fields, record)}
        arrays["features"] = arrays["features"].astype(self.dtype, copy=False)
        R = len(arrays["boxes"])
        if arrays["features"].ndim != 2 or len(arrays["features"]) != R:
            raise ValueError(f"{func}: features must be (R={R}, D), got shape "
                             f"{arrays['features'].shape}")
        if any(a.dtype == object for a in arrays.values()):
            raise TypeError(f"{func}: every record field must be a numeric array")
        return arrays

    def _marker(self, image_id):
        """The image's completion marker, or ``None`` (no group, no marker, unreadable)."""
        try:
            return dict(self._group(image_id, "r").attrs).get("complete")
        except Exception:  # noqa: BLE001 -- missing or half-written metadata: not complete
            return None

    def _load(self, image_id, marker, verify: bool):
        """The arrays of an image with a marker; ``None`` when one fails its digest."""
        try:
            g = self._group(image_id, "r")
            arrays = {name: g[name][...] for name in marker["fields"] + marker["arrays"]}
        except Exception:  # noqa: BLE001 -- an array missing or unreadable: corrupt
            return None
        if verify and any(digest(a) != marker["sha256"].get(k) for k, a in arrays.items()):
            return None
        return arrays

    def status(self, image_id, verify: bool = True) -> str:
        """``"complete"``, ``"missing"`` (never started), ``"partial"`` (no marker: a task
        stopped mid-write) or ``"corrupt"`` (marker present, an array fails its digest; with
        ``verify=False`` the arrays are not read and this is never returned)."""
        if not os.path.exists(os.path.join(self.path, "images", check_image_id(image_id))):
            return "missing"
        marker = self._marker(image_id)
        if marker is None:
            return "partial"
        if verify and self._load(image_id, marker, True) is None:
            return "corrupt"
        return "complete"

    def read(self, image_id, verify: bool = True) -> StoredImage:
        """One image as a :class:`StoredImage`; raises :class:`StoreError` unless complete."""
        marker = self._marker(image_id)
        arrays = None if marker is None else self._load(image_id, marker, verify)
        if arrays is None:
            state = self.status(image_id, verify=False) if marker is None else "corrupt"
            raise StoreError(f"FeatureStore.read: image {image_id!r} of {self.path!r} is "
                             f"{state}; run `python -m tinyspp detect extract` again with the "
                             f"same arguments to (re)compute it")
        rtype = record_type()
        if tuple(marker["fields"]) != rtype._fields:
            raise StoreError(f"FeatureStore.read: image {image_id!r} holds fields "
                             f"{tuple(marker['fields'])}, this tinyspp's ImageRecord has "
                             f"{rtype._fields}; extract the store again")
        record = rtype(**{k: arrays[k] for k in rtype._fields})
        return StoredImage(image_id, record, tuple(marker["image_shape"]),
                           {k: arrays[k] for k in marker["arrays"]})

    def info(self, image_id) -> dict:
        """The completion marker of a complete image (digests, image shape, timings)."""
        marker = self._marker(image_id)
        if marker is None:
            raise StoreError(f"FeatureStore.info: image {image_id!r} is not complete")
        return marker

    # ------------------------------------------------------------------ the whole store
    def incomplete(self, verify: bool = True) -> list:
        """Ids of the images that are not complete, in store order."""
        return [i for i in self.image_ids if self.status(i, verify) != "complete"]

    def records(self, verify: bool = True) -> Records:
        """A re-iterable over every image's head record (``ImageRecord``), read one at a time:
        what ``DetectionHead.fit`` takes."""
        return Records(self, verify)

    def nbytes(self) -> int:
        """Bytes on disk under ``images/`` (every image's arrays and metadata)."""
        total = 0
        for folder, _, files in os.walk(os.path.join(self.path, "images")):
            total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
        return total

    def __repr__(self) -> str:
        return (f"FeatureStore({self.path!r}: {len(self.image_ids)} images, "
                f"{len(self.class_names)} classes, {self.dtype})")


class Records:
    """Re-iterable view of a store's images (each iteration reads them again, one at a time)."""

    def __init__(self, store: FeatureStore, verify: bool = True):
        self.store, self.verify = store, verify

    def __len__(self) -> int:
        return len(self.store.image_ids)

    def __iter__(self):
        for image_id in self.store.image_ids:
            yield self.store.read(image_id, self.verify).record
