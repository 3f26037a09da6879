"""Detection data: the image convention, a synthetic set on real photographs, VOC folders.

**Images** for detection are ``(H, W, 3)`` float32 RGB in ``[0, 1]`` (channels last, as
scikit-image has them; the networks transpose to ``(1, 3, H, W)`` themselves).
:func:`as_image` turns any single picture a user may hold -- uint8 (0-255), uint16, bool or
float in [0, 1]; greyscale ``(H, W)``, RGB, RGBA, grey + alpha -- into that, and rejects what
cannot be an image with an error naming the argument. The public detection entries call it once.

**The synthetic set** draws simple shapes (``CLASSES``) with :mod:`skimage.draw` -- different
sizes, colours and aspect ratios, sometimes overlapping -- onto crops of the photographs and
textures that ship with :mod:`skimage.data`, so backgrounds are cluttered and real. Boxes are
``[x0, y0, x1, y1]`` in the continuous pixel coordinates of :mod:`tinyspp.detect.geometry` (the
tight box of the drawn pixels, ``x1`` exclusive).

**VOC folders** are read lazily by :class:`tinyspp.detect.voc.VOCDataset` (also reachable as
:func:`load_voc`) and written by :func:`tinyspp.detect.voc.write_voc`.

Both kinds of data set have ``images``, ``boxes``, ``labels``, ``difficult``, ``class_names``
and ``ground_truth()`` (the per-image ``(boxes, labels, difficult)`` that
:func:`tinyspp.detect.evaluate.evaluate_detections` takes).

Examples
--------
>>> ds = make_detection_set(2, seed=0, size_range=(64, 80))
>>> len(ds.images), ds.images[0].dtype, ds.class_names[:2]
(2, dtype('float32'), ('ellipse', 'rectangle'))
>>> img = as_image(np.full((4, 5), 255, dtype=np.uint8))      # greyscale uint8
>>> img.shape, img.dtype, float(img.max())
((4, 5, 3), dtype('float32'), 1.0)
"""

from __future__ import annotations

import functools
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
    difficult: list | None = None    # N arrays (G_i,) bool; None: no object is difficult

    def ground_truth(self) -> list:
        """``[(boxes, labels, difficult)]`` per image, for :mod:`tinyspp.detect.evaluate`."""
        diff = self.difficult or [np.zeros(len(b), dtype=bool) for b in self.boxes]
        return list(zip(self.boxes, self.labels, diff))


def as_image(image, name: str = "image", func: str = "as_image") -> np.ndarray:
    """One picture as the ``(H, W, 3)`` float32 RGB image in ``[0, 1]`` that detection uses.

    Parameters
    ----------
    image : ndarray of shape (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or (H, W, 4)
        Greyscale, grey + alpha, RGB or RGBA, channels last. dtype uint8 (0-255), uint16
        (0-65535), bool, or float with every value in ``[0, 1]``.
    name, func : str
        The argument and function named in error messages (the caller's).

    Returns
    -------
    ndarray of shape (H, W, 3), float32
        Integers are scaled by :func:`skimage.util.img_as_float64` and rounded to float32 (uint8
        ``v`` becomes ``v / 255``; uint8 ``v``, uint16 ``257 v`` and float64 ``v / 255`` give
        identical pixels), grey is repeated over three channels (:func:`skimage.color.gray2rgb`) and
        alpha is composited on white (:func:`skimage.color.rgba2rgb`). A float32 RGB input is
        returned as it is (not copied; never modified).

    Raises
    ------
    TypeError
        Not a NumPy array, or a dtype that does not say how bright a pixel is (signed integers,
        uint32/64, complex, object).
    ValueError
        A shape that is not an image, an empty image, or float values outside ``[0, 1]``
        (0-255 floats included) or not finite.
    """
    from skimage.color import gray2rgb, rgba2rgb
    from skimage.util import img_as_float64

    if not isinstance(image, np.ndarray):
        raise TypeError(f"{func}: {name} must be a numpy ndarray of shape (H, W), (H, W, 3) or "
                        f"(H, W, 4), got {type(image).__name__}")
    shape = image.shape
    if image.ndim not in (2, 3) or (image.ndim == 3 and shape[2] not in (1, 2, 3, 4)):
        hint = (" (channels first? detection images are (H, W, C))"
                if image.ndim == 3 and shape[0] in (1, 3, 4) else "")
        raise ValueError(f"{func}: {name} must have shape (H, W) grey, (H, W, 3) RGB or "
                         f"(H, W, 4) RGBA, got shape {shape}{hint}")
    if min(shape[:2]) < 1:
        raise ValueError(f"{func}: {name} must not be empty, got shape {shape}")
    dt = image.dtype
    if np.issubdtype(dt, np.floating):
        lo, hi = float(np.min(image)), float(np.max(image))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"{func}: {name} has NaN or infinite values")
        if lo < 0 or hi > 1:
            raise ValueError(f"{func}: {name} is a float image with values in [{lo:g}, {hi:g}]; "
                             f"float images must lie in [0, 1] (divide 0-255 values by 255, "
                             f"or pass them as uint8)")
    elif dt not in (np.uint8, np.uint16, np.bool_):
        raise TypeError(f"{func}: {name} must have dtype uint8 (0-255), uint16 (0-65535), bool "
                        f"or float in [0, 1], got {dt}")
    # via float64: a uint8 v, a uint16 257 v and a float64 v / 255 give the same float32 bits
    img = image if image.dtype == np.float32 else img_as_float64(image).astype(np.float32)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        return gray2rgb(img)
    if img.shape[2] == 2:                                        # grey + alpha
        img = np.dstack([img[..., 0]] * 3 + [img[..., 1]])
    if img.shape[2] == 4:
        img = rgba2rgb(img, background=(1, 1, 1))
    return np.ascontiguousarray(img, dtype=np.float32)


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
    return DetectionSet(images, boxes, labels, CLASSES,
                        [np.zeros(len(b), dtype=bool) for b in boxes])


def train_test_sets(n_train: int, n_test: int, seed: int = 0, **kwargs):
    """Two independent synthetic sets drawn from the streams ``(seed, 0)`` and ``(seed, 1)``."""
    return (make_detection_set(n_train, seed=(seed, 0), **kwargs),
            make_detection_set(n_test, seed=(seed, 1), **kwargs))


def load_voc(root, split: str | None = None, class_names=None, **kwargs):
    """A VOC-layout folder, read lazily: :class:`tinyspp.detect.voc.VOCDataset` (same arguments).

    Difficult objects are kept, flagged in ``difficult`` (pass ``keep_difficult=False`` to drop
    them, e.g. for training).
    """
    from .voc import VOCDataset

    return VOCDataset(root, split, class_names, **kwargs)
