"""Wrong: returns stride 0 for size < n instead of raising ValueError."""


def paper_window_stride(size, n):
    return -(-size // n), size // n
