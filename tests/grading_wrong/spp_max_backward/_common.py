"""Shared by the wrong backward versions: adaptive bins and a loop over every bin."""


def edges(size, n):
    return [(i * size // n, ((i + 1) * size + n - 1) // n) for i in range(n)]


def bins(x, levels):
    """Yield (column, n, c, y0, y1, x0, x1) for every output column of spp_max."""
    N, C, H, W = x.shape
    off = 0
    for n in levels:
        for c in range(C):
            for by, (y0, y1) in enumerate(edges(H, n)):
                for bx, (x0, x1) in enumerate(edges(W, n)):
                    yield off + (c * n + by) * n + bx, n, c, y0, y1, x0, x1
        off += C * n * n
