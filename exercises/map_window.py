"""Exercise: map an image window onto the feature map (SPP-net Appendix A; notebook 04).

Task: ``box = [x0, y0, x1, y1]`` is a window in image pixels and ``stride`` the product ``S`` of
the strides up to the pooled feature map; feature cell ``x'`` is centred near pixel ``S * x'``.
Return the inclusive feature cells ``(x0', y0', x1', y1')`` (ints) of the paper's rule

    x0' = floor(x0 / S) + 1        x1' = ceil(x1 / S) - 1        (y likewise),

that is, the cells whose centre lies strictly inside the window. tinyspp's convention for a
window too small for any cell: on that axis it collapses to the single cell nearest the window's
centre, ``floor((x0 + x1) / (2 * S) + 1/2)``, so the result is never empty.
Example: ``map_window([0, 0, 100, 64], 16) == (1, 1, 6, 3)``.

Check it with ``python -m tinyspp grade exercises/ --only map_window``.
"""


def map_window(box, stride):
    """Inclusive feature cells ``(x0', y0', x1', y1')`` of the image window ``box``."""
    raise NotImplementedError(
        'map_window: per axis, lo = x0 // S + 1 and hi = -(-x1 // S) - 1 (integer floor and '
        'ceil); if lo > hi use the centre cell (x0 + x1 + S) // (2 * S) for both'
    )
