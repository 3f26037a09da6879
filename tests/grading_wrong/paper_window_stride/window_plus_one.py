"""Wrong: window = size // n + 1, one too large when n divides size."""


def paper_window_stride(size, n):
    if size < n:
        raise ValueError("paper_window_stride: size < n")
    return size // n + 1, size // n
