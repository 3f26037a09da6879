"""Statistics for comparing two models on the same test items.

A claim such as "multi-size training beats single-size training" is a statement about two models
evaluated on the *same* test images, so the tests here are paired:

- :func:`mcnemar` -- the exact McNemar test on two vectors of per-item correctness. Only the
  discordant items count: ``b`` items that model A gets right and B wrong, ``c`` the other way
  round. Under the null hypothesis (both models equally accurate) each discordant item is a fair
  coin, so ``b ~ Binomial(b + c, 1/2)`` and the two-sided p-value is the binomial tail.
- :func:`paired_bootstrap` -- resample item indices with replacement and recompute any statistic
  of the difference (an mAP difference, say, which is not a sum over items).
- :func:`mean_sd` -- mean and sample standard deviation over seeds.
- :func:`verdict` -- the rule that turns a direction and a p-value into the words used in the
  claims tables.

Everything is NumPy only; the binomial tail is computed exactly in integer arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "McNemarResult",
    "BootstrapResult",
    "mean_sd",
    "mcnemar",
    "paired_bootstrap",
    "binom_two_sided",
    "verdict",
    "VERDICTS",
]

#: The three verdicts a claim can get.
VERDICTS = ("reproduced", "partly", "not reproduced at this scale")


class McNemarResult(NamedTuple):
    """Result of :func:`mcnemar`.

    Attributes
    ----------
    b : int
        Items model A gets right and model B gets wrong.
    c : int
        Items model A gets wrong and model B gets right.
    p_value : float
        Exact two-sided p-value of ``b`` under ``Binomial(b + c, 1/2)`` (1.0 when ``b + c == 0``).
    """

    b: int
    c: int
    p_value: float


class BootstrapResult(NamedTuple):
    """Result of :func:`paired_bootstrap`.

    Attributes
    ----------
    diff : float
        The statistic on the original items (``stat(arange(n_items))``), a difference ``a - b``.
    low, high : float
        95 % percentile interval of the bootstrap differences.
    p_value : float
        Two-sided bootstrap p-value: twice the smaller fraction of resamples on either side of 0
        (with the usual +1 correction), capped at 1.
    """

    diff: float
    low: float
    high: float
    p_value: float


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of ``values``.

    Parameters
    ----------
    values : sequence of float
        One number per seed, at least one.

    Returns
    -------
    mean, sd : float
        ``sd`` is ``nan`` for a single value (a spread needs two seeds).

    Examples
    --------
    >>> mean_sd([1.0, 2.0, 3.0])
    (2.0, 1.0)
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"mean_sd: values must be a non-empty 1-D sequence, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("mean_sd: values must be finite")
    sd = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    return float(v.mean()), sd


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair-coin trials.

    The binomial(n, 1/2) distribution is symmetric, so the two-sided p-value is twice the smaller
    tail, ``2 * P(K <= min(k, n - k))``, capped at 1. This equals
    ``scipy.stats.binomtest(k, n, 0.5).pvalue``.

    Parameters
    ----------
    k : int
        Number of successes, ``0 <= k <= n``.
    n : int
        Number of trials, ``n >= 0``; ``n == 0`` gives 1.0.

    Returns
    -------
    float

    Examples
    --------
    >>> binom_two_sided(0, 5)       # 2 / 32
    0.0625
    >>> binom_two_sided(3, 6)
    1.0
    """
    if isinstance(k, bool) or isinstance(n, bool):
        raise TypeError("binom_two_sided: k and n must be integers, got bool")
    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"binom_two_sided: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 1.0
    m = min(k, n - k)
    if 2 * m == n:
        return 1.0
    # exact integer arithmetic: 2 * sum_{i<=m} C(n, i) / 2**n, one correctly rounded division
    tail = sum(math.comb(n, i) for i in range(m + 1))
    return min(1.0, (2 * tail) / (1 << n))


def _as_bool_vector(x, name: str, func: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{func}: {name} must be 1-D (one entry per item), got shape {a.shape}")
    if a.dtype != np.bool_:
        if not np.issubdtype(a.dtype, np.number) or not np.all((a == 0) | (a == 1)):
            raise ValueError(f"{func}: {name} must hold booleans (or 0/1), got dtype {a.dtype}")
        a = a.astype(bool)
    return a


def mcnemar(correct_a, correct_b) -> McNemarResult:
    """Exact McNemar test of two classifiers on the same items.

    Parameters
    ----------
    correct_a, correct_b : array_like of bool, shape (n_items,)
        Whether model A (resp. B) classified each item correctly. Item ``i`` must be the same test
        image in both vectors. To pool several seeds, concatenate the per-seed vectors.

    Returns
    -------
    McNemarResult
        ``b`` (A right, B wrong), ``c`` (A wrong, B right) and the exact two-sided p-value.

    Examples
    --------
    >>> r = mcnemar([1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0])
    >>> r.b, r.c, r.p_value
    (5, 0, 0.0625)
    """
    a = _as_bool_vector(correct_a, "correct_a", "mcnemar")
    b = _as_bool_vector(correct_b, "correct_b", "mcnemar")
    if a.shape != b.shape:
        raise ValueError(
            f"mcnemar: correct_a and correct_b must have the same length, got {a.size} and {b.size}"
        )
    nb = int(np.count_nonzero(a & ~b))
    nc = int(np.count_nonzero(~a & b))
    return McNemarResult(nb, nc, binom_two_sided(nb, nb + nc))


def paired_bootstrap(
    stat: Callable[[np.ndarray], float],
    n_items: int,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> BootstrapResult:
    """Paired bootstrap over items of a difference statistic.

    Each resample draws ``n_items`` item indices with replacement and evaluates ``stat`` on them;
    because both models are scored on the same resampled items, the pairing is kept.

    Parameters
    ----------
    stat : callable
        ``stat(idx) -> float``, the difference ``a - b`` (e.g. accuracy of A minus accuracy of B,
        or an mAP difference) computed on the items ``idx`` (int ndarray of shape (n_items,),
        with repeats).
    n_items : int
        Number of test items, at least 2.
    n_boot : int, default 2000
        Number of resamples, at least 100.
    seed : int, default 0
        Seed of the resampling generator.

    Returns
    -------
    BootstrapResult
        ``diff`` on the original items, the 95 % percentile interval ``(low, high)`` and a
        two-sided p-value for ``diff == 0``.

    Examples
    --------
    >>> a = np.array([1, 1, 1, 0, 1, 1, 1, 1, 0, 1], dtype=float)
    >>> b = np.array([0, 1, 0, 0, 1, 0, 1, 0, 0, 1], dtype=float)
    >>> r = paired_bootstrap(lambda i: a[i].mean() - b[i].mean(), 10, n_boot=500)
    >>> round(r.diff, 2), bool(r.low > 0)
    (0.4, True)
    """
    if isinstance(n_items, bool) or not isinstance(n_items, int | np.integer):
        raise TypeError(f"paired_bootstrap: n_items must be an int, got {type(n_items).__name__}")
    if n_items < 2:
        raise ValueError(f"paired_bootstrap: n_items must be >= 2, got {n_items}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 100:
        raise ValueError(f"paired_bootstrap: n_boot must be an int >= 100, got {n_boot!r}")
    if not callable(stat):
        raise TypeError("paired_bootstrap: stat must be callable as stat(idx) -> float")
    rng = np.random.default_rng(seed)
    diff = float(stat(np.arange(n_items)))
    boots = np.empty(n_boot, dtype=np.float64)
    for k in range(n_boot):
        boots[k] = float(stat(rng.integers(0, n_items, size=n_items)))
    if not np.all(np.isfinite(boots)) or not math.isfinite(diff):
        raise ValueError("paired_bootstrap: stat returned a non-finite value")
    low, high = np.percentile(boots, [2.5, 97.5])
    below = (np.count_nonzero(boots <= 0) + 1) / (n_boot + 1)
    above = (np.count_nonzero(boots >= 0) + 1) / (n_boot + 1)
    p = min(1.0, 2.0 * min(below, above))
    return BootstrapResult(diff, float(low), float(high), float(p))


def verdict(
    direction_ok: bool,
    p_value: float,
    *,
    alpha: float = 0.05,
    seeds_agree: bool | None = None,
) -> str:
    """Turn a measured comparison into one of :data:`VERDICTS`.

    The rule, stated once for every claims table:

    - **reproduced**: the difference has the paper's sign and the paired test rejects "no
      difference" at level ``alpha`` (and, when ``seeds_agree`` is given, every seed has the
      paper's sign);
    - **partly**: the paper's sign, but not significant (or the seeds disagree);
    - **not reproduced at this scale**: the opposite sign.

    Parameters
    ----------
    direction_ok : bool
        Whether tinyspp's mean difference points the way the paper's does.
    p_value : float
        Two-sided p-value of the paired statistic, in [0, 1].
    alpha : float, default 0.05
    seeds_agree : bool or None
        Whether all seeds show the paper's sign; ``None`` when not applicable.

    Returns
    -------
    str

    Examples
    --------
    >>> verdict(True, 0.001)
    'reproduced'
    >>> verdict(True, 0.3)
    'partly'
    >>> verdict(False, 0.001)
    'not reproduced at this scale'
    """
    if not (isinstance(p_value, float | int) and 0.0 <= p_value <= 1.0):
        raise ValueError(f"verdict: p_value must be a number in [0, 1], got {p_value!r}")
    if not direction_ok:
        return VERDICTS[2]
    if p_value < alpha and seeds_agree is not False:
        return VERDICTS[0]
    return VERDICTS[1]
