"""Exercise: adaptive max spatial pyramid pooling, forward (notebook 02_spp_layer).

Task: pool ``x`` of shape ``(N, C, H, W)`` with every level ``n`` of ``levels`` (e.g. ``(4, 2,
1)``): bin ``(by, bx)`` of level ``n`` is the maximum over rows ``floor(by*H/n) ..
ceil((by+1)*H/n) - 1`` and columns ``floor(bx*W/n) .. ceil((bx+1)*W/n) - 1``. Return an array
of shape ``(N, C * sum(n*n))`` in the library's layout: levels in the order given; within a
level channel-major, column ``offset + (c*n + by)*n + bx``.

Check it with ``python -m tinyspp grade exercises/ --only spp_max``.
"""


def spp_max(x, levels):
    """Max SPP of ``x (N, C, H, W)``: an ``(N, C * sum(n*n))`` array, dtype of ``x``."""
    raise NotImplementedError(
        'spp_max: loop over levels and bins, take x[:, :, y0:y1, x0:x1].max(axis=(2, 3)), '
        "reshape each level's (N, C, n, n) result to (N, C*n*n) and concatenate"
    )
