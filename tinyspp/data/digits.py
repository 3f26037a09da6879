"""scikit-learn's handwritten digits, up-sampled to varied sizes and aspect ratios.

``sklearn.datasets.load_digits`` holds 1,797 real 8x8 grey images (values 0..16) of the digits
0-9; it ships with scikit-learn, nothing is downloaded. Each image is scaled to ``[0, 1]``,
resized with :func:`skimage.transform.resize` to a height and width drawn independently from
``size_range`` (so the aspect ratio varies) and placed on a black canvas with a random margin of
up to ``margin`` of its size on each side.

Images are float32 ``(1, H, W)`` in ``[0, 1]``; labels are the digits themselves.

Examples
--------
>>> train, val, test = digits_splits(fractions=(0.6, 0.2, 0.2), size_range=(16, 24), seed=0)
>>> len(train) + len(val) + len(test), train.channels, train.classes[:3]
(1797, 1, ('0', '1', '2'))
"""

from __future__ import annotations

import numpy as np
from skimage import transform

from ..validate import check_int
from .dataset import ImageSet, split


def make_digits(*, size_range=(24, 48), margin: float = 0.15, seed=0,
                limit: int | None = None) -> ImageSet:
    """All digits (or the first ``limit``) as varied-size (1, H, W) float32 images in [0, 1].

    Parameters
    ----------
    size_range : (int, int)
        Height and width of the resized digit, each drawn uniformly from ``[lo, hi]``.
    margin : float
        Each side gets a black border of up to ``margin`` times the digit's size (random).
    seed : int or np.random.Generator
    limit : int, optional
        Use only the first ``limit`` digits (for quick runs).
    """
    func = "make_digits"
    lo, hi = (check_int(v, "size_range", func, minimum=4) for v in size_range)
    if lo > hi:
        raise ValueError(f"{func}: size_range must be (lo, hi) with lo <= hi, got {size_range}")
    if not 0 <= margin <= 1:
        raise ValueError(f"{func}: margin must be in [0, 1], got {margin}")
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    digits = load_digits()
    x, y = digits.images / 16.0, digits.target
    if limit is not None:
        limit = check_int(limit, "limit", func)
        x, y = x[:limit], y[:limit]
    rng = np.random.default_rng(seed)
    images = []
    for img in x:
        h, w = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        big = transform.resize(img, (h, w), order=1, anti_aliasing=False)
        top, bottom = (int(v) for v in rng.integers(0, int(margin * h) + 1, size=2))
        left, right = (int(v) for v in rng.integers(0, int(margin * w) + 1, size=2))
        canvas = np.pad(big, ((top, bottom), (left, right)))
        images.append(np.clip(canvas, 0, 1).astype(np.float32)[None])
    return ImageSet(images, y.astype(np.int64), tuple(str(d) for d in range(10)))


def digits_splits(fractions=(0.6, 0.2, 0.2), *, size_range=(24, 48), margin: float = 0.15,
                  seed=0, limit: int | None = None) -> tuple[ImageSet, ...]:
    """Seeded, class-stratified train / val / test parts of :func:`make_digits`."""
    return split(make_digits(size_range=size_range, margin=margin, seed=seed, limit=limit),
                 fractions, seed=seed)
