"""The library's own answers to the exercises, under the exercises' signatures.

Each function here is what a student's ``NAME.py`` must compute, written as a call of the
tinyspp function that does the job. The grader compares a student's answer with these on drawn
inputs, and the test suite grades these very functions to prove that the checks accept the
library (``tests/test_grade.py``).

Examples
--------
>>> bin_edges(10, 3)
[(0, 4), (3, 7), (6, 10)]
>>> paper_window_stride(13, 3)
(5, 4)
>>> map_window([0, 0, 100, 64], 16)
(1, 1, 6, 3)
"""

from __future__ import annotations

import numpy as np

from .. import bins
from ..ops import conv2d_backward as _conv2d_backward
from ..ops import conv2d_forward, spp_backward, spp_forward
from ..ops import softmax_cross_entropy as _softmax_cross_entropy


def bin_edges(size, n):
    """Adaptive bins of one axis as a list of ``(start, end)`` pairs (``tinyspp.bins``)."""
    return [tuple(edge) for edge in bins.bin_edges(size, n, "adaptive")]


def paper_window_stride(size, n):
    """``(window, stride)`` of the paper's Sec. 2.3 rule (``tinyspp.bins``)."""
    return bins.paper_window_stride(size, n)


def spp_max(x, levels):
    """Adaptive max SPP of ``x (N, C, H, W)``: ``(N, C * sum(n*n))`` (``tinyspp.ops``)."""
    return spp_forward(x, levels=tuple(levels), mode="adaptive", pool="max", impl="xp")[0]


def spp_max_backward(dout, x, levels):
    """Gradient of :func:`spp_max` at ``x`` for the upstream gradient ``dout``."""
    _, cache = spp_forward(x, levels=tuple(levels), mode="adaptive", pool="max", impl="xp")
    return spp_backward(dout, cache)


def conv2d_backward(dout, x, w, stride, pad):
    """``(dx, dw, db)`` of ``conv2d_forward(x, w, b, stride, pad)`` for the gradient ``dout``."""
    _, cache = conv2d_forward(x, w, np.zeros(w.shape[0], dtype=x.dtype), stride=stride, pad=pad)
    return _conv2d_backward(dout, cache)


def softmax_cross_entropy(logits, labels):
    """``(loss, dlogits)``: the mean softmax cross-entropy and its gradient (``tinyspp.ops``)."""
    return _softmax_cross_entropy(logits, labels)


def map_window(box, stride):
    """The paper's mapping of one image window to inclusive feature cells, on a map large
    enough that the clamp of :func:`tinyspp.detect.geometry.image_to_feature_boxes` never acts.
    """
    from ..detect.geometry import image_to_feature_boxes

    box = np.asarray(box, dtype=np.float64).reshape(1, 4)
    side = int(np.ceil(box.max() / stride)) + 2
    return tuple(int(v) for v in image_to_feature_boxes(box, stride, (side, side), "paper")[0])
