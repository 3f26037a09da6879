"""Exercise: the window and stride of the paper's Sec. 2.3 rule (notebook 01_bin_math).

Task: for an axis of length ``size`` pooled into ``n`` bins, return ``(window, stride)`` with
``window = ceil(size / n)`` and ``stride = floor(size / n)``. When ``size < n`` the stride would
be 0: raise ``ValueError`` with a message that names the problem. Example:
``paper_window_stride(13, 3) == (5, 4)`` (the paper's Fig. 4).

Check it with ``python -m tinyspp grade exercises/ --only paper_window_stride``.
"""


def paper_window_stride(size, n):
    """``(ceil(size/n), floor(size/n))``; a ValueError for ``size < n``."""
    raise NotImplementedError(
        'paper_window_stride: two integer divisions, size // n and (size + n - 1) // n; check'
        ' size < n first'
    )
