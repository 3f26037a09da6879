"""Exercise: softmax cross-entropy and its gradient (notebook 00_layers_backprop).

Task: for ``logits`` of shape ``(N, K)`` and integer ``labels`` of shape ``(N,)`` (values in
``[0, K)``), return ``(loss, dlogits)``: the mean over the batch of ``-log softmax(logits)[n,
labels[n]]`` as a float, and its gradient ``(softmax(logits) - onehot(labels)) / N``. It must
stay finite for huge logits (``1e4``): ``exp(1e4)`` overflows.

Check it with ``python -m tinyspp grade exercises/ --only softmax_cross_entropy``.
"""


def softmax_cross_entropy(logits, labels):
    """``(loss, dlogits)`` of the mean softmax cross-entropy of a batch."""
    raise NotImplementedError(
        "softmax_cross_entropy: subtract each row's maximum first; then log softmax = shifted"
        ' - log(sum(exp(shifted))) along each row'
    )
