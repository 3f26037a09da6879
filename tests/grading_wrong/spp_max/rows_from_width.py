"""Wrong: bins the rows with the width's edges (a square-map assumption): right only when H == W."""
import numpy as np


def _edges(size, n):
    return [(i * size // n, ((i + 1) * size + n - 1) // n) for i in range(n)]


def spp_max(x, levels):
    N, C, H, W = x.shape
    parts = []
    for n in levels:
        out = np.empty((N, C, n, n), dtype=x.dtype)
        for by, (y0, y1) in enumerate(_edges(W, n)):
            for bx, (x0, x1) in enumerate(_edges(W, n)):
                out[:, :, by, bx] = x[:, :, min(y0, H - 1):max(min(y1, H), 1), x0:x1].max(
                    axis=(2, 3))
        parts.append(out.reshape(N, -1))
    return np.concatenate(parts, axis=1)
