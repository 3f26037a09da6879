"""Wrong: multiplies by a float bin width, ceil((i + 1) * (size / n)), which rounds some edges
up past an integer (e.g. size=29, n=7)."""
import math


def bin_edges(size, n):
    width = size / n
    return [(math.floor(i * width), math.ceil((i + 1) * width)) for i in range(n)]
