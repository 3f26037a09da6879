"""Box geometry: window-to-feature mapping, receptive fields, IoU, NMS, box regression."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyspp.detect.geometry import (
    MAX_LOG_SCALE,
    check_boxes,
    decode,
    encode,
    image_to_feature_boxes,
    iou,
    mapping_offset,
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
# integer boxes: their edges hit cell centres exactly (the ties float draws almost never make)
integer_boxes = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(1, 60),
                                   st.integers(1, 60)), min_size=1, max_size=6).map(
    lambda rows: np.array([[x, y, x + w, y + h] for x, y, w, h in rows], dtype=np.float64))


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


@given(st.one_of(boxes_strategy(lo=0.0, hi=100.0), integer_boxes), strides,
       st.one_of(st.floats(-4, 4), st.sampled_from([0.5, 2.0])))
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


@pytest.mark.parametrize("S", [4, 8, 16])
def test_paper_rule_at_edges_that_are_multiples_of_S(S):
    # the formulas take the window's edges: a cell centred exactly on an edge (S * m) is dropped
    # on both sides, one pixel inside keeps the same cells, one pixel outside adds the edge cell
    big = (20, 20)
    cells = lambda b: image_to_feature_boxes(np.array([b], dtype=float), S, big)[0]  # noqa: E731
    assert cells([2 * S, 3 * S, 5 * S, 7 * S]).tolist() == [3, 4, 4, 6]
    assert cells([2 * S + 1, 3 * S + 1, 5 * S - 1, 7 * S - 1]).tolist() == [3, 4, 4, 6]
    assert cells([2 * S - 1, 3 * S - 1, 5 * S + 1, 7 * S + 1]).tolist() == [2, 3, 5, 7]
    # the right formula on the right edge x1 = last pixel + 1: for integer x1 it is
    # floor((x1 - 1) / S), the last cell centred at or before the last pixel
    for x1 in range(S + 1, 8 * S):
        assert cells([0, 0, x1, x1])[2] == (x1 - 1) // S


@given(st.one_of(boxes_strategy(lo=0.0, hi=100.0), integer_boxes), strides,
       st.one_of(st.floats(-8, 8), st.sampled_from([0.0, 0.5, 1.5, 2.0])))
def test_paper_rule_keeps_cells_centred_strictly_inside(boxes, stride, offset):
    # integer boxes and offsets on purpose: their edges hit cell centres exactly (the ties)
    # with offset o the paper rule keeps the cells whose centre o + S x' lies in (x0, x1)
    shape = (400, 400)
    out = image_to_feature_boxes(boxes + 20, stride, shape, method="paper", offset=offset)
    cells = np.arange(400)
    centres = offset + stride * cells
    for (x0, y0, x1, y1), (cx0, cy0, cx1, cy1) in zip(boxes + 20, out):
        for lo, hi, clo, chi in [(x0, x1, cx0, cx1), (y0, y1, cy0, cy1)]:
            inside = cells[(centres > lo) & (centres < hi)]
            if inside.size:
                assert (clo, chi) == (inside[0], inside[-1])
            else:
                assert clo == chi


def test_mapping_offset_is_zero_for_the_papers_padding_and_measured_otherwise():
    # floor(p/2) padding everywhere (odd kernels): cell x' sits on pixel S x'; no offset
    assert mapping_offset([Layer(3, 1, 1), Layer(3, 2, 1), Layer(5, 2, 2)]) == 0.0
    # an unpadded 2x2 pool after stride 1 and another after stride 2 move the centres right by
    # 0.5 + 1 pixels: the real centre of cell 0 is 2.0 (the centre of pixel 0 is 0.5)
    layers = [Layer(3, 1, 1), Layer(2, 2, 0), Act(), Layer(3, 1, 1), Layer(2, 2, 0)]
    assert receptive_field(layers)[:2] == (4, 2.0)
    assert mapping_offset(layers) == 1.5
    box = np.array([[16.0, 16.0, 40.0, 40.0]])
    # plain rule: centres assumed at 4 x' -> strictly inside (16, 40): cells 5..9;
    # with the offset: centres at 1.5 + 4 x' -> 17.5 .. 37.5: cells 4..9
    assert image_to_feature_boxes(box, 4, (20, 20)).tolist() == [[5, 5, 9, 9]]
    assert image_to_feature_boxes(box, 4, (20, 20), offset=1.5).tolist() == [[4, 4, 9, 9]]


def test_mapping_bad_arguments():
    with pytest.raises(ValueError, match="image_to_feature_boxes: method"):
        image_to_feature_boxes(np.zeros((1, 4)), 16, (4, 4), method="round")
    with pytest.raises(ValueError, match="stride"):
        image_to_feature_boxes(np.zeros((1, 4)), 0, (4, 4))
    with pytest.raises(ValueError, match="feature_shape"):
        image_to_feature_boxes(np.zeros((1, 4)), 4, (0, 4))
    with pytest.raises(ValueError, match="image_to_feature_boxes: offset must be a finite"):
        image_to_feature_boxes(np.zeros((1, 4)), 4, (4, 4), offset=np.nan)


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
    d = encode(p, g)
    out = decode(p, d)
    exact = (d[:, 2:] <= MAX_LOG_SCALE).all(axis=1)          # below the clamp: exact inverse
    np.testing.assert_allclose(out[exact], g[exact], rtol=1e-9, atol=1e-6)
    pw = p[~exact, 2:] - p[~exact, :2]                        # beyond it: at most 62.5x growth
    assert (out[~exact, 2:] - out[~exact, :2] <= pw * 62.5 * (1 + 1e-9)).all()


def test_decode_clamps_log_sizes_as_fast_rcnn():
    p = np.array([[0.0, 0.0, 10.0, 20.0]] * 3)
    d = np.array([[0.0, 0.0, 1e6, 0.0], [0.0, 0.0, 0.0, 800.0], [0.0, 0.0, -1e6, 0.0]])
    with np.errstate(over="raise"):
        out = decode(p, d)
    w, h = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    np.testing.assert_allclose(w, [10 * 1000 / 16, 10, 0], atol=1e-9)     # exp(log(1000/16))
    np.testing.assert_allclose(h, [20, 20 * 1000 / 16, 20])
    assert MAX_LOG_SCALE == pytest.approx(np.log(62.5))
    with pytest.raises(ValueError, match="decode: deltas row 1 is not finite"):
        decode(p[:2], np.array([[0, 0, 0, 0], [np.inf, 0, 0, 0]]))


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
