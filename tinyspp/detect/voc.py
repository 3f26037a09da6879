"""PASCAL VOC folders: read lazily (:class:`VOCDataset`), write (:func:`write_voc`).

The VOC2007 layout::

    root/
      Annotations/<id>.xml       one <annotation> per image
      JPEGImages/<id>.jpg        the picture (any format scikit-image reads; see below)
      ImageSets/Main/<split>.txt image ids, one a line (train, val, trainval, test)

An annotation's ``<object>`` has a ``<name>``, a ``<bndbox>`` of 1-based inclusive pixel
indices ``xmin .. xmax``, ``ymin .. ymax``, and optional ``<difficult>``, ``<truncated>``,
``<occluded>`` (0 or 1, default 0) and ``<pose>`` (default ``"Unspecified"``). tinyspp's boxes are
continuous (:mod:`tinyspp.detect.geometry`): pixel ``k`` (0-based) covers ``[k, k + 1)``, so VOC's
pixels ``xmin .. xmax`` are the box ``x0 = xmin - 1``, ``x1 = xmax`` (width ``xmax - xmin + 1``,
the devkit's own width).

The image file is the annotation's ``<filename>`` in ``JPEGImages/`` when it exists, otherwise the
first ``<id>.<ext>`` there for ``ext`` in :data:`IMAGE_EXTENSIONS` -- PNG and other formats work in
the same folder. Annotations (a few hundred bytes each) are read and checked when the data set is
built; images are read one at a time, when asked for, and never kept.

Examples
--------
>>> import numpy as np, tempfile
>>> from tinyspp.detect.data import make_detection_set
>>> root = tempfile.mkdtemp()
>>> ids = write_voc(make_detection_set(3, seed=0, size_range=(48, 64)), root,
...                 splits={"train": [0, 1], "test": [2]})
>>> ds = VOCDataset(root, "train")
>>> len(ds), ds.ids, ds[0].image.shape[2], ds[0].difficult.dtype
(2, ('000001', '000002'), 3, dtype('bool'))
>>> import shutil; shutil.rmtree(root)
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .data import as_image

# the 20 VOC classes in the devkit's order
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".JPG", ".JPEG", ".PNG")


class VOCObject(NamedTuple):
    name: str
    box: tuple                 # continuous [x0, y0, x1, y1] = [xmin - 1, ymin - 1, xmax, ymax]
    difficult: bool = False
    truncated: bool = False
    occluded: bool = False
    pose: str = "Unspecified"


class VOCAnnotation(NamedTuple):
    filename: str | None       # <filename>, if given
    size: tuple | None         # (height, width, depth) from <size>, if given
    objects: tuple             # of VOCObject


class VOCSample(NamedTuple):
    image: np.ndarray          # (H, W, 3) float32 in [0, 1]
    boxes: np.ndarray          # (G, 4) float64, continuous [x0, y0, x1, y1]
    labels: np.ndarray         # (G,) int64, indices into class_names
    difficult: np.ndarray      # (G,) bool


# ---------------------------------------------------------------- reading one annotation
def _flag(obj, tag, where, func):
    text = obj.findtext(tag)
    if text is None or not text.strip():
        return False
    if text.strip() not in ("0", "1"):
        raise ValueError(f"{func}: {where}: <{tag}> must be 0 or 1, got {text.strip()!r}")
    return text.strip() == "1"


def _number(parent, tag, where, func):
    text = parent.findtext(tag)
    if text is None or not text.strip():
        raise ValueError(f"{func}: {where} has no <{tag}>")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{func}: {where}: <{tag}> must be a number, got {text.strip()!r}") \
            from None


def parse_voc_annotation(path, func: str = "parse_voc_annotation") -> VOCAnnotation:
    """Read one VOC ``<annotation>`` XML file.

    Boxes are converted to continuous coordinates (``[xmin - 1, ymin - 1, xmax, ymax]``) and
    checked: ``xmax >= xmin``, ``ymax >= ymin``, and inside ``<size>`` when the file gives one.
    Every error names the file (and the object: ``object 2`` is the third ``<object>``).
    """
    path = str(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{func}: {path} is not well-formed XML ({err})") from None
    if root.tag != "annotation":
        raise ValueError(f"{func}: {path} must have an <annotation> root, got <{root.tag}>")
    size = None
    node = root.find("size")
    if node is not None:
        h, w = (_number(node, t, f"{path} <size>", func) for t in ("height", "width"))
        d = node.findtext("depth")
        size = (int(h), int(w), int(float(d)) if d and d.strip() else 3)
    objects = []
    for k, obj in enumerate(root.findall("object")):
        where = f"{path} object {k}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise ValueError(f"{func}: {where} has no <name>")
        bb = obj.find("bndbox")
        if bb is None:
            raise ValueError(f"{func}: {where} ({name}) has no <bndbox>")
        xmin, ymin, xmax, ymax = (_number(bb, t, f"{where} ({name}) <bndbox>", func)
                                  for t in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            raise ValueError(f"{func}: {where} ({name}) has an inverted box: xmin={xmin:g}, "
                             f"ymin={ymin:g}, xmax={xmax:g}, ymax={ymax:g}")
        if xmin < 1 or ymin < 1 or (size is not None and (xmax > size[1] or ymax > size[0])):
            bound = f"1 .. {size[1]} x 1 .. {size[0]}" if size else "coordinates >= 1"
            raise ValueError(f"{func}: {where} ({name}) box xmin={xmin:g}, ymin={ymin:g}, "
                             f"xmax={xmax:g}, ymax={ymax:g} is outside the image ({bound}; "
                             f"VOC pixels are 1-based)")
        objects.append(VOCObject(name, (xmin - 1, ymin - 1, xmax, ymax),
                                 _flag(obj, "difficult", where, func),
                                 _flag(obj, "truncated", where, func),
                                 _flag(obj, "occluded", where, func),
                                 (obj.findtext("pose") or "").strip() or "Unspecified"))
    filename = (root.findtext("filename") or "").strip() or None
    return VOCAnnotation(filename, size, tuple(objects))


def _image_path(image_dir, image_id, filename, ann_path, func):
    tried = [filename] if filename else []
    tried += [image_id + ext for ext in IMAGE_EXTENSIONS if image_id + ext not in tried]
    for name in tried:
        path = os.path.join(image_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{func}: no image for {ann_path} in {image_dir} (tried "
                            f"{', '.join(tried[:4])}, ...)")


# ---------------------------------------------------------------- the data set
class LazyImages(Sequence):
    """``images[i]`` reads image ``i`` from disk each time; ``len`` and iteration work."""

    def __init__(self, dataset: VOCDataset):
        self._dataset = dataset

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._dataset.read_image(k) for k in range(len(self))[i]]
        return self._dataset.read_image(range(len(self))[i])

    def __repr__(self):
        return f"LazyImages({len(self)} images in {self._dataset.image_dir})"


class VOCDataset:
    """A VOC2007-layout folder: annotations read at construction, images on access.

    Parameters
    ----------
    root : path
        The folder holding ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/`` (for VOC
        2007, ``VOCdevkit/VOC2007``).
    split : str, optional
        Use the ids of ``ImageSets/Main/<split>.txt`` (e.g. ``"trainval"``, ``"test"``);
        default: every ``Annotations/*.xml``, sorted.
    class_names : sequence of str, optional
        The classes and their label order (e.g. :data:`VOC_CLASSES`); objects of other classes
        are left out. Default: the sorted names found in the annotations read.
    keep_difficult : bool
        Keep objects marked difficult, flagged in ``difficult`` (default; evaluation needs them,
        :mod:`tinyspp.detect.evaluate` ignores detections on them). ``False`` drops them, as
        Fast R-CNN's reference code does for training (``use_diff = False``).
    max_images : int, optional
        Only the first ``max_images`` ids.
    image_dir : str
        The image folder's name under ``root``.

    Attributes
    ----------
    ids : tuple of str
    class_names : tuple of str
    boxes, labels, difficult : lists of per-image arrays ``(G_i, 4)``, ``(G_i,)``, ``(G_i,)``
    annotations : list of :class:`VOCAnnotation` (all objects, with truncated, occluded, pose)
    image_paths : tuple of str
    images : :class:`LazyImages`
        ``images[i]`` is :meth:`read_image`; code written for an in-memory list of images works
        unchanged and holds one image at a time.

    ``dataset[i]`` is a :class:`VOCSample` ``(image, boxes, labels, difficult)``; iterating yields
    them in order.
    """

    def __init__(self, root, split: str | None = None, class_names=None, *,
                 keep_difficult: bool = True, max_images: int | None = None,
                 image_dir: str = "JPEGImages"):
        func = "VOCDataset"
        self.root = str(root)
        ann_dir = os.path.join(self.root, "Annotations")
        self.image_dir = os.path.join(self.root, image_dir)
        for d in (ann_dir, self.image_dir):
            if not os.path.isdir(d):
                raise FileNotFoundError(f"{func}: expected a folder {d!r} (VOC layout: "
                                        f"root/Annotations, root/{image_dir})")
        if split is not None:
            path = os.path.join(self.root, "ImageSets", "Main", f"{split}.txt")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{func}: split {split!r} needs the file {path!r}")
            with open(path) as f:
                ids = [line.split()[0] for line in f if line.strip()]
        else:
            ids = sorted(os.path.splitext(n)[0] for n in os.listdir(ann_dir)
                         if n.endswith(".xml"))
        if max_images is not None:
            if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 0:
                raise ValueError(f"{func}: max_images must be an int >= 0, got {max_images!r}")
            ids = ids[:max_images]
        self.ids = tuple(ids)
        self.annotations, paths = [], []
        for image_id in self.ids:
            ann_path = os.path.join(ann_dir, f"{image_id}.xml")
            if not os.path.isfile(ann_path):
                raise FileNotFoundError(f"{func}: image id {image_id!r} has no annotation "
                                        f"{ann_path!r}")
            ann = parse_voc_annotation(ann_path, func)
            self.annotations.append(ann)
            paths.append(_image_path(self.image_dir, image_id, ann.filename, ann_path, func))
        self.image_paths = tuple(paths)
        if class_names is None:
            class_names = sorted({o.name for a in self.annotations for o in a.objects})
        self.class_names = tuple(class_names)
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"{func}: class_names has duplicates: {self.class_names}")
        index = {n: i for i, n in enumerate(self.class_names)}
        self.boxes, self.labels, self.difficult = [], [], []
        for ann in self.annotations:
            objs = [o for o in ann.objects
                    if o.name in index and (keep_difficult or not o.difficult)]
            self.boxes.append(np.array([o.box for o in objs], dtype=np.float64).reshape(-1, 4))
            self.labels.append(np.array([index[o.name] for o in objs], dtype=np.int64))
            self.difficult.append(np.array([o.difficult for o in objs], dtype=bool))
        self.images = LazyImages(self)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i) -> VOCSample:
        i = range(len(self))[i]
        return VOCSample(self.read_image(i), self.boxes[i], self.labels[i], self.difficult[i])

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self):
        return (f"VOCDataset({self.root!r}, {len(self)} images, "
                f"{len(self.class_names)} classes)")

    def read_image(self, i: int) -> np.ndarray:
        """Image ``i`` from disk as ``(H, W, 3)`` float32 in ``[0, 1]`` (:func:`as_image`).

        Raises ``ValueError`` naming the file when it is not an image, or when its size differs
        from its annotation's ``<size>`` or is too small for its boxes.
        """
        from skimage import io

        func = "VOCDataset.read_image"
        path = self.image_paths[i]
        try:
            raw = io.imread(path)
        except Exception as err:            # the readers raise many kinds (OSError, ValueError)
            raise ValueError(f"{func}: cannot read {path} as an image ({err})") from None
        image = as_image(raw, name=f"the image {path}", func=func)
        H, W = image.shape[:2]
        size = self.annotations[i].size
        if size is not None and (size[0], size[1]) != (H, W):
            raise ValueError(f"{func}: {path} is {H} x {W} (H x W) but its annotation "
                             f"{self.ids[i]}.xml says {size[0]} x {size[1]}")
        boxes = np.array([o.box for o in self.annotations[i].objects]).reshape(-1, 4)
        if len(boxes) and (boxes[:, 2].max() > W or boxes[:, 3].max() > H):
            raise ValueError(f"{func}: {path} is {H} x {W} (H x W), too small for the boxes "
                             f"of {self.ids[i]}.xml")
        return image

    def ground_truth(self) -> list:
        """``[(boxes, labels, difficult)]`` per image, for :mod:`tinyspp.detect.evaluate`."""
        return list(zip(self.boxes, self.labels, self.difficult))


# ---------------------------------------------------------------- writing
def _check_ids(ids, n, func):
    ids = [f"{k + 1:06d}" for k in range(n)] if ids is None else [str(v) for v in ids]
    if len(ids) != n or len(set(ids)) != n:
        raise ValueError(f"{func}: ids must be {n} distinct names, got {len(ids)} "
                         f"({len(set(ids))} distinct)")
    for v in ids:
        if not v or os.sep in v or "/" in v or v.strip() != v or " " in v:
            raise ValueError(f"{func}: ids must be plain file names without spaces, got {v!r}")
    return ids


def write_voc(dataset, root, *, splits=None, ids=None, image_format: str = "png",
              overwrite: bool = False) -> list:
    """Write a detection data set as a VOC2007-layout folder that :class:`VOCDataset` reads.

    Parameters
    ----------
    dataset : DetectionSet, VOCDataset or any object with ``images``, ``boxes``, ``labels``,
        ``class_names`` (and optionally ``difficult``)
        Images are read (and written) one at a time. Boxes must be whole pixels (integer
        ``x0, y0, x1, y1`` with ``x1 > x0``, ``y1 > y0``) inside their image.
    root : path
        Created if needed; ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/`` go below it.
    splits : dict of str -> sequence of int, optional
        ``ImageSets/Main/<name>.txt`` files listing the images at those indices; default
        ``{"trainval": every image}``.
    ids : sequence of str, optional
        Image ids; default ``000001``, ``000002``, ... as in VOC.
    image_format : {"png", "jpg"}
        ``"png"`` (default) is lossless: the images read back equal the written ones rounded to
        8 bits (within 1/510). ``"jpg"`` is VOC's own format, and lossy (the writer's
        default quality).
    overwrite : bool
        Refuse (``FileExistsError``, nothing written) when a file to write exists, unless True.

    Returns
    -------
    list of str
        The ids written.
    """
    from skimage import io

    func = "write_voc"
    if image_format not in ("png", "jpg"):
        raise ValueError(f"{func}: image_format must be 'png' or 'jpg', got {image_format!r}")
    for attr in ("images", "boxes", "labels", "class_names"):
        if not hasattr(dataset, attr):
            raise TypeError(f"{func}: dataset must have images, boxes, labels and class_names "
                            f"(a DetectionSet or VOCDataset); {type(dataset).__name__} has no "
                            f"{attr}")
    n = len(dataset.images)
    if len(dataset.boxes) != n or len(dataset.labels) != n:
        raise ValueError(f"{func}: dataset has {n} images, {len(dataset.boxes)} box arrays and "
                         f"{len(dataset.labels)} label arrays")
    ids = _check_ids(ids, n, func)
    splits = {"trainval": range(n)} if splits is None else dict(splits)
    for name, members in splits.items():
        if not name or not isinstance(name, str) or "/" in name or os.sep in name:
            raise ValueError(f"{func}: split names must be plain file names, got {name!r}")
        bad = [k for k in members if not (isinstance(k, (int, np.integer)) and 0 <= k < n)]
        if bad:
            raise ValueError(f"{func}: split {name!r} must list image indices in 0 .. {n - 1}, "
                             f"got {bad[0]!r}")
    root = Path(root)
    ann_dir, img_dir, set_dir = root / "Annotations", root / "JPEGImages", root / "ImageSets/Main"
    targets = ([ann_dir / f"{v}.xml" for v in ids] + [img_dir / f"{v}.{image_format}" for v in ids]
               + [set_dir / f"{s}.txt" for s in splits])
    if not overwrite:
        existing = [p for p in targets if p.exists()]
        if existing:
            raise FileExistsError(f"{func}: {existing[0]} exists (and {len(existing) - 1} more "
                                  f"of the files to write); pass overwrite=True to replace them")
    names = tuple(dataset.class_names)
    records = [_check_objects(dataset, k, names, func) for k in range(n)]   # before any write
    for d in (ann_dir, img_dir, set_dir):
        d.mkdir(parents=True, exist_ok=True)
    for k, (image_id, (boxes, labels, diff)) in enumerate(zip(ids, records)):
        img = as_image(dataset.images[k], name=f"dataset.images[{k}]", func=func)
        H, W = img.shape[:2]
        if len(boxes) and (boxes[:, 2].max() > W or boxes[:, 3].max() > H):
            raise ValueError(f"{func}: dataset.boxes[{k}] reach beyond the {H} x {W} image")
        filename = f"{image_id}.{image_format}"
        pixels = np.round(img * 255).astype(np.uint8)
        io.imsave(img_dir / filename, pixels, check_contrast=False)
        (ann_dir / f"{image_id}.xml").write_text(
            _annotation_xml(root.name, filename, (H, W), boxes, labels, diff, names))
    for name, members in splits.items():
        (set_dir / f"{name}.txt").write_text("".join(f"{ids[k]}\n" for k in members))
    return ids


def _check_objects(dataset, k, names, func):
    boxes = np.asarray(dataset.boxes[k], dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(dataset.labels[k]).reshape(-1)
    difficult = getattr(dataset, "difficult", None)
    diff = (np.zeros(len(boxes), dtype=bool) if difficult is None
            else np.asarray(difficult[k], dtype=bool).reshape(-1))
    if len(labels) != len(boxes) or len(diff) != len(boxes):
        raise ValueError(f"{func}: image {k} has {len(boxes)} boxes, {len(labels)} labels "
                         f"and {len(diff)} difficult flags")
    ok = ((boxes == np.round(boxes)).all(axis=1) & (boxes[:, 2] > boxes[:, 0])
          & (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 0] >= 0) & (boxes[:, 1] >= 0))
    if not ok.all():
        r = int(np.flatnonzero(~ok)[0])
        raise ValueError(f"{func}: dataset.boxes[{k}] row {r} is {boxes[r].tolist()}; VOC "
                         f"stores whole pixels: integer corners >= 0 with x1 > x0, y1 > y0")
    bad = [int(v) for v in labels if not (float(v).is_integer() and 0 <= v < len(names))]
    if bad:
        raise ValueError(f"{func}: dataset.labels[{k}] holds {bad[0]}, not a class index "
                         f"0 .. {len(names) - 1}")
    return boxes, labels.astype(np.int64), diff


def _annotation_xml(folder, filename, size, boxes, labels, difficult, names) -> str:
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = folder
    ET.SubElement(ann, "filename").text = filename
    ET.SubElement(ET.SubElement(ann, "source"), "database").text = "tinyspp"
    sz = ET.SubElement(ann, "size")
    for tag, v in (("width", size[1]), ("height", size[0]), ("depth", 3)):
        ET.SubElement(sz, tag).text = str(v)
    ET.SubElement(ann, "segmented").text = "0"
    for b, lab, d in zip(boxes, labels, difficult):
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = names[int(lab)]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(int(d))
        bb = ET.SubElement(obj, "bndbox")
        for tag, v in (("xmin", b[0] + 1), ("ymin", b[1] + 1), ("xmax", b[2]), ("ymax", b[3])):
            ET.SubElement(bb, tag).text = str(int(v))
    ET.indent(ann)
    return ET.tostring(ann, encoding="unicode") + "\n"
