"""Shared by the wrong conv backward versions: the naive loops, with switches for the mistakes."""
import numpy as np


def backward(dout, x, w, stride, pad, crop_at=None, window_step=None, flip=False):
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    _, _, oh, ow = dout.shape
    step = stride if window_step is None else window_step
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxpad = np.zeros((N, C, H + 2 * pad + kh * stride, W + 2 * pad + kw * stride))
    wk = w[:, :, ::-1, ::-1] if flip else w
    dw = np.zeros_like(w)
    for n in range(N):
        for f in range(F):
            for i in range(oh):
                for j in range(ow):
                    g = dout[n, f, i, j]
                    window = xpad[n, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
                    dw[f] += g * window
                    dxpad[n, :, i * step:i * step + kh, j * step:j * step + kw] += g * wk[f]
    start = pad if crop_at is None else crop_at
    dx = dxpad[:, :, start:start + H, start:start + W]
    if flip:
        dw = dw[:, :, ::-1, ::-1]
    return dx, dw, dout.sum(axis=(0, 2, 3))
