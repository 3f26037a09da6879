"""``ImageSet``: a list of images of varied sizes with integer labels.

Every loader in :mod:`tinyspp.data` returns an ``ImageSet``. Images are kept as a Python list
because their sizes differ (that is the point of SPP); each one is a float32 array of shape
``(C, H, W)`` with values in ``[0, 1]``. Labels are an int64 array of shape ``(N,)`` indexing
``classes``. Batches of one spatial size are made from it by :mod:`tinyspp.data.transforms`.

Examples
--------
>>> import numpy as np
>>> s = ImageSet([np.zeros((3, 4, 5), np.float32), np.ones((3, 6, 2), np.float32)],
...              np.array([0, 1]), ("a", "b"))
>>> len(s), s.sizes()
(2, [(4, 5), (6, 2)])
>>> s.subset([1]).labels
array([1])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..validate import check_array


@dataclass(frozen=True)
class ImageSet:
    """Images of varied sizes with their labels.

    Parameters
    ----------
    images : list of ndarray of shape (C, H, W), float32 in [0, 1]
        One array per image; ``C`` is the same for all, ``H`` and ``W`` vary.
    labels : ndarray of shape (N,), int64
        Class index of each image, in ``range(len(classes))``.
    classes : tuple of str
        Class names; ``classes[labels[i]]`` names image ``i``.
    """

    images: list
    labels: np.ndarray
    classes: tuple

    def __post_init__(self):
        func = "ImageSet"
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"{func}: labels must be a 1-D integer array, got {labels.dtype} "
                            f"of shape {labels.shape}")
        if len(self.images) != len(labels):
            raise ValueError(f"{func}: got {len(self.images)} images but {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise ValueError(f"{func}: labels must lie in [0, {len(self.classes)}), "
                             f"got range [{labels.min()}, {labels.max()}]")
        channels = set()
        for i, img in enumerate(self.images):
            check_array(img, f"images[{i}]", func, ndim=3, layout="(C, H, W)")
            channels.add(img.shape[0])
        if len(channels) > 1:
            raise ValueError(f"{func}: all images must have the same C, got {sorted(channels)}")
        object.__setattr__(self, "labels", labels.astype(np.int64))
        object.__setattr__(self, "classes", tuple(self.classes))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        """``(image, label)`` of image ``i``."""
        return self.images[i], int(self.labels[i])

    @property
    def channels(self) -> int:
        """``C`` of every image (0 for an empty set)."""
        return self.images[0].shape[0] if self.images else 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def sizes(self) -> list[tuple[int, int]]:
        """``(H, W)`` of every image."""
        return [tuple(img.shape[1:]) for img in self.images]

    def subset(self, index) -> ImageSet:
        """The images at ``index`` (ints or a boolean mask), same class list."""
        index = np.arange(len(self))[np.asarray(index)] if len(self) else np.zeros(0, int)
        return ImageSet([self.images[i] for i in index], self.labels[index], self.classes)

    def only_classes(self, keep) -> ImageSet:
        """The images of the classes named in ``keep``, relabelled ``0 .. len(keep)-1``."""
        keep = tuple(keep)
        missing = [c for c in keep if c not in self.classes]
        if missing:
            raise ValueError(f"ImageSet.only_classes: unknown classes {missing}; "
                             f"have {self.classes}")
        old = np.array([self.classes.index(c) for c in keep])
        mask = np.isin(self.labels, old)
        new_label = {o: n for n, o in enumerate(old)}
        labels = np.array([new_label[v] for v in self.labels[mask]], dtype=np.int64)
        return ImageSet([img for img, m in zip(self.images, mask) if m], labels, keep)


def split(dataset: ImageSet, fractions=(0.7, 0.15, 0.15), *, seed=0) -> tuple[ImageSet, ...]:
    """Split ``dataset`` into disjoint parts, stratified by class, deterministically by ``seed``.

    Parameters
    ----------
    dataset : ImageSet
    fractions : sequence of float
        Fraction of each class that goes into each part (e.g. train, val, test); must sum to 1.
    seed : int or np.random.Generator

    Returns
    -------
    tuple of ImageSet, one per fraction.
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.ndim != 1 or len(fractions) < 1 or (fractions < 0).any() \
            or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"split: fractions must be non-negative and sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts = [[] for _ in fractions]
    for k in range(dataset.num_classes):
        idx = rng.permutation(np.flatnonzero(dataset.labels == k))
        cuts = np.round(np.cumsum(fractions)[:-1] * len(idx)).astype(int)
        for part, chunk in zip(parts, np.split(idx, cuts)):
            part.extend(chunk.tolist())
    return tuple(dataset.subset(np.sort(np.array(p, dtype=int))) for p in parts)
