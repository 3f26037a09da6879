"""Wrong: the paper's formula without tinyspp's collapse, so small windows map to inverted boxes."""


def map_window(box, stride):
    x0, y0, x1, y1 = box
    return x0 // stride + 1, y0 // stride + 1, -(-x1 // stride) - 1, -(-y1 // stride) - 1
