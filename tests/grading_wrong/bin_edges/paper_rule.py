"""Wrong: the paper's sliding-window rule (window ceil, stride floor) instead of the adaptive one:
it drops trailing rows when size mod n >= 2."""


def bin_edges(size, n):
    window, stride = -(-size // n), max(size // n, 1)
    return [(i * stride, min(i * stride + window, size)) for i in range(n)]
