"""Exercise: the gradient of adaptive max SPP (notebook 02_spp_layer).

Task: given the upstream gradient ``dout`` of shape ``(N, C * sum(n*n))`` (the layout of
``spp_max``), the input ``x (N, C, H, W)`` and ``levels``, return ``dx`` shaped like ``x``: each
bin's gradient goes to the cell holding the bin's maximum; when several cells tie, to the FIRST
of them in row-major order. Bins overlap and several bins can pick the same cell: their
gradients add up.

Check it with ``python -m tinyspp grade exercises/ --only spp_max_backward``.
"""


def spp_max_backward(dout, x, levels):
    """``dx`` of ``spp_max(x, levels)`` for the upstream gradient ``dout``."""
    raise NotImplementedError(
        "spp_max_backward: for each bin, np.argmax over the bin's cells flattened in "
        'row-major order gives the first maximum; unravel it with divmod and ADD dout there '
        '(+=)'
    )
