"""Datasets (images of varied sizes) and scikit-image transforms.

Every loader returns an :class:`ImageSet`: a list of float32 ``(C, H, W)`` images in ``[0, 1]``
with int64 labels. Batches of one spatial size come from :mod:`tinyspp.data.transforms`.
"""

from .dataset import ImageSet, split
from .digits import digits_splits, make_digits
from .folder import ImageFolder, read_image
from .synthetic import SHAPES, make_synthetic, synthetic_splits
from .transforms import (
    VIEWS,
    center_crop,
    channel_stats,
    color_jitter,
    corner_crops,
    eval_views,
    hflip,
    normalize,
    resize,
    resize_shorter,
    ten_views,
    train_batch,
    warp,
)

__all__ = [
    "ImageSet", "split", "digits_splits", "make_digits", "ImageFolder", "read_image", "SHAPES",
    "make_synthetic", "synthetic_splits", "VIEWS", "center_crop", "channel_stats",
    "color_jitter", "corner_crops", "eval_views", "hflip", "normalize", "resize",
    "resize_shorter", "ten_views", "train_batch", "warp",
]
