"""Wrong: rounds the stride to the nearest integer instead of flooring it."""


def paper_window_stride(size, n):
    if size < n:
        raise ValueError("paper_window_stride: size < n")
    return -(-size // n), round(size / n)
