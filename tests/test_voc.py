"""The VOC reader and writer (tinyspp.detect.voc) and the image convention (as_image).

Most reader tests run on tests/fixtures/voc: real photographs from skimage.data in VOC2007
layout with hand-written annotations (see its README and make_fixture.py).
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
from checks import raises_exactly
from hypothesis import given
from hypothesis import strategies as st

from tinyspp.detect.data import as_image, load_voc, make_detection_set
from tinyspp.detect.evaluate import evaluate_detections
from tinyspp.detect.voc import (
    VOC_CLASSES,
    LazyImages,
    VOCDataset,
    parse_voc_annotation,
    write_voc,
)

FIXTURE = Path(__file__).parent / "fixtures" / "voc"




# ---------------------------------------------------------------- images in any encoding
def _picture():
    return np.random.default_rng(0).integers(0, 256, (7, 9, 3)).astype(np.uint8)


def test_as_image_gives_the_same_pixels_for_every_encoding():
    u8 = _picture()
    want = as_image(u8)
    assert want.shape == (7, 9, 3) and want.dtype == np.float32 and want.flags.c_contiguous
    np.testing.assert_array_equal(want, (u8 / 255).astype(np.float32))
    same = {
        "uint16": u8.astype(np.uint16) * 257,
        "float64": u8 / 255.0,
        "rgba opaque": np.dstack([u8, np.full(u8.shape[:2], 255, np.uint8)]),
        "rgba float": np.dstack([u8 / 255.0, np.ones(u8.shape[:2])]),
        "non-contiguous": np.asfortranarray(u8),
    }
    for what, img in same.items():
        np.testing.assert_array_equal(as_image(img), want, err_msg=what)
    f32 = want.copy()
    assert as_image(f32) is f32                      # already the convention: not copied
    grey = u8[..., 0]
    for img in (grey, grey[..., None], grey.astype(np.uint16) * 257,
                np.dstack([grey, np.full(grey.shape, 255, np.uint8)])):
        out = as_image(img)
        assert out.shape == (7, 9, 3)
        for c in range(3):
            np.testing.assert_array_equal(out[..., c], want[..., 0])
    # transparency is composited on white; bool images are 0 / 1
    rgba = np.dstack([u8, np.zeros(u8.shape[:2], np.uint8)])
    np.testing.assert_array_equal(as_image(rgba), 1.0)
    mask = np.eye(4, dtype=bool)
    np.testing.assert_array_equal(as_image(mask)[..., 1], mask.astype(np.float32))


@given(st.integers(1, 6), st.integers(1, 6), st.sampled_from([0, 1, 3, 4]),
       st.integers(0, 2**31 - 1))
def test_as_image_encodings_agree_on_drawn_pictures(H, W, C, seed):
    rng = np.random.default_rng(seed)
    u8 = rng.integers(0, 256, (H, W) if C == 0 else (H, W, C)).astype(np.uint8)
    if C == 4:
        u8[..., 3] = 255                                  # opaque: alpha changes nothing
    want = as_image(u8)
    assert want.shape == (H, W, 3) and want.dtype == np.float32
    np.testing.assert_array_equal(as_image(u8.astype(np.uint16) * 257), want)
    np.testing.assert_array_equal(as_image(u8 / 255.0), want)
    rgb = u8[..., :3] if C in (3, 4) else np.repeat(u8.reshape(H, W, 1), 3, axis=2)
    np.testing.assert_array_equal(want, (rgb / 255).astype(np.float32))


@pytest.mark.parametrize("image, exc, message", [
    ([[0, 1], [1, 0]], TypeError, "f: img must be a numpy ndarray of shape (H, W), (H, W, 3) "
                                  "or (H, W, 4), got list"),
    (np.zeros((3, 8, 8), np.uint8), ValueError, "f: img must have shape (H, W) grey, (H, W, 3) "
     "RGB or (H, W, 4) RGBA, got shape (3, 8, 8) (channels first? detection images are "
     "(H, W, C))"),
    (np.zeros((8, 8, 5), np.uint8), ValueError, "f: img must have shape (H, W) grey, (H, W, 3) "
     "RGB or (H, W, 4) RGBA, got shape (8, 8, 5)"),
    (np.zeros((2, 8, 8, 3), np.uint8), ValueError, "f: img must have shape (H, W) grey, "
     "(H, W, 3) RGB or (H, W, 4) RGBA, got shape (2, 8, 8, 3)"),
    (np.zeros(8, np.uint8), ValueError, "f: img must have shape (H, W) grey, (H, W, 3) RGB or "
     "(H, W, 4) RGBA, got shape (8,)"),
    (np.zeros((0, 8, 3), np.uint8), ValueError, "f: img must not be empty, got shape (0, 8, 3)"),
    (np.full((4, 4, 3), 255.0), ValueError, "f: img is a float image with values in [255, 255]; "
     "float images must lie in [0, 1] (divide 0-255 values by 255, or pass them as uint8)"),
    (np.full((4, 4), -0.5, np.float32), ValueError, "f: img is a float image with values in "
     "[-0.5, -0.5]; float images must lie in [0, 1] (divide 0-255 values by 255, or pass them "
     "as uint8)"),
    (np.full((4, 4, 3), np.nan), ValueError, "f: img has NaN or infinite values"),
    (np.zeros((4, 4, 3), np.int64), TypeError, "f: img must have dtype uint8 (0-255), uint16 "
     "(0-65535), bool or float in [0, 1], got int64"),
    (np.zeros((4, 4, 3), np.uint32), TypeError, "f: img must have dtype uint8 (0-255), uint16 "
     "(0-65535), bool or float in [0, 1], got uint32"),
    (np.zeros((4, 4, 3), object), TypeError, "f: img must have dtype uint8 (0-255), uint16 "
     "(0-65535), bool or float in [0, 1], got object"),
])
def test_as_image_rejects_what_is_not_an_image(image, exc, message):
    with raises_exactly(exc, message):
        as_image(image, name="img", func="f")


# ---------------------------------------------------------------- a folder written in tests
def _tiny_folder(tmp_path):
    from skimage import io

    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    img = np.zeros((20, 30, 3), dtype=np.uint8)
    img[5:10, 2:12] = 255
    io.imsave(tmp_path / "JPEGImages" / "000001.jpg", img, check_contrast=False)
    io.imsave(tmp_path / "JPEGImages" / "000002.jpg", img[..., 0], check_contrast=False)
    obj = ("<object><name>{}</name><difficult>{}</difficult><bndbox><xmin>{}</xmin>"
           "<ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>")
    (tmp_path / "Annotations" / "000001.xml").write_text(
        "<annotation><filename>000001.jpg</filename>" + obj.format("dog", 0, 3, 6, 12, 10)
        + obj.format("cat", 1, 1, 1, 4, 4) + obj.format("cat", 0, 1, 1, 30, 20)
        + "</annotation>")
    (tmp_path / "Annotations" / "000002.xml").write_text(
        "<annotation>" + obj.format("dog", 0, 1, 1, 5, 5) + "</annotation>")
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("000002\n")
    return tmp_path


def test_voc_loader_reads_a_tiny_folder(tmp_path):
    root = _tiny_folder(tmp_path)
    ds = load_voc(root)
    assert isinstance(ds, VOCDataset) and isinstance(ds.images, LazyImages)
    assert ds.class_names == ("cat", "dog")
    assert len(ds.images) == 2 and ds.images[0].shape == (20, 30, 3)
    assert ds.images[1].shape == (20, 30, 3) and ds.images[0].dtype == np.float32
    # 1-based inclusive VOC corners -> [xmin - 1, ymin - 1, xmax, ymax]; the difficult object
    # is kept and flagged
    np.testing.assert_array_equal(ds.boxes[0], [[2, 5, 12, 10], [0, 0, 4, 4], [0, 0, 30, 20]])
    np.testing.assert_array_equal(ds.labels[0], [1, 0, 0])
    np.testing.assert_array_equal(ds.difficult[0], [False, True, False])
    dropped = load_voc(root, keep_difficult=False)
    np.testing.assert_array_equal(dropped.boxes[0], [[2, 5, 12, 10], [0, 0, 30, 20]])
    np.testing.assert_array_equal(dropped.labels[0], [1, 0])
    val = load_voc(root, split="val", class_names=["dog"])
    assert len(val.images) == 1 and val.labels[0].tolist() == [0]
    with pytest.raises(FileNotFoundError, match="VOCDataset"):
        load_voc(root / "nowhere")


# ---------------------------------------------------------------- write_voc
def test_write_voc_round_trip(tmp_path):
    syn = make_detection_set(4, seed=3, size_range=(40, 56))
    syn.difficult[1][0] = True
    ids = write_voc(syn, tmp_path / "voc", splits={"train": [0, 1, 2], "test": [3]})
    assert ids == ["000001", "000002", "000003", "000004"]
    assert (tmp_path / "voc" / "ImageSets" / "Main" / "test.txt").read_text() == "000004\n"
    back = VOCDataset(tmp_path / "voc", class_names=syn.class_names)
    assert back.ids == tuple(ids)
    for k in range(4):
        np.testing.assert_array_equal(back.boxes[k], syn.boxes[k])
        np.testing.assert_array_equal(back.labels[k], syn.labels[k])
        np.testing.assert_array_equal(back.difficult[k], syn.difficult[k])
        img = back.images[k]
        assert img.shape == syn.images[k].shape
        assert np.abs(img - syn.images[k]).max() <= 0.5 / 255 + 1e-6      # 8-bit PNG
    assert len(VOCDataset(tmp_path / "voc", "train")) == 3
    # a VOC data set can be written again (lazily), as JPEG
    write_voc(back, tmp_path / "again", image_format="jpg")
    again = VOCDataset(tmp_path / "again", "trainval", class_names=syn.class_names)
    assert again.image_paths[0].endswith("000001.jpg")
    np.testing.assert_array_equal(again.boxes[2], syn.boxes[2])
    assert np.abs(again.images[0] - syn.images[0]).mean() < 0.05            # lossy
    # nothing is overwritten unless asked
    before = (tmp_path / "voc" / "Annotations" / "000001.xml").read_text()
    with raises_exactly(FileExistsError, f"write_voc: {tmp_path / 'voc' / 'Annotations'}"
                        "/000001.xml exists (and 9 more of the files to write); pass "
                        "overwrite=True to replace them"):
        write_voc(syn, tmp_path / "voc", splits={"train": [0, 1, 2], "test": [3]})
    assert (tmp_path / "voc" / "Annotations" / "000001.xml").read_text() == before
    write_voc(syn, tmp_path / "voc", overwrite=True)


@given(objects=st.lists(st.tuples(st.integers(0, 43), st.integers(0, 31), st.integers(1, 10),
                                  st.integers(1, 10), st.integers(0, 2), st.booleans()),
                        max_size=5),
       seed=st.integers(0, 2**31 - 1))
def test_write_then_read_gives_back_every_drawn_box(objects, seed, tmp_path_factory):
    # whole-pixel boxes anywhere in a 32 x 44 image, touching the borders included
    H, W = 32, 44
    boxes = np.array([[x, y, min(x + w, W), min(y + h, H)] for x, y, w, h, _, _ in objects],
                     dtype=np.float64).reshape(-1, 4)
    labels = np.array([c for *_, c, _ in objects], dtype=np.int64)
    diff = np.array([d for *_, d in objects], dtype=bool)
    image = np.random.default_rng(seed).random((H, W, 3)).astype(np.float32)
    syn = make_detection_set(0)._replace(images=[image], boxes=[boxes], labels=[labels],
                                         difficult=[diff], class_names=("a", "b", "c"))
    root = tmp_path_factory.mktemp("voc")
    write_voc(syn, root)
    back = VOCDataset(root, "trainval", class_names=("a", "b", "c"))
    np.testing.assert_array_equal(back.boxes[0], boxes)
    np.testing.assert_array_equal(back.labels[0], labels)
    np.testing.assert_array_equal(back.difficult[0], diff)
    pixels = np.round(image * 255).astype(np.uint8)                 # 8-bit PNG
    np.testing.assert_array_equal(back.images[0], (pixels / 255).astype(np.float32))


def test_write_voc_bad_input(tmp_path):
    syn = make_detection_set(2, seed=1, size_range=(40, 48))
    with raises_exactly(ValueError, "write_voc: image_format must be 'png' or 'jpg', got 'gif'"):
        write_voc(syn, tmp_path, image_format="gif")
    with raises_exactly(TypeError, "write_voc: dataset must have images, boxes, labels and "
                        "class_names (a DetectionSet or VOCDataset); list has no images"):
        write_voc([1, 2], tmp_path)
    with raises_exactly(ValueError, "write_voc: split 'test' must list image indices in 0 .. 1, "
                        "got 2"):
        write_voc(syn, tmp_path, splits={"test": [2]})
    with raises_exactly(ValueError, "write_voc: ids must be 2 distinct names, got 2 "
                        "(1 distinct)"):
        write_voc(syn, tmp_path, ids=["a", "a"])
    frac = syn._replace(boxes=[syn.boxes[0] + 0.5, syn.boxes[1]])
    with pytest.raises(ValueError, match=r"write_voc: dataset.boxes\[0\] row 0 is .*whole "
                                         r"pixels"):
        write_voc(frac, tmp_path)
    bad = syn._replace(labels=[syn.labels[0] + 10, syn.labels[1]])
    with pytest.raises(ValueError, match=r"write_voc: dataset.labels\[0\] holds 1\d, not a "
                                         r"class index 0 .. 3"):
        write_voc(bad, tmp_path)
    assert not (tmp_path / "Annotations").exists()          # checked before anything is written


# ---------------------------------------------------------------- evaluation with difficult
def test_ground_truth_carries_difficult_flags_to_evaluation(tmp_path):
    ds = load_voc(_tiny_folder(tmp_path))
    gt = ds.ground_truth()
    assert len(gt) == 2 and len(gt[0]) == 3 and gt[0][2].tolist() == [False, True, False]
    # a detection on the difficult cat is ignored, not a false positive
    dets = [(np.array([[0, 0, 4, 4], [0, 0, 30, 20], [2, 5, 12, 10]], dtype=float),
             np.array([0.9, 0.8, 0.7]), np.array([0, 0, 1])),
            (np.array([[0, 0, 5, 5]], dtype=float), np.array([0.6]), np.array([1]))]
    res = evaluate_detections(dets, gt, len(ds.class_names))
    np.testing.assert_array_equal(res["ap"], [1.0, 1.0])
    assert res["curves"][0].n_ignored == 1
    syn = make_detection_set(2, seed=0, size_range=(40, 48))
    assert all(len(g) == 3 and not g[2].any() for g in syn.ground_truth())


def test_voc_classes_are_the_devkits_twenty():
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane"
    assert VOC_CLASSES[-1] == "tvmonitor" and list(VOC_CLASSES) == sorted(VOC_CLASSES)
    assert parse_voc_annotation  # the per-file reader is public (used below on the fixture)


def test_lazy_images_read_one_at_a_time(tmp_path, monkeypatch):
    from skimage import io

    root = _tiny_folder(tmp_path)
    calls = []
    real = io.imread
    monkeypatch.setattr(io, "imread", lambda path, *a, **k: calls.append(path) or real(path))
    ds = VOCDataset(root)
    assert calls == []                                     # nothing read at construction
    sample = ds[1]
    assert len(calls) == 1 and calls[0].endswith("000002.jpg")
    assert sample.image.shape == (20, 30, 3) and sample.labels.tolist() == [1]
    assert [s.boxes.shape[0] for s in ds] == [3, 1] and len(calls) == 3
    assert len(ds.images[-1:]) == 1 and len(calls) == 4
    with pytest.raises(IndexError):
        ds[2]
    image, boxes, labels, difficult = ds[0]               # the sample unpacks as four arrays
    assert difficult.dtype == bool and boxes.shape == (3, 4)




# ---------------------------------------------------------------- the real-photograph fixture
def test_fixture_splits_and_classes():
    ds = VOCDataset(FIXTURE)
    assert ds.ids == tuple(f"{k:06d}" for k in range(1, 12))
    assert ds.class_names == ("cat", "coin", "cup", "horse", "motorbike", "person", "rocket")
    split = {s: VOCDataset(FIXTURE, s).ids for s in ("train", "val", "trainval", "test")}
    assert split["train"] == ("000001", "000002", "000006", "000007")
    assert tuple(sorted(split["train"] + split["val"])) == split["trainval"]
    assert not set(split["trainval"]) & set(split["test"])
    assert set(split["trainval"]) | set(split["test"]) == set(ds.ids)
    assert VOCDataset(FIXTURE, "test", max_images=2).ids == ("000008", "000009")


def test_fixture_boxes_are_the_annotations_minus_one_at_the_top_left():
    ds = VOCDataset(FIXTURE, class_names=("person", "rocket"))
    # 000001.xml: person 16 9 142 200, rocket 139 1 178 110 (1-based inclusive pixels)
    np.testing.assert_array_equal(ds.boxes[0], [[15, 8, 142, 200], [138, 0, 178, 110]])
    np.testing.assert_array_equal(ds.labels[0], [0, 1])
    ann = parse_voc_annotation(FIXTURE / "Annotations" / "000001.xml")
    assert ann.filename == "000001.jpg" and ann.size == (200, 200, 3)
    person = ann.objects[0]
    assert person.truncated and not person.difficult and person.pose == "Frontal"
    # the silhouette's tight box, from its pixels, is the hand-written one: the conversion is
    # right on a real file (000009.xml: 10 5 194 156)
    horse = VOCDataset(FIXTURE, class_names=["horse"])
    image = horse.images[8]
    rows, cols = np.nonzero(image[..., 0] < 0.5)
    np.testing.assert_array_equal(horse.boxes[8], [[cols.min(), rows.min(), cols.max() + 1,
                                                    rows.max() + 1]])
    # the mirrored copies carry mirrored boxes: x0' = W - x1, x1' = W - x0
    for a, b in ((0, 9), (5, 10)):
        W = ds.annotations[a].size[1]
        boxes_a = np.array([o.box for o in ds.annotations[a].objects])
        boxes_b = np.array([o.box for o in ds.annotations[b].objects])
        np.testing.assert_array_equal(boxes_b[:, [0, 2]], W - boxes_a[:, [2, 0]])
        np.testing.assert_array_equal(boxes_b[:, [1, 3]], boxes_a[:, [1, 3]])
        assert np.abs(ds.images[b] - ds.images[a][:, ::-1]).mean() < 0.02      # JPEG noise


def test_fixture_difficult_truncated_pose_and_missing_fields():
    ds = VOCDataset(FIXTURE)
    coins = parse_voc_annotation(FIXTURE / "Annotations" / "000006.xml").objects
    assert [o.difficult for o in coins] == [False] * 3 + [True] + [False] * 4
    assert [o.truncated for o in coins] == [False] * 3 + [True] + [False] * 3 + [True]
    np.testing.assert_array_equal(ds.difficult[5], [o.difficult for o in coins])
    assert len(VOCDataset(FIXTURE, keep_difficult=False).boxes[5]) == 7
    # 000005: VOC2012 person layout -- a <part> with its own <bndbox> (not the object's), an
    # <occluded> flag, <actions>, an <owner>, a coordinate written "1.0"
    (person,) = parse_voc_annotation(FIXTURE / "Annotations" / "000005.xml").objects
    assert person == ("person", (0.0, 24.0, 130.0, 200.0), False, True, True, "Right")
    # 000003: an object without pose, truncated, difficult
    (cup,) = parse_voc_annotation(FIXTURE / "Annotations" / "000003.xml").objects
    assert cup == ("cup", (60.0, 6.0, 143.0, 108.0), False, False, False, "Unspecified")
    # 000004: no <filename>, no <size>: the image is found by its id
    ann = parse_voc_annotation(FIXTURE / "Annotations" / "000004.xml")
    assert ann.filename is None and ann.size is None
    assert ds.image_paths[3].endswith("000004.jpg") and ds.images[3].shape == (134, 200, 3)
    # 000008: an image without objects
    assert ds.boxes[7].shape == (0, 4) and ds.labels[7].shape == (0,)
    # only the VOC classes, in the devkit's order
    voc = VOCDataset(FIXTURE, class_names=VOC_CLASSES)
    assert voc.labels[0].tolist() == [VOC_CLASSES.index("person")]
    assert voc.labels[5].shape == (0,)                     # coins are not a VOC class


def test_fixture_images_in_every_format():
    ds = VOCDataset(FIXTURE)
    for k, ann in enumerate(ds.annotations):
        image = ds.images[k]
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[2] == 3
        assert 0 <= image.min() and image.max() <= 1
        if ann.size is not None:
            assert image.shape[:2] == ann.size[:2]
    grey = {4: "000005.png", 5: "000006.jpg", 8: "000009.png"}
    for k, name in grey.items():                           # greyscale PNG / JPEG, 1-bit PNG
        assert ds.image_paths[k].endswith(name)
        image = ds.images[k]
        np.testing.assert_array_equal(image[..., 0], image[..., 2])
    assert set(np.unique(ds.images[8]).tolist()) == {0.0, 1.0}
    logo = ds.images[7]                                    # RGBA PNG, transparent corners
    assert ds.image_paths[7].endswith("000008.png")
    np.testing.assert_array_equal(logo[0, 0], 1.0)         # composited on white
    assert logo[80, 30].std() > 0.1                        # the coloured disc


def test_fixture_evaluation_ignores_the_difficult_coin():
    test = VOCDataset(FIXTURE, "test")
    gt = test.ground_truth()
    K = len(test.class_names)
    perfect = [(b, np.linspace(1, 0.5, len(b)), lab) for b, lab, _ in gt]
    res = evaluate_detections(perfect, gt, K, method="11point")
    has_objects = [c for c in range(K) if any(((lab == c) & ~d).any() for _, lab, d in gt)]
    assert [test.class_names[c] for c in has_objects] == ["coin", "horse", "person", "rocket"]
    np.testing.assert_array_equal(res["ap"][has_objects], 1.0)
    coin = test.class_names.index("coin")
    assert res["curves"][coin].n_ground_truth == 7 and res["curves"][coin].n_ignored == 1
    # had the difficult coin been dropped, its (correct) detection would be a false positive
    dropped = VOCDataset(FIXTURE, "test", keep_difficult=False).ground_truth()
    assert evaluate_detections(perfect, dropped, K)["ap"][coin] < 1.0


def test_make_fixture_describes_the_committed_images():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_fixture", FIXTURE / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ds = VOCDataset(FIXTURE)
    assert tuple(module.IMAGES) == ds.ids
    for k, (_, _, size, filename, *_) in enumerate(module.IMAGES.values()):
        assert ds.image_paths[k].endswith(filename)
        assert ds.images[k].shape[:2] == size
    kb = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file()) / 1024
    assert kb < 400                                       # the repository stays light


# ---------------------------------------------------------------- malformed folders
@pytest.fixture
def voc_copy(tmp_path):
    dst = tmp_path / "voc"
    shutil.copytree(FIXTURE, dst)
    return dst


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_malformed_annotations_name_the_file(voc_copy):
    ann = voc_copy / "Annotations" / "000002.xml"
    text = ann.read_text()
    ann.write_text(text[:200])
    with pytest.raises(ValueError, match=rf"^VOCDataset: {ann} is not well-formed XML \("):
        VOCDataset(voc_copy)
    ann.write_text("<image/>")
    with raises_exactly(ValueError, f"VOCDataset: {ann} must have an <annotation> root, "
                        "got <image>"):
        VOCDataset(voc_copy)
    cases = [
        ("<xmin>1</xmin>", "<xmin>one</xmin>",
         ValueError, f"{ann} object 0 (cat) <bndbox>: <xmin> must be a number, got 'one'"),
        ("<xmin>1</xmin>", "", ValueError, f"{ann} object 0 (cat) <bndbox> has no <xmin>"),
        ("<xmin>1</xmin>", "<xmin>201</xmin>", ValueError,
         f"{ann} object 0 (cat) has an inverted box: xmin=201, ymin=1, xmax=200, ymax=150"),
        ("<xmin>1</xmin>", "<xmin>0</xmin>", ValueError,
         f"{ann} object 0 (cat) box xmin=0, ymin=1, xmax=200, ymax=150 is outside the image "
         "(1 .. 225 x 1 .. 150; VOC pixels are 1-based)"),
        ("<ymax>150</ymax>", "<ymax>151</ymax>", ValueError,
         f"{ann} object 0 (cat) box xmin=1, ymin=1, xmax=200, ymax=151 is outside the image "
         "(1 .. 225 x 1 .. 150; VOC pixels are 1-based)"),
        ("<difficult>0</difficult>", "<difficult>yes</difficult>", ValueError,
         f"{ann} object 0: <difficult> must be 0 or 1, got 'yes'"),
        ("<name>cat</name>", "<name> </name>", ValueError, f"{ann} object 0 has no <name>"),
        ("<width>225</width>", "<width>wide</width>", ValueError,
         f"{ann} <size>: <width> must be a number, got 'wide'"),
    ]
    for old, new, exc, message in cases:
        ann.write_text(text)
        _edit(ann, old, new)
        with raises_exactly(exc, f"VOCDataset: {message}"):
            VOCDataset(voc_copy)
    ann.write_text(text.replace("<bndbox>", "<box>").replace("</bndbox>", "</box>"))
    with raises_exactly(ValueError, f"VOCDataset: {ann} object 0 (cat) has no <bndbox>"):
        VOCDataset(voc_copy)
    with raises_exactly(ValueError, f"parse_voc_annotation: {ann} object 0 (cat) has no "
                        "<bndbox>"):
        parse_voc_annotation(ann)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")     # imageio trying its plugins
def test_missing_and_mismatched_files_name_the_file(voc_copy):
    with raises_exactly(FileNotFoundError, f"VOCDataset: expected a folder "
                        f"'{voc_copy / 'nowhere' / 'Annotations'}' (VOC layout: "
                        "root/Annotations, root/JPEGImages)"):
        VOCDataset(voc_copy / "nowhere")
    main = voc_copy / "ImageSets" / "Main"
    with raises_exactly(FileNotFoundError, f"VOCDataset: split 'minival' needs the file "
                        f"'{main / 'minival.txt'}'"):
        VOCDataset(voc_copy, "minival")
    (main / "extra.txt").write_text("000001\n999999\n")
    with raises_exactly(FileNotFoundError, "VOCDataset: image id '999999' has no annotation "
                        f"'{voc_copy / 'Annotations' / '999999.xml'}'"):
        VOCDataset(voc_copy, "extra")
    (voc_copy / "JPEGImages" / "000007.jpg").unlink()
    with raises_exactly(FileNotFoundError, f"VOCDataset: no image for "
                        f"{voc_copy / 'Annotations' / '000007.xml'} in "
                        f"{voc_copy / 'JPEGImages'} (tried 000007.jpg, 000007.jpeg, "
                        "000007.png, 000007.bmp, ...)"):
        VOCDataset(voc_copy)
    # <filename> may be stale: the image is then found by its id, in another format
    from skimage import io
    io.imsave(voc_copy / "JPEGImages" / "000007.png", (VOCDataset(FIXTURE).images[6] * 255)
              .round().astype(np.uint8), check_contrast=False)
    ds = VOCDataset(voc_copy)
    assert ds.image_paths[6].endswith("000007.png") and ds.images[6].shape == (135, 200, 3)
    # an image whose size is not the annotation's, an image that is not an image
    io.imsave(voc_copy / "JPEGImages" / "000002.jpg", np.zeros((10, 12, 3), np.uint8),
              check_contrast=False)
    (voc_copy / "JPEGImages" / "000003.jpg").write_text("not a picture")
    ds = VOCDataset(voc_copy)                              # images are read only when asked
    with raises_exactly(ValueError, f"VOCDataset.read_image: {ds.image_paths[1]} is 10 x 12 "
                        "(H x W) but its annotation 000002.xml says 150 x 225"):
        ds.images[1]
    with pytest.raises(ValueError, match=rf"^VOCDataset.read_image: cannot read "
                                         rf"{ds.image_paths[2]} as an image \("):
        ds[2]
    io.imsave(voc_copy / "JPEGImages" / "000004.jpg", np.zeros((100, 100, 3), np.uint8),
              check_contrast=False)                         # 000004.xml has no <size>
    with raises_exactly(ValueError, f"VOCDataset.read_image: {ds.image_paths[3]} is 100 x 100 "
                        "(H x W), too small for the boxes of 000004.xml"):
        ds.images[3]


def test_dataset_argument_checks():
    with raises_exactly(ValueError, "VOCDataset: class_names has duplicates: ('cat', 'cat')"):
        VOCDataset(FIXTURE, class_names=["cat", "cat"])
    with raises_exactly(ValueError, "VOCDataset: max_images must be an int >= 0, got -1"):
        VOCDataset(FIXTURE, max_images=-1)
    assert len(VOCDataset(FIXTURE, max_images=0)) == 0


def test_dataset_pickles_without_pixels():
    # Dask workers get the data set by pickle: annotations and paths travel, images do not
    import pickle

    ds = VOCDataset(FIXTURE, "trainval")
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000                             # 7 images of ~100 KB decoded stay home
    back = pickle.loads(blob)
    assert back.ids == ds.ids and back.class_names == ds.class_names
    np.testing.assert_array_equal(back.images[2], ds.images[2])
    np.testing.assert_array_equal(back.difficult[5], ds.difficult[5])


def test_class_split_files_with_flags_are_read_by_their_first_column(voc_copy):
    # VOC's ImageSets/Main/<class>_<split>.txt: "<id> <flag>" with flag 1, -1 or 0
    (voc_copy / "ImageSets" / "Main" / "person_train.txt").write_text(
        "000001  1\n000002 -1\n\n000006 -1\n")
    ds = VOCDataset(voc_copy, "person_train")
    assert ds.ids == ("000001", "000002", "000006")
