"""Numerical gradients by centred differences, used by the tests and the notebooks.

Examples
--------
>>> import numpy as np
>>> x = np.array([1.0, -2.0, 3.0])
>>> g = numerical_grad(lambda v: float((v ** 2).sum()), x)
>>> rel_error(g, 2 * x) < 1e-9
True
"""

from __future__ import annotations

import numpy as np

from .backend import asnumpy, get_array_module


def rel_error(a, b, floor: float = 1e-12) -> float:
    """Max elementwise relative error ``|a - b| / max(|a| + |b|, floor)``."""
    a = asnumpy(a).astype(np.float64)
    b = asnumpy(b).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), floor)))


def numerical_grad(f, x, eps: float = 1e-6):
    """Gradient of the scalar function ``f`` at ``x`` by centred differences, element by element.

    ``x`` is perturbed in place and restored; ``f(x)`` must return a Python/NumPy scalar.
    Cost: ``2 * x.size`` calls of ``f``.
    """
    xp = get_array_module(x)
    grad = xp.zeros(x.shape, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    if flat.base is not x and flat is not x and not x.flags.c_contiguous:
        raise ValueError("numerical_grad: x must be C-contiguous (it is perturbed in place)")
    for i in range(flat.size):
        old = flat[i].item()
        flat[i] = old + eps
        fp = float(f(x))
        flat[i] = old - eps
        fm = float(f(x))
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return grad


def numerical_grad_of_output(f, x, dout, eps: float = 1e-6):
    """Numerical ``d sum(f(x) * dout) / dx``: the vector-Jacobian product a backward computes."""
    xp = get_array_module(x, dout)
    return numerical_grad(lambda v: float(xp.sum(f(v) * dout)), x, eps)


def directional_check(f, x, dx, eps: float = 1e-6, rng=None):
    """Compare the analytic gradient ``dx`` of scalar ``f`` at ``x`` along a random direction.

    Returns ``(numeric, analytic)`` directional derivatives: ``(f(x + eps*u) - f(x - eps*u)) /
    2eps`` and ``<dx, u>`` for a unit direction ``u`` drawn from ``rng`` (a seed or Generator).
    Two calls of ``f`` whatever the size of ``x``: the check for whole networks.
    """
    rng = np.random.default_rng(rng)
    xp = get_array_module(x)
    u = rng.standard_normal(x.shape)
    u /= np.linalg.norm(u)
    u = xp.asarray(u, dtype=x.dtype)
    numeric = (float(f(x + eps * u)) - float(f(x - eps * u))) / (2 * eps)
    analytic = float(xp.sum(dx * u))
    return numeric, analytic
