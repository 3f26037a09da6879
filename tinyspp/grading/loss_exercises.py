"""Exercise on the loss: ``softmax_cross_entropy(logits, labels) -> (loss, dlogits)``.

Besides the comparison with the library, the grader differentiates the student's own loss
numerically and checks it against the student's gradient, and feeds logits of size 1e4.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..gradcheck import numerical_grad
from . import reference
from .layer_exercises import small_ints
from .runner import Check, Exercise, Mismatch, as_array, call, close


@st.composite
def loss_inputs(draw, scale=1.0):
    """``{"logits": (N, K) float64, "labels": (N,) int64}``; logits are small integers times
    ``scale`` (1e4 for the overflow check)."""
    N, K = draw(st.integers(1, 4)), draw(st.integers(2, 6))
    logits = draw(small_ints((N, K), -5, 5)) * scale
    labels = np.asarray(draw(st.lists(st.integers(0, K - 1), min_size=N, max_size=N)),
                        dtype=np.int64)
    return {"logits": logits, "labels": labels}


def _loss_and_grad(fn, case):
    got = call(fn, case)
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise Mismatch("a tuple (loss, dlogits)", f"{type(got).__name__}: {got!r}"[:200],
                       "return the loss and its gradient as a tuple")
    loss, dlogits = got
    try:
        loss = float(loss)
    except (TypeError, ValueError):
        raise Mismatch("a float loss", repr(loss)[:200], "the loss is one number") from None
    return loss, as_array(dlogits, case["logits"].shape, "dlogits")


def _loss_shapes(fn, case):
    _loss_and_grad(fn, case)


def _shift_invariant(fn, case):
    loss, grad = _loss_and_grad(fn, case)
    shifted = {"logits": case["logits"] + 7.0, "labels": case["labels"]}
    loss2, grad2 = _loss_and_grad(fn, shifted)
    close(np.array([loss]), np.array([loss2]), "softmax is unchanged when a constant is added "
          "to every logit of a row, so the loss is too")
    close(grad, grad2, "and so is the gradient")


def _stable(fn, case):
    loss, grad = _loss_and_grad(fn, case)
    if not (np.isfinite(loss) and np.isfinite(grad).all()):
        raise Mismatch("a finite loss and gradient", f"loss = {loss!r}, gradient finite: "
                       f"{bool(np.isfinite(grad).all())}", "exp(1e4) overflows: subtract each "
                       "row's maximum before exponentiating (log-sum-exp)")


def _gradient_rows(fn, case):
    logits, labels = case["logits"], case["labels"]
    N = logits.shape[0]
    _, grad = _loss_and_grad(fn, case)
    close(np.zeros(N), grad.sum(axis=1), "dlogits = (softmax - onehot) / N, so every row sums "
          "to 0")
    off = grad.copy()
    off[np.arange(N), labels] = 0.0
    if (off < -1e-12).any() or (grad[np.arange(N), labels] > 1e-12).any():
        raise Mismatch("dlogits >= 0 except at the label, <= 0 at the label", grad,
                       "softmax probabilities are positive; only the label's entry has -1")


def _loss_gradient_check(fn, case):
    logits, labels = case["logits"], case["labels"]
    _, grad = _loss_and_grad(fn, case)
    numeric = numerical_grad(lambda z: _loss_and_grad(fn, {"logits": z, "labels": labels})[0],
                             logits.copy())
    close(numeric, grad, "dlogits must be the gradient of YOUR loss (centred differences, "
          "eps = 1e-6): is the loss the MEAN over the batch, and dlogits divided by N?",
          rtol=1e-5, atol=1e-7)


def _loss_match_library(fn, case):
    e_loss, e_grad = reference.softmax_cross_entropy(case["logits"], case["labels"])
    loss, grad = _loss_and_grad(fn, case)
    close(np.array([e_loss]), np.array([loss]), "the loss differs from "
          "tinyspp.ops.softmax_cross_entropy (mean over the batch of -log softmax[label])")
    close(e_grad, grad, "dlogits differs from tinyspp.ops.softmax_cross_entropy")


LOSS_EXAMPLES = (
    {"logits": np.zeros((2, 4)), "labels": np.array([0, 3])},
    {"logits": np.array([[1e4, 0.0, -1e4]]), "labels": np.array([1])},
)

SOFTMAX_CROSS_ENTROPY = Exercise(
    name="softmax_cross_entropy",
    signature="softmax_cross_entropy(logits, labels) -> (loss, dlogits)",
    task="the mean softmax cross-entropy of a batch and its gradient, stable for huge logits",
    notebook="00_layers_backprop.ipynb",
    checks=(
        Check("returns (loss, dlogits): a float and an array shaped like logits", loss_inputs(),
              _loss_shapes, LOSS_EXAMPLES),
        Check("adding a constant to every logit changes neither the loss nor the gradient",
              loss_inputs(), _shift_invariant, LOSS_EXAMPLES),
        Check("finite for logits of size 1e4 (no overflow)", loss_inputs(scale=1e4), _stable,
              LOSS_EXAMPLES[1:]),
        Check("each row of dlogits sums to 0, negative only at the label", loss_inputs(),
              _gradient_rows, LOSS_EXAMPLES),
        Check("dlogits is the gradient of the loss (centred differences)", loss_inputs(),
              _loss_gradient_check, LOSS_EXAMPLES[:1]),
        Check("agrees with tinyspp.ops.softmax_cross_entropy", loss_inputs(),
              _loss_match_library, LOSS_EXAMPLES),
    ),
)
