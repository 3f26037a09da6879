"""A deterministic synthetic classification set: shapes on photographic backgrounds.

Each image shows one filled shape (the class) drawn with :mod:`skimage.draw` at a random scale,
position, small rotation and colour, pasted on a crop of a photograph or texture that ships with
scikit-image (``skimage.data``: astronaut, coffee, chelsea, rocket, coins, brick, grass, gravel;
nothing is downloaded). Image heights and widths are drawn independently from ``size_range``, so
sizes AND aspect ratios vary (up to 2:1 with the default range) -- the situation SPP was made for.

Images are float32 ``(3, H, W)`` in ``[0, 1]``. The same ``seed`` always gives the same images.

Examples
--------
>>> train, val, test = synthetic_splits(n_train=2, n_val=1, n_test=1, seed=0)
>>> len(train), train.classes[:3], train.images[0].dtype, train.channels
(20, ('disk', 'square', 'triangle'), dtype('float32'), 3)
"""

from __future__ import annotations

import functools

import numpy as np
from skimage import data as skdata
from skimage import draw, transform
from skimage.color import gray2rgb
from skimage.util import img_as_float32

from ..validate import check_int
from .dataset import ImageSet

SHAPES = ("disk", "square", "triangle", "cross", "ring", "star", "diamond", "crescent", "arrow",
          "hexagon")
BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket", "coins", "brick", "grass", "gravel")


@functools.cache
def _background(name: str) -> np.ndarray:
    """``skimage.data.<name>()`` as float32 RGB (H, W, 3), downscaled 4x (textures stay visible
    at the few-dozen-pixel sizes used here)."""
    img = img_as_float32(getattr(skdata, name)())
    if img.ndim == 2:
        img = gray2rgb(img)
    img = transform.rescale(img, 0.25, channel_axis=-1, anti_aliasing=True)
    return img.astype(np.float32)


def _polygon(kind: str, r: float, angle: float) -> np.ndarray:
    """Vertices (K, 2) as (row, col) offsets from the centre of a shape of half-size ``r``."""
    if kind == "square":
        t = np.deg2rad([45, 135, 225, 315]) + angle
        rad = np.full(4, r * np.sqrt(2))
    elif kind == "diamond":
        t = np.deg2rad([0, 90, 180, 270]) + angle
        rad = np.full(4, r)
    elif kind == "triangle":
        t = np.deg2rad([-90, 30, 150]) + angle
        rad = np.full(3, r)
    elif kind == "star":
        t = np.deg2rad(np.arange(10) * 36 - 90) + angle
        rad = np.where(np.arange(10) % 2 == 0, r, 0.42 * r)
    elif kind == "hexagon":
        t = np.deg2rad(np.arange(6) * 60) + angle
        rad = np.full(6, r)
    elif kind in ("cross", "arrow"):
        a, b = r, 0.35 * r  # arm half-length, arm half-width
        if kind == "cross":
            pts = np.array([(-a, -b), (-a, b), (-b, b), (-b, a), (b, a), (b, b), (a, b),
                            (a, -b), (b, -b), (b, -a), (-b, -a), (-b, -b)])
        else:  # pointing up: a triangular head on a shaft
            pts = np.array([(-a, 0), (0, a), (0, b), (a, b), (a, -b), (0, -b), (0, -a)])
        c, s = np.cos(angle), np.sin(angle)
        return pts @ np.array([[c, s], [-s, c]])
    else:
        raise ValueError(f"_polygon: unknown polygon shape {kind!r}")
    return np.stack([rad * np.sin(t), rad * np.cos(t)], axis=1)


def shape_mask(kind: str, H: int, W: int, cy: float, cx: float, r: float,
               angle: float = 0.0, phase: float = 0.0) -> np.ndarray:
    """Boolean mask (H, W) of one shape of half-size ``r`` centred at ``(cy, cx)``.

    ``angle`` rotates polygons (radians); ``phase`` is the direction of a crescent's bite.
    """
    mask = np.zeros((H, W), dtype=bool)
    if kind in ("disk", "ring", "crescent"):
        mask[draw.disk((cy, cx), r, shape=(H, W))] = True
        if kind == "ring":
            mask[draw.disk((cy, cx), 0.55 * r, shape=(H, W))] = False
        elif kind == "crescent":
            by, bx = cy + 0.5 * r * np.sin(phase), cx + 0.5 * r * np.cos(phase)
            mask[draw.disk((by, bx), 0.85 * r, shape=(H, W))] = False
        return mask
    if kind not in SHAPES:
        raise ValueError(f"shape_mask: kind must be one of {SHAPES}, got {kind!r}")
    pts = _polygon(kind, r, angle)
    rr, cc = draw.polygon(pts[:, 0] + cy, pts[:, 1] + cx, shape=(H, W))
    mask[rr, cc] = True
    return mask


def _one_image(kind: str, H: int, W: int, rng: np.random.Generator,
               contrast: float = 0.6) -> np.ndarray:
    """One (3, H, W) float32 image of ``kind`` drawn from ``rng``."""
    bg = _background(BACKGROUNDS[rng.integers(len(BACKGROUNDS))])
    # a random crop of the background with the image's aspect ratio, resized to (H, W)
    scale = rng.uniform(0.5, 1.0) * min(bg.shape[0] / H, bg.shape[1] / W)
    ch, cw = int(H * scale), int(W * scale)
    y0, x0 = rng.integers(bg.shape[0] - ch + 1), rng.integers(bg.shape[1] - cw + 1)
    img = transform.resize(bg[y0:y0 + ch, x0:x0 + cw], (H, W), anti_aliasing=True)
    img = 0.5 + contrast * (img - 0.5)  # background contrast
    r = rng.uniform(0.22, 0.42) * min(H, W)
    # centred within half the free margin, so that a centre crop mostly keeps the shape
    cy = H / 2 + rng.uniform(-0.5, 0.5) * (H / 2 - r)
    cx = W / 2 + rng.uniform(-0.5, 0.5) * (W / 2 - r)
    mask = shape_mask(kind, H, W, cy, cx, r, angle=rng.uniform(-0.25, 0.25),
                      phase=rng.uniform(0, 2 * np.pi))
    colour = rng.uniform(0, 1, size=3)
    colour[rng.integers(3)] = rng.choice([0.0, 1.0])  # saturated: one channel at 0 or 1
    img[mask] = colour
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)


def make_synthetic(n_per_class: int = 50, *, classes=SHAPES, size_range=(32, 64),
                   background_contrast: float = 0.6, seed=0) -> ImageSet:
    """Draw ``n_per_class`` images of every class in ``classes``.

    Parameters
    ----------
    n_per_class : int
    classes : sequence of str
        A subset of :data:`SHAPES`.
    size_range : (int, int)
        Image height and width are drawn independently and uniformly from ``[lo, hi]``.
    background_contrast : float in [0, 1]
        Contrast of the photographic background around mid-grey (0: plain grey).
    seed : int or np.random.Generator

    Returns
    -------
    ImageSet with images (3, H, W) float32 in [0, 1], labels in ``range(len(classes))``,
    ordered class by class.
    """
    func = "make_synthetic"
    n_per_class = check_int(n_per_class, "n_per_class", func, minimum=0)
    classes = tuple(classes)
    bad = [c for c in classes if c not in SHAPES]
    if bad or not classes:
        raise ValueError(f"{func}: classes must be a non-empty subset of {SHAPES}, got {classes}")
    lo, hi = (check_int(v, "size_range", func, minimum=8) for v in size_range)
    if lo > hi:
        raise ValueError(f"{func}: size_range must be (lo, hi) with lo <= hi, got {size_range}")
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k, kind in enumerate(classes):
        for _ in range(n_per_class):
            H, W = rng.integers(lo, hi + 1, size=2)
            images.append(_one_image(kind, int(H), int(W), rng, background_contrast))
            labels.append(k)
    return ImageSet(images, np.array(labels, dtype=np.int64), classes)


def synthetic_splits(n_train: int = 120, n_val: int = 30, n_test: int = 50, *, classes=SHAPES,
                     size_range=(32, 64), background_contrast: float = 0.6,
                     seed=0) -> tuple[ImageSet, ImageSet, ImageSet]:
    """Seeded, disjoint train / val / test sets of the synthetic shapes (counts per class).

    The three parts are drawn from independent streams derived from ``seed``, so changing
    ``n_test`` never changes the training images.
    """
    streams = np.random.default_rng(seed).spawn(3)
    return tuple(make_synthetic(n, classes=classes, size_range=size_range, seed=rng,
                                background_contrast=background_contrast)
                 for n, rng in zip((n_train, n_val, n_test), streams))
