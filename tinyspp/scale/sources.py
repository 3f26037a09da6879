"""Data sources for the store: ``voc:PATH``, read lazily, one image at a time.

Both sides use :class:`tinyspp.detect.voc.VOCDataset`, which reads the annotations when built (a
few hundred bytes per image) and an image only when asked: the driver reads just the index (ids
and class names), each worker builds the data set once and reads the pixels of the one image its
task works on -- the same pixels, boxes and difficult flags the in-memory detector gets from
:func:`tinyspp.detect.data.load_voc`. ``PATH`` must be visible to every worker at the same path
(a shared or copied folder on a multi-machine cluster). :func:`tinyspp.detect.voc.write_voc`
writes a data set (e.g. the synthetic one) in this layout.

Examples
--------
>>> parse_data("voc:/data/VOC2007")
{'kind': 'voc', 'root': '/data/VOC2007'}
"""

from __future__ import annotations

import functools
import os

SOURCE_KINDS = ("voc",)


def parse_data(spec: str, func: str = "parse_data") -> dict:
    """``"voc:PATH"`` -> ``{"kind": "voc", "root": absolute PATH}`` (the folder is not checked)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"{func}: --data must look like 'voc:PATH' (a folder with "
                         f"Annotations/, JPEGImages/, ImageSets/Main/), got {spec!r}")
    kind, _, root = spec.partition(":")
    if kind not in SOURCE_KINDS:
        raise ValueError(f"{func}: unknown data kind {kind!r} in {spec!r}; known: "
                         f"{', '.join(SOURCE_KINDS)} (e.g. 'voc:PATH')")
    if not root:
        raise ValueError(f"{func}: {spec!r} names no folder (expected 'voc:PATH')")
    return {"kind": kind, "root": os.path.abspath(os.path.expanduser(root))}


@functools.lru_cache(maxsize=4)
def _dataset(root: str, split, class_names, max_images):
    """The VOC data set of a split, built once per process (annotations only; no pixels)."""
    from ..detect.voc import VOCDataset

    return VOCDataset(root, split, None if class_names is None else list(class_names),
                      max_images=max_images)


def index(data: dict, split: str | None, max_images: int | None = None, class_names=None):
    """Image ids and class names of a source, without reading any image.

    Returns
    -------
    ids : list of str
        ``ImageSets/Main/<split>.txt`` in file order (every annotation, sorted, if ``split``
        is None), at most ``max_images``.
    class_names : tuple of str
        ``class_names`` if given, else the sorted names found in those images' annotations.
    """
    names = None if class_names is None else tuple(class_names)
    ds = _dataset(data["root"], split, names, max_images)
    return list(ds.ids), tuple(ds.class_names)


def load_item(data: dict, split: str | None, image_id: str, class_names):
    """One image and its objects of the listed classes (difficult ones flagged).

    Returns
    -------
    image : ndarray of shape (H, W, 3), float32 in [0, 1]
    boxes : ndarray of shape (G, 4), float64 (VOC's 1-based ``xmin`` becomes ``xmin - 1``)
    labels : ndarray of shape (G,), int64 indices into ``class_names``
    difficult : ndarray of shape (G,), bool
    """
    ds = _dataset(data["root"], split, tuple(class_names), None)
    where = _positions(ds)
    if image_id not in where:
        raise ValueError(f"load_item: image {image_id!r} is not in split {split!r} of "
                         f"{data['root']!r}")
    return tuple(ds[where[image_id]])


@functools.lru_cache(maxsize=4)
def _positions(ds) -> dict:
    return {image_id: i for i, image_id in enumerate(ds.ids)}
