"""Wrong: Fast R-CNN's rounding, round(x / S) for both corners, instead of the paper's rule."""


def map_window(box, stride):
    return tuple(int(round(v / stride)) for v in box)
