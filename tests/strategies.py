"""Hypothesis strategies that build valid inputs directly (no filtering)."""

import numpy as np
from hypothesis import strategies as st

MODES = ("adaptive", "paper", "caffe")


def tie_free(shape, seed, dtype=np.float64, scale=1.0):
    """An array of distinct values: a random permutation of 0..size-1 plus small jitter,
    centred and scaled. Max-pooling gradients are well defined on it (no ties, and every gap
    between values is >= ~0.8/size * scale, far above a finite-difference step)."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    v = rng.permutation(size).astype(np.float64) + rng.uniform(0.0, 0.2, size)
    v = (v - size / 2) / max(size, 1) * scale
    return v.reshape(shape).astype(dtype)


@st.composite
def nchw_shapes(draw, max_n=3, max_c=3, min_hw=1, max_hw=12):
    n = draw(st.integers(1, max_n))
    c = draw(st.integers(1, max_c))
    h = draw(st.integers(min_hw, max_hw))
    w = draw(st.integers(min_hw, max_hw))
    return (n, c, h, w)


@st.composite
def level_sets(draw, max_level=8, max_len=4):
    return tuple(draw(st.lists(st.integers(1, max_level), min_size=1, max_size=max_len)))


seeds = st.integers(0, 2**31 - 1)


@st.composite
def roi_rows(draw, N, H, W, min_r=0, max_r=10):
    """Valid RoIs ``(R, 5)`` int64 of an (N, ., H, W) map, built directly: point RoIs (one cell),
    RoIs reaching the bottom-right border, whole-map RoIs (every border) and random ones."""
    rows = []
    for _ in range(draw(st.integers(min_r, max_r))):
        kind = draw(st.sampled_from(["any", "point", "border", "full"]))
        b = draw(st.integers(0, N - 1))
        if kind == "full":
            rows.append([b, 0, 0, W - 1, H - 1])
            continue
        x0, y0 = draw(st.integers(0, W - 1)), draw(st.integers(0, H - 1))
        if kind == "point":
            rows.append([b, x0, y0, x0, y0])
        elif kind == "border":
            rows.append([b, x0, y0, W - 1, H - 1])
        else:
            rows.append([b, x0, y0, draw(st.integers(x0, W - 1)), draw(st.integers(y0, H - 1))])
    return np.array(rows, dtype=np.int64).reshape(-1, 5)

