"""Box geometry: window-to-feature mapping, receptive fields, IoU, NMS, box regression."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyspp.detect.geometry import (
    check_boxes,
    decode,
    encode,
    image_to_feature_boxes,
    iou,
    nms,
    nms_per_class,
    receptive_field,
)


@st.composite
def boxes_strategy(draw, max_k=6, lo=-40.0, hi=240.0, min_size=0.0):
    k = draw(st.integers(1, max_k))
    coord = st.floats(lo, hi, allow_nan=False, width=32)
    size = st.floats(min_size, 120.0, allow_nan=False, width=32)
    rows = []
    for _ in range(k):
        x0, y0 = draw(coord), draw(coord)
        rows.append([x0, y0, x0 + draw(size), y0 + draw(size)])
    return np.array(rows, dtype=np.float64)


class Layer:
    """Stand-in with the geometry attributes of tinyspp's Conv2d / MaxPool2d."""

    def __init__(self, ksize, stride, pad):
        self.ksize, self.stride, self.pad = ksize, stride, pad


class Act:
    """A layer without geometry (like ReLU)."""


layer_lists = st.lists(
    st.tuples(st.integers(1, 7), st.integers(1, 3), st.integers(0, 3)).map(lambda t: Layer(*t)),
    min_size=1, max_size=5,
)
methods = st.sampled_from(["paper", "center"])
strides = st.sampled_from([1, 2, 4, 8, 16])
maps = st.tuples(st.integers(1, 20), st.integers(1, 20))


# ---------------------------------------------------------------- mapping
def test_paper_formula_by_hand():
    # S = 16: x0' = floor(x0/16) + 1, x1' = ceil(x1/16) - 1
    boxes = np.array([[0, 0, 100, 64], [17, 33, 80, 95]])
    out = image_to_feature_boxes(boxes, 16, (10, 10))
    np.testing.assert_array_equal(out, [[1, 1, 6, 3], [2, 3, 4, 5]])


def test_small_box_collapses_to_nearest_cell():
    # [40, 40, 46, 46] at S = 16: floor(40/16)+1 = 3 > ceil(46/16)-1 = 2 -> centre 43/16 -> cell 3
    out = image_to_feature_boxes(np.array([[40, 40, 46, 46]]), 16, (10, 10))
    np.testing.assert_array_equal(out, [[3, 3, 3, 3]])
    out = image_to_feature_boxes(np.array([[40, 40, 46, 46]]), 16, (10, 10), method="center",
                                 centre=8.0)
    np.testing.assert_array_equal(out, [[2, 2, 2, 2]])   # (43 - 8) / 16 = 2.19 -> 2


def test_boxes_outside_the_map_are_clamped():
    out = image_to_feature_boxes(np.array([[-100, -50, -20, -10], [500, 0, 900, 30]]), 8, (4, 6))
    np.testing.assert_array_equal(out, [[0, 0, 0, 0], [5, 1, 5, 3]])


@given(boxes_strategy(), strides, maps, methods, st.floats(-8, 8))
def test_mapping_in_bounds_and_non_empty(boxes, stride, shape, method, centre):
    out = image_to_feature_boxes(boxes, stride, shape, method=method, centre=centre)
    H, W = shape
    assert out.dtype == np.int64 and out.shape == boxes.shape
    assert (out[:, 0] >= 0).all() and (out[:, 2] <= W - 1).all()
    assert (out[:, 1] >= 0).all() and (out[:, 3] <= H - 1).all()
    assert (out[:, 2] >= out[:, 0]).all() and (out[:, 3] >= out[:, 1]).all()


@given(boxes_strategy(), strides, maps, methods, st.floats(0, 50))
def test_mapping_monotone_under_translation(boxes, stride, shape, method, shift):
    # moving a window right/down never moves any of its mapped cells left/up (collapse included)
    a = image_to_feature_boxes(boxes, stride, shape, method=method, centre=3.5)
    b = image_to_feature_boxes(boxes + shift, stride, shape, method=method, centre=3.5)
    assert (b >= a).all()


@given(boxes_strategy(min_size=40.0), strides, methods, st.floats(0, 40), st.floats(0, 40))
def test_mapping_monotone_in_each_edge(boxes, stride, method, grow_lo, grow_hi):
    # a larger window (not collapsing) covers at least the cells of the smaller one
    big = boxes + np.array([-grow_lo, -grow_lo, grow_hi, grow_hi])
    shape = (100, 100)
    a = image_to_feature_boxes(boxes + 100, stride, shape, method=method)
    b = image_to_feature_boxes(big + 100, stride, shape, method=method)
    assert (b[:, :2] <= a[:, :2]).all() and (b[:, 2:] >= a[:, 2:]).all()


@given(boxes_strategy(lo=0.0, hi=100.0), strides, st.floats(-4, 4))
def test_center_method_defining_property(boxes, stride, c0):
    # the mapped cells are exactly those whose receptive-field centre lies in the window
    shape = (400, 400)          # big enough that nothing is clamped
    out = image_to_feature_boxes(boxes + 20, stride, shape, method="center", centre=c0)
    cells = np.arange(400)
    centres = c0 + stride * cells
    for (x0, y0, x1, y1), (cx0, cy0, cx1, cy1) in zip(boxes + 20, out):
        for lo, hi, clo, chi in [(x0, x1, cx0, cx1), (y0, y1, cy0, cy1)]:
            inside = cells[(centres >= lo) & (centres <= hi)]
            if inside.size:
                assert (clo, chi) == (inside[0], inside[-1])
            else:      # collapsed: the single cell nearest the window centre
                assert clo == chi
                assert abs(centres[clo] - (lo + hi) / 2) <= stride / 2 + 1e-9


def test_mapping_bad_arguments():
    with pytest.raises(ValueError, match="image_to_feature_boxes: method"):
        image_to_feature_boxes(np.zeros((1, 4)), 16, (4, 4), method="round")
    with pytest.raises(ValueError, match="stride"):
        image_to_feature_boxes(np.zeros((1, 4)), 0, (4, 4))
    with pytest.raises(ValueError, match="feature_shape"):
        image_to_feature_boxes(np.zeros((1, 4)), 4, (0, 4))


# ---------------------------------------------------------------- receptive field
def _brute_force_field(layers):
    """Input pixel range [lo, hi] seen by output cell 0, by composing index ranges per layer."""
    lo, hi = 0, 0
    for layer in reversed(layers):
        lo, hi = lo * layer.stride - layer.pad, hi * layer.stride - layer.pad + layer.ksize - 1
    return lo, hi


@given(layer_lists)
def test_receptive_field_matches_brute_force(layers):
    net = [Act()] + [x for layer in layers for x in (layer, Act())]
    stride, centre, size = receptive_field(net)
    lo, hi = _brute_force_field(layers)
    assert stride == int(np.prod([layer.stride for layer in layers]))
    assert size == hi - lo + 1
    assert centre == pytest.approx((lo + hi + 1) / 2)    # pixel i spans [i, i+1)


def test_receptive_field_rejects_non_square_layers():
    with pytest.raises(ValueError, match="non-square"):
        receptive_field([Layer((3, 5), 1, 1)])


# ---------------------------------------------------------------- IoU, NMS
def test_iou_by_hand():
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1]])
    b = np.array([[1, 0, 3, 2], [0, 0, 2, 2], [5, 5, 5, 5]])
    np.testing.assert_allclose(iou(a, b), [[1 / 3, 1, 0], [0, 0.25, 0]])


@given(boxes_strategy(max_k=12), st.integers(0, 2**31 - 1), st.floats(0.0, 0.9),
       st.integers(1, 3))
def test_nms_properties(boxes, seed, threshold, n_classes):
    rng = np.random.default_rng(seed)
    scores = rng.permutation(len(boxes)).astype(float)
    labels = rng.integers(0, n_classes, len(boxes))
    keep = nms_per_class(boxes, scores, labels, threshold)
    for c in np.unique(labels):
        kept = keep[labels[keep] == c]
        ov = iou(boxes[kept], boxes[kept])
        np.fill_diagonal(ov, 0)
        assert (ov <= threshold).all()                   # no two kept boxes overlap too much
        members = np.flatnonzero(labels == c)
        assert members[np.argmax(scores[members])] in kept   # the best box always survives
        # every dropped box overlaps a kept box of its class with a higher score
        for i in set(members) - set(kept):
            assert any(iou(boxes[[i]], boxes[[k]])[0, 0] > threshold and scores[k] > scores[i]
                       for k in kept)
    assert list(scores[keep]) == sorted(scores[keep], reverse=True)


def test_nms_empty_and_bad_scores():
    assert nms(np.zeros((0, 4)), np.zeros(0)).shape == (0,)
    with pytest.raises(ValueError, match="nms: scores"):
        nms(np.zeros((2, 4)), np.zeros(3))


# ---------------------------------------------------------------- box regression
@given(boxes_strategy(min_size=1.0), boxes_strategy(min_size=1.0))
def test_encode_decode_round_trip(p, g):
    k = min(len(p), len(g))
    p, g = p[:k], g[:k]
    np.testing.assert_allclose(decode(p, encode(p, g)), g, rtol=1e-9, atol=1e-6)


def test_encode_by_hand():
    d = encode(np.array([[0, 0, 10, 20]]), np.array([[5, 0, 15, 40]]))
    np.testing.assert_allclose(d, [[0.5, 0.5, 0.0, np.log(2)]])


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("bad, match", [
    (np.array([[0, 0, 4, 4], [5, 0, 3, 4]]), "row 1 is inverted"),
    (np.array([[0, 0, 4, 4], [0, 0, 4, 4], [0, 9, 4, 4]]), "row 2 is inverted"),
    (np.array([[0, 0, np.nan, 4]]), "row 0 has a non-finite"),
    (np.zeros((3, 5)), r"shape \(K, 4\)"),
])
def test_bad_boxes_name_the_row(bad, match):
    with pytest.raises(ValueError, match=match):
        check_boxes(bad, "boxes", "iou")
    with pytest.raises(ValueError, match=match):
        image_to_feature_boxes(bad, 16, (5, 5))


def test_zero_size_boxes_rejected_by_encode():
    with pytest.raises(ValueError, match="encode: proposals row 0 has zero width"):
        encode(np.array([[1, 1, 1, 5]]), np.array([[0, 0, 3, 3]]))


def test_integer_and_float32_boxes_accepted():
    a = iou(np.array([[0, 0, 4, 4]], dtype=np.int32), np.array([[0, 0, 4, 2]], dtype=np.float32))
    np.testing.assert_allclose(a, [[0.5]])
