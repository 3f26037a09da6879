"""``ImageFolder``: a ``root/<class>/<image>`` tree (the Caltech-101 layout) read with skimage.io.

Class names are the sub-folder names in sorted order; every file whose extension is in
``EXTENSIONS`` is read with :func:`skimage.io.imread`, converted to float32 ``(C, H, W)`` in
``[0, 1]`` (grey images get ``C = 1``, or are repeated to 3 channels with ``channels=3``; an alpha
channel is dropped). ``max_side`` shrinks large images so that training stays small.

Examples
--------
>>> import tempfile, os, numpy as np, skimage.io
>>> root = tempfile.mkdtemp()
>>> os.makedirs(os.path.join(root, "cat"))
>>> skimage.io.imsave(os.path.join(root, "cat", "a.png"), np.zeros((5, 7, 3), np.uint8),
...                   check_contrast=False)
>>> ds = ImageFolder(root)
>>> ds.classes, ds.images[0].shape
(('cat',), (3, 5, 7))
"""

from __future__ import annotations

import os

import numpy as np
from skimage import io, transform
from skimage.color import gray2rgb
from skimage.util import img_as_float32

from ..validate import check_choice
from .dataset import ImageSet

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")


def read_image(path: str, *, channels: int | None = None, max_side: int | None = None):
    """One image file as float32 (C, H, W) in [0, 1].

    Parameters
    ----------
    path : str
    channels : {None, 1, 3}
        None keeps grey images at C = 1 and colour images at C = 3; 1 or 3 forces it.
    max_side : int, optional
        Shrink (keeping the aspect ratio) so that max(H, W) <= max_side.
    """
    check_choice(channels, "channels", "read_image", (None, 1, 3))
    img = img_as_float32(io.imread(path))
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]  # drop alpha
    if img.ndim == 2 and channels == 3:
        img = gray2rgb(img)
    elif img.ndim == 3 and channels == 1:
        img = img @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)  # ITU-R 709 luma
    if max_side is not None and max(img.shape[:2]) > max_side:
        scale = max_side / max(img.shape[:2])
        out = (max(1, round(img.shape[0] * scale)), max(1, round(img.shape[1] * scale)))
        img = transform.resize(img, out + img.shape[2:], anti_aliasing=True)
    img = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
    return np.ascontiguousarray(img, dtype=np.float32)


def ImageFolder(root: str, *, channels: int | None = None,
                max_side: int | None = None) -> ImageSet:
    """Read every image under ``root/<class>/`` into an :class:`ImageSet`.

    Parameters
    ----------
    root : str
        A folder with one sub-folder per class.
    channels : {None, 1, 3}
        See :func:`read_image`. With None, mixing grey and colour images is an error.
    max_side : int, optional
        See :func:`read_image`.

    Raises
    ------
    FileNotFoundError if ``root`` is not a folder; ValueError if it has no class folder or no
    image, or a file cannot be read as an image.
    """
    func = "ImageFolder"
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{func}: root must be a folder, got {root!r}")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise ValueError(f"{func}: {root!r} has no class sub-folders (expected root/<class>/<img>)")
    images, labels = [], []
    for k, name in enumerate(classes):
        folder = os.path.join(root, name)
        for fname in sorted(os.listdir(folder)):
            if not fname.lower().endswith(EXTENSIONS):
                continue
            path = os.path.join(folder, fname)
            try:
                images.append(read_image(path, channels=channels, max_side=max_side))
            except Exception as exc:  # a corrupt or non-image file: say which one
                raise ValueError(f"{func}: cannot read {path!r} as an image ({exc})") from exc
            labels.append(k)
    if not images:
        raise ValueError(f"{func}: no image files with extensions {EXTENSIONS} under {root!r}")
    found = sorted({img.shape[0] for img in images})
    if len(found) > 1:
        raise ValueError(f"{func}: found both grey and colour images under {root!r}; "
                         "pass channels=1 or channels=3")
    return ImageSet(images, np.array(labels, dtype=np.int64), tuple(classes))
