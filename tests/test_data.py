"""Loaders yield the documented shapes, dtypes and labels; transforms keep labels; seeds fix
everything; bad input raises clear errors."""

import os

import numpy as np
import pytest
import skimage.io

from tinyspp.data import (
    SHAPES,
    ImageFolder,
    ImageSet,
    center_crop,
    channel_stats,
    color_jitter,
    corner_crops,
    digits_splits,
    eval_views,
    hflip,
    make_digits,
    make_synthetic,
    normalize,
    resize_shorter,
    split,
    synthetic_splits,
    ten_views,
    train_batch,
    warp,
)


def _check_set(ds, C, num_classes):
    assert isinstance(ds, ImageSet)
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (len(ds),)
    assert ds.num_classes == num_classes
    assert set(ds.labels.tolist()) <= set(range(num_classes))
    for img in ds.images:
        assert img.dtype == np.float32 and img.ndim == 3 and img.shape[0] == C
        assert 0.0 <= img.min() and img.max() <= 1.0


def test_synthetic_shapes_labels_and_varied_sizes():
    ds = make_synthetic(4, size_range=(20, 40), seed=1)
    _check_set(ds, 3, len(SHAPES))
    assert np.bincount(ds.labels).tolist() == [4] * len(SHAPES)
    sizes = ds.sizes()
    assert all(20 <= h <= 40 and 20 <= w <= 40 for h, w in sizes)
    assert len({h / w for h, w in sizes}) > 5, "aspect ratios must vary"


def test_synthetic_is_deterministic_and_splits_are_disjoint():
    a = synthetic_splits(2, 1, 1, classes=("disk", "star"), seed=3)
    b = synthetic_splits(2, 1, 1, classes=("disk", "star"), seed=3)
    c = synthetic_splits(2, 1, 1, classes=("disk", "star"), seed=4)
    for x, y in zip(a, b):
        assert all(np.array_equal(i, j) for i, j in zip(x.images, y.images))
    assert not np.array_equal(a[0].images[0], c[0].images[0])
    train, val, test = a
    assert [len(train), len(val), len(test)] == [4, 2, 2]
    assert not any(np.array_equal(t, v) for t in train.images for v in val.images + test.images)


def test_synthetic_classes_differ_where_the_shape_is():
    # the same seed stream with a different class draws the same background but another shape
    disk = make_synthetic(1, classes=("disk",), seed=0).images[0]
    star = make_synthetic(1, classes=("star",), seed=0).images[0]
    assert disk.shape == star.shape and not np.array_equal(disk, star)


def test_digits_shapes_labels_and_splits():
    ds = make_digits(size_range=(12, 20), limit=50, seed=0)
    _check_set(ds, 1, 10)
    assert ds.labels.tolist()[:10] == list(range(10))  # load_digits order is kept
    train, val, test = digits_splits(size_range=(12, 16), limit=100, seed=0)
    assert len(train) + len(val) + len(test) == 100
    again = digits_splits(size_range=(12, 16), limit=100, seed=0)[0]
    assert all(np.array_equal(i, j) for i, j in zip(train.images, again.images))


def test_split_is_stratified_and_disjoint():
    ds = ImageSet([np.full((1, 2, 2), i / 20, np.float32) for i in range(20)],
                  np.repeat([0, 1], 10), ("a", "b"))
    a, b = split(ds, (0.5, 0.5), seed=0)
    assert np.bincount(a.labels).tolist() == [5, 5] == np.bincount(b.labels).tolist()
    values = {float(i[0, 0, 0]) for i in a.images} | {float(i[0, 0, 0]) for i in b.images}
    assert len(values) == 20
    with pytest.raises(ValueError, match="split: fractions"):
        split(ds, (0.5, 0.6))


def test_only_classes_relabels():
    ds = make_synthetic(2, classes=("disk", "square", "star"), size_range=(16, 20), seed=0)
    sub = ds.only_classes(("star", "disk"))
    assert sub.classes == ("star", "disk") and sub.labels.tolist() == [1, 1, 0, 0]
    with pytest.raises(ValueError, match="only_classes: unknown classes"):
        ds.only_classes(("heptagon",))


def test_imageset_rejects_bad_input():
    img = np.zeros((3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="ImageSet: got 1 images but 2 labels"):
        ImageSet([img], np.array([0, 0]), ("a",))
    with pytest.raises(ValueError, match="labels must lie in"):
        ImageSet([img], np.array([3]), ("a",))
    with pytest.raises(ValueError, match="same C"):
        ImageSet([img, img[:1]], np.array([0, 0]), ("a",))
    with pytest.raises(ValueError, match=r"images\[0\] must be 3-D"):
        ImageSet([img[0]], np.array([0]), ("a",))


def test_loaders_reject_bad_arguments():
    with pytest.raises(ValueError, match="make_synthetic: classes"):
        make_synthetic(1, classes=("heptagon",))
    with pytest.raises(ValueError, match="make_synthetic: size_range"):
        make_synthetic(1, size_range=(40, 20))
    with pytest.raises(TypeError, match="make_digits: size_range must be an integer"):
        make_digits(size_range=(12.5, 20))


def test_image_folder_reads_a_tree(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("cats", 2), ("dogs", 3)):
        os.makedirs(tmp_path / name)
        for i in range(n):
            pixels = rng.integers(0, 256, size=(10 + i, 14, 3), dtype=np.uint8)
            skimage.io.imsave(tmp_path / name / f"{i}.png", pixels, check_contrast=False)
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    ds = ImageFolder(str(tmp_path))
    _check_set(ds, 3, 2)
    assert ds.classes == ("cats", "dogs") and ds.labels.tolist() == [0, 0, 1, 1, 1]
    assert ds.sizes()[1] == (11, 14)
    pixels = skimage.io.imread(tmp_path / "cats" / "1.png")
    np.testing.assert_allclose(ds.images[1], pixels.transpose(2, 0, 1) / 255, atol=1e-6)
    grey = ImageFolder(str(tmp_path), channels=1, max_side=7)
    assert grey.channels == 1 and max(grey.sizes()[0]) == 7


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # imageio tries its plugins
def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="ImageFolder: root must be a folder"):
        ImageFolder(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolder(str(tmp_path))
    os.makedirs(tmp_path / "a")
    with pytest.raises(ValueError, match="no image files"):
        ImageFolder(str(tmp_path))
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read"):
        ImageFolder(str(tmp_path))


def test_transforms_shapes_and_geometry():
    img = np.arange(2 * 6 * 8, dtype=np.float32).reshape(2, 6, 8) / 96
    assert resize_shorter(img, 3).shape == (2, 3, 4)
    assert resize_shorter(img.transpose(0, 2, 1), 3).shape == (2, 4, 3)
    np.testing.assert_array_equal(center_crop(img, 4), img[:, 1:5, 2:6])
    tl, tr, bl, br = corner_crops(img, 4)
    np.testing.assert_array_equal(tl, img[:, :4, :4])
    np.testing.assert_array_equal(br, img[:, 2:, 4:])
    np.testing.assert_array_equal(hflip(img)[:, :, 0], img[:, :, -1])
    views = ten_views(img, 4)
    np.testing.assert_array_equal(views[5], hflip(views[0]))
    assert warp(img, 5).shape == (2, 5, 5)
    assert center_crop(img, 10).shape == (2, 10, 10)  # small images are enlarged first


def test_eval_views_and_batches():
    img = np.random.default_rng(0).random((3, 30, 45), dtype=np.float32)
    assert eval_views(img, 20, "center").shape == (1, 3, 20, 20)
    assert eval_views(img, 20, "multiview").shape == (10, 3, 20, 20)
    assert eval_views(img, 20, "full").shape == (1, 3, 20, 30)
    assert eval_views(img, 20, "warp").shape == (1, 3, 20, 20)
    with pytest.raises(ValueError, match="eval_views: view must be one of"):
        eval_views(img, 20, "zoom")
    a = train_batch([img, img[:, :20]], 16, np.random.default_rng(5), base=24)
    b = train_batch([img, img[:, :20]], 16, np.random.default_rng(5), base=24)
    assert a.shape == (2, 3, 16, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert 0 <= a.min() and a.max() <= 1


def test_color_jitter_and_normalize():
    img = np.random.default_rng(1).random((3, 8, 8), dtype=np.float32)
    out = color_jitter(img, np.random.default_rng(0), brightness=0.5)
    assert out.shape == img.shape and out.dtype == np.float32 and not np.array_equal(out, img)
    same = color_jitter(img, np.random.default_rng(0), brightness=0, contrast=0, saturation=0)
    np.testing.assert_allclose(same, img, atol=1e-6)
    mean, std = channel_stats([img, img * 0.5])
    assert mean.shape == (3,) and std.shape == (3,)
    x = normalize(np.stack([img, img * 0.5]), mean, std)
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-4)
    with pytest.raises(ValueError, match="normalize: mean and std need 3 channels"):
        normalize(x, mean[:1], std[:1])
