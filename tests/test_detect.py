"""Detection: VOC average precision, proposals, data, the SPP-net detector end to end."""

import numpy as np
import pytest

from tinyspp.detect.evaluate import average_precision, evaluate_detections, pr_curve


# ---------------------------------------------------------------- evaluation
def _gt():
    # image 0: two class-0 objects; image 1: one class-0 and one class-1 object
    return [
        (np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0, 0])),
        (np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([0, 1])),
    ]


def test_perfect_detections_give_ap_one():
    dets = [(b, np.linspace(1, 0.5, len(b)), lab) for b, lab in _gt()]
    for method in ("area", "11point"):
        res = evaluate_detections(dets, _gt(), n_classes=2, method=method)
        np.testing.assert_allclose(res["ap"], [1.0, 1.0])
        assert res["map"] == 1.0


def test_known_pr_curve_by_hand():
    # class 0 detections by score: hit, miss (no overlap), duplicate of a hit (counts as a miss),
    # hit, hit.  3 objects.  tp = 1,0,0,1,1  ->  P = 1, 1/2, 1/3, 1/2, 3/5; R = 1/3,1/3,1/3,2/3,1
    dets = [
        (np.array([[0, 0, 10, 10], [70, 70, 80, 80], [1, 0, 10, 10], [20, 20, 30, 31]]),
         np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 0, 0, 0])),
        (np.array([[0, 0, 10, 11]]), np.array([0.5]), np.array([0])),
    ]
    curve = pr_curve(dets, _gt(), cls=0)
    np.testing.assert_allclose(curve.precision, [1, 1 / 2, 1 / 3, 1 / 2, 3 / 5])
    np.testing.assert_allclose(curve.recall, [1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    # all-point: envelope 1 on (0, 1/3], 3/5 on (1/3, 1]
    area = 1 / 3 * 1 + 2 / 3 * 3 / 5
    # 11-point: t = 0, .1, .2, .3 -> 1; t = .4 .. 1 (7 values) -> 3/5
    eleven = (4 * 1 + 7 * 3 / 5) / 11
    res = evaluate_detections(dets, _gt(), n_classes=2, method="area")
    assert res["ap"][0] == pytest.approx(area)
    assert res["ap"][1] == 0.0                     # the class-1 object was never detected
    assert res["map"] == pytest.approx(area / 2)
    res = evaluate_detections(dets, _gt(), n_classes=2, method="11point")
    assert res["ap"][0] == pytest.approx(eleven)


def test_iou_threshold_and_class_without_ground_truth():
    # IoU of [0,0,10,10] with [0,0,10,20] is 0.5: a hit at 0.5, a miss at 0.6
    gt = [(np.array([[0, 0, 10, 20]]), np.array([0]))]
    dets = [(np.array([[0, 0, 10, 10]]), np.array([1.0]), np.array([0]))]
    assert evaluate_detections(dets, gt, 2)["ap"][0] == 1.0
    assert evaluate_detections(dets, gt, 2, iou_threshold=0.6)["ap"][0] == 0.0
    res = evaluate_detections(dets, gt, 2)
    assert np.isnan(res["ap"][1]) and res["map"] == 1.0


def test_average_precision_bad_input():
    with pytest.raises(ValueError, match="average_precision: method"):
        average_precision(np.ones(2), np.ones(2), method="auc")
    with pytest.raises(ValueError, match="equal length"):
        average_precision(np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="differ in length"):
        evaluate_detections(_gt()[:1], _gt(), 2)


# ---------------------------------------------------------------- data
def test_synthetic_set_is_deterministic_and_valid():
    from tinyspp.detect.data import make_detection_set, train_test_sets

    a = make_detection_set(3, seed=5, size_range=(64, 96))
    b = make_detection_set(3, seed=5, size_range=(64, 96))
    for x, y in zip(a.images, b.images):
        np.testing.assert_array_equal(x, y)
    shapes = set()
    for img, boxes, labels in zip(a.images, a.boxes, a.labels):
        H, W, C = img.shape
        shapes.add((H, W))
        assert C == 3 and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
        assert 64 <= H <= 96 and 64 <= W <= 96
        assert len(boxes) == len(labels) >= 1
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= W).all() and (boxes[:, 3] <= H).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        assert set(labels.tolist()) <= set(range(len(a.class_names)))
    assert len(shapes) > 1                                    # images of varying size
    train, test = train_test_sets(2, 2, seed=5, size_range=(64, 96))
    assert not np.array_equal(train.images[0][:10, :10], test.images[0][:10, :10])


def test_voc_loader_reads_a_tiny_folder(tmp_path):
    from skimage import io

    from tinyspp.detect.data import load_voc

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
    ds = load_voc(tmp_path)
    assert ds.class_names == ("cat", "dog")
    assert len(ds.images) == 2 and ds.images[0].shape == (20, 30, 3)
    assert ds.images[1].shape == (20, 30, 3) and ds.images[0].dtype == np.float32
    # 1-based inclusive VOC corners -> [xmin - 1, ymin - 1, xmax, ymax]; difficult object dropped
    np.testing.assert_array_equal(ds.boxes[0], [[2, 5, 12, 10], [0, 0, 30, 20]])
    np.testing.assert_array_equal(ds.labels[0], [1, 0])
    assert len(load_voc(tmp_path, skip_difficult=False).boxes[0]) == 3
    val = load_voc(tmp_path, split="val", class_names=["dog"])
    assert len(val.images) == 1 and val.labels[0].tolist() == [0]
    with pytest.raises(FileNotFoundError, match="load_voc"):
        load_voc(tmp_path / "nowhere")


# ---------------------------------------------------------------- proposals
def test_selective_search_returns_valid_boxes_with_recall():
    from tinyspp.detect.data import make_detection_set
    from tinyspp.detect.proposals import proposal_recall, selective_search

    ds = make_detection_set(3, seed=1, size_range=(80, 100))
    props = [selective_search(img, max_boxes=300, seed=0) for img in ds.images]
    for img, p in zip(ds.images, props):
        H, W = img.shape[:2]
        assert p.ndim == 2 and p.shape[1] == 4 and 1 <= len(p) <= 300
        assert len(np.unique(p, axis=0)) == len(p)            # deduplicated
        assert (p[:, :2] >= 0).all() and (p[:, 2] <= W).all() and (p[:, 3] <= H).all()
        assert (p[:, 2] - p[:, 0] >= 4).all() and (p[:, 3] - p[:, 1] >= 4).all()
    assert proposal_recall(props, ds.boxes, 0.5) >= 0.8
    np.testing.assert_array_equal(props[0], selective_search(ds.images[0], max_boxes=300, seed=0))


def test_selective_search_bad_input():
    from tinyspp.detect.proposals import selective_search

    with pytest.raises(ValueError, match="selective_search: image"):
        selective_search(np.zeros((10, 10)))
    with pytest.raises(ValueError, match="colour_spaces"):
        selective_search(np.zeros((10, 10, 3)), colour_spaces=("xyz",))
