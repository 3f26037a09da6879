"""Wrong tie rule: splits a bin's gradient equally over all its tied maxima."""
import numpy as np
from _common import bins


def spp_max_backward(dout, x, levels):
    dx = np.zeros_like(x)
    for col, _n, c, y0, y1, x0, x1 in bins(x, levels):
        for i in range(x.shape[0]):
            window = x[i, c, y0:y1, x0:x1]
            mask = window == window.max()
            dx[i, c, y0:y1, x0:x1] += mask * dout[i, col] / mask.sum()
    return dx
