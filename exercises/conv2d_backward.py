"""Exercise: the backward pass of a 2-D convolution (notebook 00_layers_backprop).

The forward pass (cross-correlation, as in every deep-learning library) is
``out[n, f, i, j] = b[f] + sum_{c, p, q} xpad[n, c, i*stride + p, j*stride + q] * w[f, c, p, q]``
with ``xpad`` the input zero-padded by ``pad`` on every side and
``oh = (H + 2*pad - kh) // stride + 1``.

Task: given ``dout (N, F, oh, ow)``, ``x (N, C, H, W)``, ``w (F, C, kh, kw)``, ``stride`` and
``pad``, return ``(dx, dw, db)`` shaped like ``x``, ``w`` and ``(F,)``.

Check it with ``python -m tinyspp grade exercises/ --only conv2d_backward``.
"""


def conv2d_backward(dout, x, w, stride, pad):
    """``(dx, dw, db)`` of the convolution ``conv2d_forward(x, w, b, stride, pad)``."""
    raise NotImplementedError(
        'conv2d_backward: db sums dout over n, i, j; dw[f] adds dout[n, f, i, j] times the '
        'window of xpad it saw; dxpad adds dout[n, f, i, j] * w[f] back onto that window; '
        'finally crop the padding: dx = dxpad[:, :, pad:pad + H, pad:pad + W]'
    )
