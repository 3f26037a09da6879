"""Detection data: a deterministic synthetic set on real photographs, and a VOC-style loader.

The synthetic set draws simple shapes (``CLASSES``) with :mod:`skimage.draw` — different sizes,
colours and aspect ratios, sometimes overlapping — onto crops of the photographs and textures that
ship with :mod:`skimage.data`, so backgrounds are cluttered and real. Images are ``(H, W, 3)``
float32 in ``[0, 1]`` of varying size; boxes are ``[x0, y0, x1, y1]`` in the continuous pixel
coordinates of :mod:`tinyspp.detect.geometry` (the tight box of the drawn pixels, ``x1``
exclusive).

Examples
--------
>>> ds = make_detection_set(2, seed=0, size_range=(64, 80))
>>> len(ds.images), ds.images[0].dtype, ds.class_names[:2]
(2, dtype('float32'), ('ellipse', 'rectangle'))
"""

from __future__ import annotations

import functools
import os
import xml.etree.ElementTree as ET
from typing import NamedTuple

import numpy as np

from ..validate import check_int

CLASSES = ("ellipse", "rectangle", "triangle", "cross")
# colour photographs and grey textures bundled with scikit-image (no download needed)
BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
               "hubble_deep_field", "brick", "grass", "gravel", "camera", "coins", "moon")


class DetectionSet(NamedTuple):
    images: list          # N arrays (H_i, W_i, 3) float32 in [0, 1]
    boxes: list           # N arrays (G_i, 4) float64, [x0, y0, x1, y1]
    labels: list          # N arrays (G_i,) int64, indices into class_names
    class_names: tuple


@functools.cache
def _background(name: str) -> np.ndarray:
    """A bundled skimage.data image as (H, W, 3) float32 in [0, 1], at most 256 px per side."""
    from skimage import data, transform
    from skimage.color import gray2rgb

    img = getattr(data, name)()
    if img.ndim == 2:
        img = gray2rgb(img)
    img = img[..., :3].astype(np.float32) / 255.0
    scale = 256 / max(img.shape[:2])
    if scale < 1:
        img = transform.rescale(img, scale, channel_axis=2, anti_aliasing=True).astype(np.float32)
    return img


def _shape_mask(cls: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean (h, w) mask of one object of class ``cls`` filling most of its box."""
    from skimage import draw

    mask = np.zeros((h, w), dtype=bool)
    name = CLASSES[cls]
    if name == "ellipse":
        rr, cc = draw.ellipse((h - 1) / 2, (w - 1) / 2, h / 2, w / 2, shape=(h, w))
    elif name == "rectangle":
        rr, cc = draw.rectangle((0, 0), (h - 1, w - 1), shape=(h, w))
    elif name == "triangle":
        apex = rng.uniform(0.2, 0.8) * (w - 1)
        rr, cc = draw.polygon([h - 1, 0, h - 1], [0, apex, w - 1], shape=(h, w))
    else:   # cross: a horizontal and a vertical bar
        t = max(2, int(round(min(h, w) * rng.uniform(0.25, 0.4))))
        r0, c0 = (h - t) // 2, (w - t) // 2
        mask[r0:r0 + t, :] = True
        mask[:, c0:c0 + t] = True
        return mask
    mask[rr, cc] = True
    return mask


def _draw_image(rng: np.random.Generator, size_range, object_range, max_objects, max_overlap):
    H, W = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
    bg = _background(BACKGROUNDS[rng.integers(len(BACKGROUNDS))])
    y, x = rng.integers(0, bg.shape[0] - H + 1), rng.integers(0, bg.shape[1] - W + 1)
    img = bg[y:y + H, x:x + W].copy()
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(len(CLASSES)))
        for _attempt in range(10):        # re-draw the placement until it overlaps little
            side = rng.uniform(*object_range) * min(H, W)
            aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))     # w / h
            h = int(np.clip(side / np.sqrt(aspect), 8, H - 2))
            w = int(np.clip(side * np.sqrt(aspect), 8, W - 2))
            top, left = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
            box = np.array([[left, top, left + w, top + h]], dtype=np.float64)
            if not boxes or _covered(box, np.array(boxes)) <= max_overlap:
                break
        else:
            continue
        mask = _shape_mask(cls, h, w, rng)
        colour = rng.uniform(0, 1, 3).astype(np.float32)
        colour[rng.integers(3)] = rng.choice([0.05, 0.95])            # saturated
        img[top:top + h, left:left + w][mask] = colour
        rows, cols = np.nonzero(mask)
        boxes.append([left + cols.min(), top + rows.min(), left + cols.max() + 1,
                      top + rows.max() + 1])
        labels.append(cls)
    return img, np.array(boxes, dtype=np.float64), np.array(labels, dtype=np.int64)


def _covered(box, others) -> float:
    """Largest fraction of either box covered by their intersection, over ``others (K, 4)``."""
    ix = np.clip(np.minimum(others[:, 2], box[0, 2]) - np.maximum(others[:, 0], box[0, 0]), 0, None)
    iy = np.clip(np.minimum(others[:, 3], box[0, 3]) - np.maximum(others[:, 1], box[0, 1]), 0, None)
    inter = ix * iy
    area = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    own = (box[0, 2] - box[0, 0]) * (box[0, 3] - box[0, 1])
    return float(np.max(inter / np.minimum(area, own)))


def make_detection_set(n_images: int, seed=0, size_range=(96, 144), object_range=(0.25, 0.6),
                       max_objects: int = 3, max_overlap: float = 0.25) -> DetectionSet:
    """A deterministic synthetic detection set.

    Parameters
    ----------
    n_images : int
    seed : int or sequence of ints
        Seeds ``np.random.default_rng``; the same seed gives the same images, bit for bit.
    size_range : (int, int)
        Image height and width are drawn independently from this inclusive range.
    object_range : (float, float)
        Object side as a fraction of the image's shorter side.
    max_objects : int
        Up to this many shapes per image (at least one).
    max_overlap : float
        A placement whose box covers more than this fraction of an earlier box (or is covered
        that much) is re-drawn (10 tries, then the object is left out): objects overlap a little
        but stay recognisable.
    """
    func = "make_detection_set"
    check_int(n_images, "n_images", func, minimum=0)
    check_int(max_objects, "max_objects", func)
    if not 24 <= size_range[0] <= size_range[1] <= 256:
        raise ValueError(f"{func}: size_range must satisfy 24 <= lo <= hi <= 256, got {size_range}")
    rng = np.random.default_rng(seed)
    images, boxes, labels = [], [], []
    for _ in range(n_images):
        img, b, lab = _draw_image(rng, size_range, object_range, max_objects, max_overlap)
        images.append(img)
        boxes.append(b)
        labels.append(lab)
    return DetectionSet(images, boxes, labels, CLASSES)


def train_test_sets(n_train: int, n_test: int, seed: int = 0, **kwargs):
    """Two independent synthetic sets drawn from the streams ``(seed, 0)`` and ``(seed, 1)``."""
    return (make_detection_set(n_train, seed=(seed, 0), **kwargs),
            make_detection_set(n_test, seed=(seed, 1), **kwargs))


def load_voc(root, split: str | None = None, class_names=None, skip_difficult: bool = True,
             max_images: int | None = None) -> DetectionSet:
    """Load a VOC-style folder: ``JPEGImages/<id>.jpg`` and ``Annotations/<id>.xml``.

    Parameters
    ----------
    root : path
        The folder holding ``Annotations/`` and ``JPEGImages/`` (and ``ImageSets/Main/``).
    split : str, optional
        Read image ids from ``ImageSets/Main/<split>.txt``; default: every annotation file.
    class_names : sequence of str, optional
        Fixes the label order; default: the sorted names found in the annotations.
    skip_difficult : bool
        Drop objects marked ``<difficult>1</difficult>`` (as VOC evaluation ignores them).
    max_images : int, optional

    Returns
    -------
    DetectionSet
        VOC's 1-based inclusive ``xmin .. xmax`` become ``x0 = xmin - 1``, ``x1 = xmax``.
    """
    from skimage import io

    func = "load_voc"
    ann_dir, img_dir = os.path.join(root, "Annotations"), os.path.join(root, "JPEGImages")
    for d in (ann_dir, img_dir):
        if not os.path.isdir(d):
            raise FileNotFoundError(f"{func}: expected a folder {d!r} (VOC layout)")
    if split is not None:
        with open(os.path.join(root, "ImageSets", "Main", f"{split}.txt")) as f:
            ids = [line.split()[0] for line in f if line.strip()]
    else:
        ids = sorted(os.path.splitext(n)[0] for n in os.listdir(ann_dir) if n.endswith(".xml"))
    ids = ids[:max_images] if max_images is not None else ids
    records = []
    for image_id in ids:
        tree = ET.parse(os.path.join(ann_dir, f"{image_id}.xml")).getroot()
        filename = tree.findtext("filename") or f"{image_id}.jpg"
        objects = []
        for obj in tree.iter("object"):
            if skip_difficult and (obj.findtext("difficult") or "0").strip() == "1":
                continue
            bb = obj.find("bndbox")
            if bb is None:
                raise ValueError(f"{func}: {image_id}.xml has an object without <bndbox>")
            xmin, ymin, xmax, ymax = (float(bb.findtext(k)) for k in
                                      ("xmin", "ymin", "xmax", "ymax"))
            objects.append((obj.findtext("name").strip(), [xmin - 1, ymin - 1, xmax, ymax]))
        records.append((os.path.join(img_dir, filename), objects))
    names = tuple(class_names) if class_names is not None else tuple(
        sorted({n for _, objs in records for n, _ in objs}))
    index = {n: i for i, n in enumerate(names)}
    images, boxes, labels = [], [], []
    for path, objs in records:
        img = io.imread(path)
        img = np.dstack([img] * 3) if img.ndim == 2 else img[..., :3]
        images.append(img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0))
        objs = [(n, b) for n, b in objs if n in index]
        boxes.append(np.array([b for _, b in objs], dtype=np.float64).reshape(-1, 4))
        labels.append(np.array([index[n] for n, _ in objs], dtype=np.int64))
    return DetectionSet(images, boxes, labels, names)
