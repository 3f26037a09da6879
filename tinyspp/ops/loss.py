"""Softmax cross-entropy: the classification loss, with its gradient in one call.

Examples
--------
>>> import numpy as np
>>> loss, dlogits = softmax_cross_entropy(np.zeros((2, 4)), np.array([0, 3]))
>>> round(loss, 6) == round(float(np.log(4)), 6)
True
>>> dlogits[0]
array([-0.375,  0.125,  0.125,  0.125])
"""

from __future__ import annotations

import numpy as np

from ..backend import asnumpy
from ..validate import check_array
from .dispatch import array_module


def softmax_cross_entropy(logits, labels):
    """Mean over the batch of ``-log softmax(logits)[n, labels[n]]``, and its gradient.

    Stable for huge logits: the row maximum is subtracted before exponentiating and the loss uses
    ``log-sum-exp``, so ``logits = 1e4`` neither overflows nor gives ``log(0)``.

    Parameters
    ----------
    logits : ndarray of shape (N, K), floating
    labels : ndarray of shape (N,), integer dtype, values in ``[0, K)``

    Returns
    -------
    loss : float
    dlogits : ndarray of shape (N, K), dtype of ``logits``
        ``(softmax(logits) - onehot(labels)) / N``.
    """
    func = "softmax_cross_entropy"
    xp = array_module(func, logits=logits, labels=labels)
    N, K = check_array(logits, "logits", func, ndim=2, layout="(N, K)")
    if min(N, K) < 1:
        raise ValueError(f"{func}: logits must have no empty axis, got shape {(N, K)}")
    check_array(labels, "labels", func, floating=False)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{func}: labels must have an integer dtype, got {labels.dtype}")
    if labels.shape != (N,):
        raise ValueError(f"{func}: labels must have shape (N,) = ({N},), got {labels.shape}")
    if xp is np:  # validate first (free on the host)
        _check_labels(int(labels.min()), int(labels.max()), K, func)
    shifted = logits - logits.max(axis=1, keepdims=True)  # (N, K), each row's max is 0
    exp = xp.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)  # (N, 1), >= 1
    rows = xp.arange(N)
    log_prob = shifted[rows, labels] - xp.log(sum_exp[:, 0])  # (N,)
    if xp is np:
        loss = -float(log_prob.mean())
    else:
        # CuPy: the loss, the labels' min and max come to the host in ONE transfer (the one
        # sync a float loss needs); out-of-range labels wrapped around in the gather above,
        # and raise here, before anything is returned
        mean, lo, hi = (float(v) for v in asnumpy(xp.stack([
            log_prob.mean().astype(np.float64), labels.min().astype(np.float64),
            labels.max().astype(np.float64)])))
        _check_labels(int(lo), int(hi), K, func)
        loss = -mean
    dlogits = exp / sum_exp
    dlogits[rows, labels] -= 1
    dlogits /= N
    return loss, dlogits


def _check_labels(lo: int, hi: int, K: int, func: str) -> None:
    if lo < 0 or hi >= K:
        raise ValueError(f"{func}: labels must lie in [0, K) = [0, {K}), got min {lo}, max {hi}")
