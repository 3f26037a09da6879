"""Wrong tie rule: the gradient goes to the LAST maximum of a bin in row-major order."""
import numpy as np
from _common import bins


def spp_max_backward(dout, x, levels):
    dx = np.zeros_like(x)
    for col, _n, c, y0, y1, x0, x1 in bins(x, levels):
        for i in range(x.shape[0]):
            window = x[i, c, y0:y1, x0:x1]
            flat = window.size - 1 - int(np.argmax(window.ravel()[::-1]))
            h, w = divmod(flat, x1 - x0)
            dx[i, c, y0 + h, x0 + w] += dout[i, col]
    return dx
