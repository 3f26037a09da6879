"""Wrong: floor(x0 / S) and ceil(x1 / S), without the paper's +1 and -1."""


def map_window(box, stride):
    x0, y0, x1, y1 = box
    cells = [x0 // stride, y0 // stride, -(-x1 // stride), -(-y1 // stride)]
    return tuple(int(v) for v in cells)
