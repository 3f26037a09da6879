"""Exercises on layers: ``spp_max`` (forward), ``spp_max_backward``, ``conv2d_backward``.

Inputs are small float64 arrays of small integers: many ties on purpose (the tie rule is part of
the task) and sums that are exact, so answers can be compared tightly. The gradient checks use
tie-free inputs, where max pooling is differentiable.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..bins import bin_edges
from ..gradcheck import directional_check
from ..ops import conv2d_forward, spp_forward
from . import reference
from .runner import Check, Exercise, Mismatch, as_array, call, close


def small_ints(shape, lo=-3, hi=3):
    """float64 arrays of ``shape`` holding integers in ``[lo, hi]`` (ties, exact sums)."""
    return hnp.arrays(np.float64, shape, elements=st.integers(lo, hi).map(float),
                      fill=st.just(float(max(lo, 0))))


def tie_free(shape):
    """float64 arrays of ``shape``: a shuffled ramp ``0, 1/size, 2/size, ...`` (no two equal)."""
    size = int(np.prod(shape))
    return st.permutations(range(size)).map(
        lambda p: (np.asarray(p, dtype=np.float64) / size).reshape(shape))


def spp_length(C, levels):
    return C * sum(n * n for n in levels)


@st.composite
def spp_inputs(draw, max_side=8, min_channels=1, levels=None, min_levels=1, values="ints",
               with_dout=False):
    """``{"x": (N, C, H, W), "levels": (n, ...)}`` (with ``"dout"`` first when asked)."""
    N, C = draw(st.integers(1, 2)), draw(st.integers(min_channels, 3))
    H, W = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    if levels is None:
        levels = tuple(draw(st.lists(st.integers(1, 4), min_size=min_levels, max_size=3)))
    shape = (N, C, H, W)
    if values == "ints":
        x = draw(small_ints(shape, 0, 2 if with_dout else 3))
    elif values == "constant":
        x = np.full(shape, float(draw(st.integers(-2, 2))))
    else:
        x = draw(tie_free(shape))
    case = {"x": x, "levels": levels}
    if with_dout:
        case = {"dout": draw(small_ints((N, spp_length(C, levels)))), **case}
    return case


# --- spp_max --------------------------------------------------------------------------------------

def _pooled(fn, case, what="spp_max(x, levels)"):
    N, C = case["x"].shape[:2]
    return as_array(call(fn, case), (N, spp_length(C, case["levels"])), what)


def _spp_shape(fn, case):
    _pooled(fn, case)


def _level_one_is_global_max(fn, case):
    got = _pooled(fn, case)
    close(case["x"].max(axis=(2, 3)), got,
          "level n=1 has one bin, the whole map: its output is each channel's maximum")


def _levels_concatenate(fn, case):
    x, levels = case["x"], case["levels"]
    got = _pooled(fn, case)
    parts = [_pooled(fn, {"x": x, "levels": (n,)}, f"spp_max(x, ({n},))") for n in levels]
    close(np.concatenate(parts, axis=1), got, "the output is level after level, in the order "
          "given: spp_max(x, (a, b)) == concat(spp_max(x, (a,)), spp_max(x, (b,)))")


def _channel_major(fn, case):
    x, levels = case["x"], case["levels"]
    N, C = x.shape[:2]
    got = _pooled(fn, case)
    expected, off = np.empty_like(got), 0
    for n in levels:
        for c in range(C):
            one = _pooled(fn, {"x": x[:, c:c + 1], "levels": (n,)}, "spp_max(x[:, c:c+1], (n,))")
            expected[:, off + c * n * n:off + (c + 1) * n * n] = one
        off += C * n * n
    close(expected, got, "within a level the layout is channel-major: columns "
          "offset + (c*n + by)*n + bx, so channel c's n*n bins are contiguous")


def _spp_match_library(fn, case):
    close(reference.spp_max(case["x"], case["levels"]), _pooled(fn, case),
          "bin (by, bx) of level n is the max over rows floor(by*H/n) .. ceil((by+1)*H/n) - 1 "
          "and columns likewise (tinyspp.ops.spp_forward)", rtol=0, atol=0)


SPP_EXAMPLES = (
    {"x": np.arange(16.0).reshape(1, 1, 4, 4), "levels": (2, 1)},
    {"x": np.arange(30.0).reshape(1, 2, 3, 5), "levels": (4, 2)},
)

SPP_MAX = Exercise(
    name="spp_max",
    signature="spp_max(x, levels) -> ndarray of shape (N, C * sum(n*n))",
    task="adaptive max spatial pyramid pooling of an (N, C, H, W) map, in the library's layout",
    notebook="02_spp_layer.ipynb",
    checks=(
        Check("returns an ndarray of shape (N, C * sum(n*n)) for any H and W", spp_inputs(),
              _spp_shape, SPP_EXAMPLES),
        Check("level 1 is each channel's global maximum", spp_inputs(levels=(1,)),
              _level_one_is_global_max),
        Check("levels come one after another, in the order given",
              spp_inputs(min_levels=2), _levels_concatenate, SPP_EXAMPLES),
        Check("channel-major within a level: channel c's bins are one contiguous block",
              spp_inputs(min_channels=2), _channel_major, SPP_EXAMPLES[1:]),
        Check("agrees with tinyspp.ops.spp_forward (adaptive, max)", spp_inputs(),
              _spp_match_library, SPP_EXAMPLES),
    ),
)


# --- spp_max_backward -----------------------------------------------------------------------------

def _dx(fn, case):
    return as_array(call(fn, case), case["x"].shape, "dx")


def _dx_shape(fn, case):
    _dx(fn, case)


def _column_channels(C, levels):
    return np.concatenate([np.repeat(np.arange(C), n * n) for n in levels])


def _conserves_gradient(fn, case):
    dout, x, levels = case["dout"], case["x"], case["levels"]
    N, C = x.shape[:2]
    dx = _dx(fn, case)
    chan = _column_channels(C, levels)
    expected = np.stack([dout[:, chan == c].sum(axis=1) for c in range(C)], axis=1)  # (N, C)
    close(expected, dx.sum(axis=(2, 3)), "every bin sends its whole gradient to one cell, so "
          "dx[i, c].sum() equals the sum of channel c's dout[i] (bins that pick the same cell "
          "add up: +=, not =)")


def _ties_go_first(fn, case):
    dout, x, levels = case["dout"], case["x"], case["levels"]
    N, C, H, W = x.shape
    expected, off = np.zeros_like(x), 0
    for n in levels:
        for c in range(C):
            for by, (y0, _) in enumerate(bin_edges(H, n)):
                for bx, (x0, _) in enumerate(bin_edges(W, n)):
                    expected[:, c, y0, x0] += dout[:, off + (c * n + by) * n + bx]
        off += C * n * n
    close(expected, _dx(fn, case), "on a constant map every cell ties: each bin's gradient "
          "goes to its FIRST maximum in row-major order, the bin's top-left cell")


def _gradient_check(fn, case):
    dout, x, levels = case["dout"], case["x"], case["levels"]
    dx = _dx(fn, case)
    numeric, analytic = directional_check(
        lambda v: float(np.sum(spp_forward(v, levels=levels)[0] * dout)), x.copy(), dx, rng=0)
    if not np.isclose(numeric, analytic, rtol=1e-6, atol=1e-6):
        raise Mismatch(f"<dx, u> = {numeric:.6f} (centred differences along a direction u)",
                       f"<dx, u> = {analytic:.6f}", "on a tie-free map dx must be the gradient "
                       "of sum(dout * spp_forward(x, levels)) (tinyspp.gradcheck."
                       "directional_check)")


def _backward_match_library(fn, case):
    close(reference.spp_max_backward(case["dout"], case["x"], case["levels"]), _dx(fn, case),
          "tinyspp.ops.spp_backward: each dout entry added at its bin's first maximum")


BACKWARD_EXAMPLES = (
    {"dout": np.ones((1, 5)), "x": np.zeros((1, 1, 2, 2)), "levels": (2, 1)},
    {"dout": np.arange(1.0, 6.0).reshape(1, 5), "x": np.ones((1, 1, 3, 3)), "levels": (2, 1)},
)

SPP_MAX_BACKWARD = Exercise(
    name="spp_max_backward",
    signature="spp_max_backward(dout, x, levels) -> dx of shape (N, C, H, W)",
    task="the gradient of spp_max: each bin's dout goes to its first maximum (row-major)",
    notebook="02_spp_layer.ipynb",
    checks=(
        Check("returns dx, an ndarray shaped like x", spp_inputs(with_dout=True), _dx_shape,
              BACKWARD_EXAMPLES),
        Check("each channel's dx sums to that channel's dout (overlaps add up)",
              spp_inputs(with_dout=True), _conserves_gradient, BACKWARD_EXAMPLES),
        Check("ties go to the first maximum in row-major order (a constant map)",
              spp_inputs(values="constant", with_dout=True), _ties_go_first, BACKWARD_EXAMPLES),
        Check("tie-free map: a directional gradient check against spp_forward",
              spp_inputs(max_side=6, values="distinct", with_dout=True), _gradient_check),
        Check("agrees with tinyspp.ops.spp_backward (ties included)",
              spp_inputs(with_dout=True), _backward_match_library, BACKWARD_EXAMPLES),
    ),
)


# --- conv2d_backward ------------------------------------------------------------------------------

@st.composite
def conv_inputs(draw, min_stride=1, min_pad=0, min_k=1):
    """``{"dout", "x", "w", "stride", "pad"}`` with an output of at least 1x1."""
    N, C, F = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kh, kw = draw(st.integers(min_k, 3)), draw(st.integers(min_k, 3))
    stride, pad = draw(st.integers(min_stride, 3)), draw(st.integers(min_pad, 2))
    H = draw(st.integers(max(1, kh - 2 * pad), 7))
    W = draw(st.integers(max(1, kw - 2 * pad), 7))
    oh, ow = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
    return {"dout": draw(small_ints((N, F, oh, ow))), "x": draw(small_ints((N, C, H, W))),
            "w": draw(small_ints((F, C, kh, kw))), "stride": stride, "pad": pad}


def _grads(fn, case):
    x, w = case["x"], case["w"]
    got = call(fn, case)
    if not isinstance(got, tuple | list) or len(got) != 3:
        raise Mismatch("a tuple (dx, dw, db)", f"{type(got).__name__}: {got!r}"[:200],
                       "return the three gradients as a tuple")
    return (as_array(got[0], x.shape, "dx"), as_array(got[1], w.shape, "dw"),
            as_array(got[2], (w.shape[0],), "db"))


def _grads_shape(fn, case):
    _grads(fn, case)


def _db_sums(fn, case):
    close(case["dout"].sum(axis=(0, 2, 3)), _grads(fn, case)[2],
          "the bias is added at every output position of every image: db[f] = dout[:, f].sum()")


def _loss(case, x, w):
    """L = sum(dout * conv2d(x, w)): linear in x and in w, so gradients are exact slopes."""
    F = w.shape[0]
    out, _ = conv2d_forward(x, w, np.zeros(F), stride=case["stride"], pad=case["pad"])
    return float(np.sum(out * case["dout"]))


def _direction(shape):
    return np.random.default_rng(0).integers(-2, 3, size=shape).astype(np.float64)


def _slope_check(fn, case, which):
    x, w = case["x"], case["w"]
    grads = _grads(fn, case)
    g = grads[0] if which == "x" else grads[1]
    u = _direction(g.shape)
    moved = _loss(case, x + u, w) if which == "x" else _loss(case, x, w + u)
    slope = moved - _loss(case, x, w)
    if not np.isclose(slope, float(np.sum(g * u)), rtol=1e-9, atol=1e-9):
        raise Mismatch(f"<d{which}, u> = {slope:g}", f"<d{which}, u> = {float(np.sum(g * u)):g}",
                       f"L = sum(dout * conv2d_forward(x, w)) is linear in {which}, so "
                       f"L({which} + u) - L({which}) must equal <d{which}, u> exactly (u: a "
                       "fixed integer direction); check which input cells each output saw, "
                       "with the stride and the padding")


def _dw_slope(fn, case):
    _slope_check(fn, case, "w")


def _dx_slope(fn, case):
    _slope_check(fn, case, "x")


def _conv_match_library(fn, case):
    expected = reference.conv2d_backward(**case)
    for name, e, g in zip(("dx", "dw", "db"), expected, _grads(fn, case)):
        close(e, g, f"{name} differs from tinyspp.ops.conv2d_backward")


CONV_EXAMPLES = (
    {"dout": np.ones((1, 1, 2, 2)), "x": np.arange(9.0).reshape(1, 1, 3, 3),
     "w": np.ones((1, 1, 2, 2)), "stride": 1, "pad": 0},
    {"dout": np.ones((1, 1, 2, 2)), "x": np.arange(9.0).reshape(1, 1, 3, 3),
     "w": np.arange(4.0).reshape(1, 1, 2, 2), "stride": 2, "pad": 1},
)

CONV2D_BACKWARD = Exercise(
    name="conv2d_backward",
    signature="conv2d_backward(dout, x, w, stride, pad) -> (dx, dw, db)",
    task="the three gradients of a strided, zero-padded 2-D convolution (cross-correlation)",
    notebook="00_layers_backprop.ipynb",
    checks=(
        Check("returns (dx, dw, db) shaped like x, w and (F,)", conv_inputs(), _grads_shape,
              CONV_EXAMPLES),
        Check("db[f] is the sum of dout[:, f]", conv_inputs(), _db_sums, CONV_EXAMPLES),
        Check("dw is the slope of L = sum(dout * conv2d(x, w)) along a direction in w",
              conv_inputs(), _dw_slope, CONV_EXAMPLES),
        Check("dx is the slope of L along a direction in x (strides and padding)",
              conv_inputs(), _dx_slope, CONV_EXAMPLES),
        Check("agrees with tinyspp.ops.conv2d_backward", conv_inputs(), _conv_match_library,
              CONV_EXAMPLES),
    ),
)

