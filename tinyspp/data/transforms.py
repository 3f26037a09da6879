"""Image transforms with scikit-image, and batches of one spatial size.

Images are float32 arrays of shape ``(C, H, W)`` in ``[0, 1]``; every function here returns the
same kind of array, so labels never change (a transform maps one image to one image, or to a fixed
list of views of it). Networks see batches ``(N, C, s, s)`` built by :func:`train_batch` (random
crop + flip + colour jitter, the training augmentation) or :func:`eval_views` (centre crop,
10 views, the full image at its own aspect ratio, or a warp), then :func:`normalize`\\ d with the
per-channel mean and standard deviation of the training set (:func:`channel_stats`).

Examples
--------
>>> import numpy as np
>>> img = np.random.default_rng(0).random((3, 40, 60), dtype=np.float32)
>>> resize_shorter(img, 20).shape
(3, 20, 30)
>>> center_crop(img, 32).shape, len(ten_views(img, 32))
((3, 32, 32), 10)
>>> train_batch([img, img], 24, rng=np.random.default_rng(0)).shape
(2, 3, 24, 24)
"""

from __future__ import annotations

import numpy as np
from skimage import transform

from ..validate import check_array, check_choice, check_int

VIEWS = ("center", "multiview", "full", "warp")


def _check_image(img, func: str):
    return check_array(img, "img", func, ndim=3, layout="(C, H, W)")


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a (C, H, W) image to (C, height, width), anti-aliased when shrinking."""
    C, H, W = _check_image(img, "resize")
    if (H, W) == (height, width):
        return img
    shrink = height < H or width < W
    out = transform.resize(img, (C, height, width), order=1, anti_aliasing=shrink,
                           preserve_range=True)
    return out.astype(img.dtype, copy=False)


def resize_shorter(img: np.ndarray, s: int) -> np.ndarray:
    """Resize so the shorter side is ``s``, keeping the aspect ratio: (C, H, W) -> (C, h, w)."""
    C, H, W = _check_image(img, "resize_shorter")
    s = check_int(s, "s", "resize_shorter")
    if H <= W:
        return resize(img, s, max(s, round(W * s / H)))
    return resize(img, max(s, round(H * s / W)), s)


def warp(img: np.ndarray, size: int) -> np.ndarray:
    """Resize to (C, size, size) ignoring the aspect ratio (R-CNN's "warp")."""
    return resize(img, size, size)


def crop(img: np.ndarray, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """The window ``[y0, y0+h) x [x0, x0+w)`` of a (C, H, W) image."""
    C, H, W = _check_image(img, "crop")
    if y0 < 0 or x0 < 0 or y0 + h > H or x0 + w > W:
        raise ValueError(f"crop: window y0={y0}, x0={x0}, h={h}, w={w} does not fit in "
                         f"an image of H={H}, W={W}")
    return img[:, y0:y0 + h, x0:x0 + w]


def _fit(img: np.ndarray, size: int) -> np.ndarray:
    """Upsample so both sides are at least ``size`` (no-op for large enough images)."""
    C, H, W = img.shape
    return img if min(H, W) >= size else resize_shorter(img, size)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The central (C, size, size) window (the image is first enlarged if it is smaller)."""
    img = _fit(img, check_int(size, "size", "center_crop"))
    C, H, W = img.shape
    return crop(img, (H - size) // 2, (W - size) // 2, size, size)


def corner_crops(img: np.ndarray, size: int) -> list[np.ndarray]:
    """The four corner (C, size, size) windows: top-left, top-right, bottom-left, bottom-right."""
    img = _fit(img, check_int(size, "size", "corner_crops"))
    C, H, W = img.shape
    return [crop(img, y, x, size, size) for y in (0, H - size) for x in (0, W - size)]


def hflip(img: np.ndarray) -> np.ndarray:
    """Mirror left-right."""
    _check_image(img, "hflip")
    return img[:, :, ::-1]


def ten_views(img: np.ndarray, size: int) -> list[np.ndarray]:
    """Centre + four corners, each also flipped: the paper's 10-view test (Sec. 3.1)."""
    views = [center_crop(img, size), *corner_crops(img, size)]
    return views + [hflip(v) for v in views]


def color_jitter(img: np.ndarray, rng: np.random.Generator, *, brightness: float = 0.2,
                 contrast: float = 0.2, saturation: float = 0.2) -> np.ndarray:
    """Random brightness, contrast and (colour images) saturation factors in ``1 +- amount``.

    Brightness scales the image, contrast scales the deviation from its mean, saturation the
    deviation from its grey value; the result is clipped back to [0, 1].
    """
    _check_image(img, "color_jitter")
    b, c, s = (1 + rng.uniform(-a, a) for a in (brightness, contrast, saturation))
    out = img * b
    out = out.mean() + c * (out - out.mean())
    if img.shape[0] == 3:
        grey = out.mean(axis=0, keepdims=True)
        out = grey + s * (out - grey)
    return np.clip(out, 0, 1).astype(img.dtype, copy=False)


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator, *,
                scale=(1.0, 1.15)) -> np.ndarray:
    """Resize the shorter side to ``size * u`` with ``u ~ U(scale)``, then a random size x size
    window."""
    s = max(size, round(size * rng.uniform(*scale)))
    img = resize_shorter(img, s)
    C, H, W = img.shape
    return crop(img, int(rng.integers(H - size + 1)), int(rng.integers(W - size + 1)), size, size)


def train_batch(images, size: int, rng: np.random.Generator, *, base: int | None = None,
                flip: bool = True, jitter: float = 0.1, scale=(1.0, 1.15)) -> np.ndarray:
    """An augmented training batch (N, C, size, size) float32 in [0, 1].

    Each image gets a random ``base x base`` crop (:func:`random_crop`), a random horizontal flip
    and colour jitter, and is then resized to ``size``. With ``base`` the largest training size,
    the smaller sizes of multi-size training see the SAME content at a lower resolution -- the
    paper's 180 network sees the 224 crop resized (Sec. 2.4).
    """
    size = check_int(size, "size", "train_batch")
    base = size if base is None else check_int(base, "base", "train_batch")
    out = []
    for img in images:
        v = random_crop(img, base, rng, scale=scale)
        if flip and rng.random() < 0.5:
            v = hflip(v)
        if jitter:
            v = color_jitter(v, rng, brightness=jitter, contrast=jitter, saturation=jitter)
        out.append(resize(v, size, size))
    return np.stack(out).astype(np.float32, copy=False)


def eval_views(img: np.ndarray, size: int, view: str = "center") -> np.ndarray:
    """Test-time views of one image as a batch (V, C, h, w).

    ``view`` is ``"center"`` (V=1, the central crop after resizing the shorter side to
    ``size``), ``"multiview"`` (V=10, :func:`ten_views` of that resized image), ``"full"``
    (V=1, the whole image with shorter side ``size`` at its own aspect ratio; only an SPP net
    accepts it) or ``"warp"`` (V=1, the whole image squeezed to size x size).
    """
    check_choice(view, "view", "eval_views", VIEWS)
    size = check_int(size, "size", "eval_views")
    if view == "warp":
        return warp(img, size)[None]
    img = resize_shorter(img, size)
    if view == "full":
        return img[None]
    if view == "center":
        return center_crop(img, size)[None]
    return np.stack(ten_views(img, size))


def channel_stats(images) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation (C,) over all pixels of all images."""
    C = images[0].shape[0]
    flat = np.concatenate([img.reshape(C, -1) for img in images], axis=1)
    return flat.mean(axis=1).astype(np.float32), flat.std(axis=1).astype(np.float32) + 1e-6


def normalize(x, mean, std):
    """``(x - mean) / std`` per channel for a batch (N, C, H, W); NumPy or CuPy."""
    check_array(x, "x", "normalize", ndim=4, layout="(N, C, H, W)")
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    if mean.shape[1] != x.shape[1] or std.shape[1] != x.shape[1]:
        raise ValueError(f"normalize: mean and std need {x.shape[1]} channels, got "
                         f"{mean.shape[1]} and {std.shape[1]}")
    return ((x - mean) / std).astype(x.dtype, copy=False)
