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
