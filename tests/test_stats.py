"""tinyspp.stats: McNemar against hand counts and scipy's exact binomial test, the paired
bootstrap's interval and p-value, mean/sd, the verdict rule, bad input."""

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

from tinyspp.stats import (
    VERDICTS,
    binom_two_sided,
    mcnemar,
    mean_sd,
    paired_bootstrap,
    verdict,
)


def test_mean_sd_uses_ddof_1():
    m, s = mean_sd([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert m == 5.0
    assert s == pytest.approx(math.sqrt(32 / 7), rel=1e-15)  # ddof=0 would give 2.0
    m1, s1 = mean_sd([3.5])
    assert m1 == 3.5 and math.isnan(s1)


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]], [1.0, float("nan")]])
def test_mean_sd_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="mean_sd: values"):
        mean_sd(bad)


def test_binomial_tail_by_hand():
    # n = 4: P(K<=0) = 1/16, so two-sided 2/16; P(K<=1) = 5/16 -> 10/16
    assert binom_two_sided(0, 4) == 0.125
    assert binom_two_sided(4, 4) == 0.125
    assert binom_two_sided(1, 4) == 0.625
    assert binom_two_sided(2, 4) == 1.0
    assert binom_two_sided(0, 0) == 1.0
    # n = 10, k = 1: 2 * (1 + 10) / 1024
    assert binom_two_sided(1, 10) == pytest.approx(22 / 1024, rel=1e-13)


@given(st.integers(0, 400).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_binomial_tail_equals_scipy(kn):
    k, n = kn
    expected = scipy.stats.binomtest(k, n, 0.5).pvalue if n > 0 else 1.0
    assert binom_two_sided(k, n) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_binomial_tail_far_in_the_tail():
    # 2 * 2**-60 is exact in binary; a tail of ~1e-161 must not underflow to 0
    assert binom_two_sided(0, 60) == 2.0 ** -59
    p = binom_two_sided(100, 1000)
    assert 0.0 < p < 1e-160
    assert p == pytest.approx(scipy.stats.binomtest(100, 1000, 0.5).pvalue, rel=1e-9)


def test_mcnemar_counts_only_discordant_items():
    a = np.array([1, 1, 1, 0, 0, 1, 0, 1], dtype=bool)
    b = np.array([1, 0, 0, 0, 1, 1, 0, 0], dtype=bool)
    r = mcnemar(a, b)
    assert (r.b, r.c) == (3, 1)
    assert r.p_value == pytest.approx(scipy.stats.binomtest(3, 4, 0.5).pvalue)
    assert r.p_value == 0.625
    swapped = mcnemar(b, a)
    assert (swapped.b, swapped.c, swapped.p_value) == (1, 3, r.p_value)
    same = mcnemar(a, a)
    assert (same.b, same.c, same.p_value) == (0, 0, 1.0)


@given(st.integers(1, 300).flatmap(
    lambda n: st.tuples(st.lists(st.booleans(), min_size=n, max_size=n),
                        st.lists(st.booleans(), min_size=n, max_size=n))))
def test_mcnemar_equals_scipy_binomtest(ab):
    a, b = ab
    r = mcnemar(a, b)
    assert r.b == sum(x and not y for x, y in zip(a, b))
    assert r.c == sum(y and not x for x, y in zip(a, b))
    expected = scipy.stats.binomtest(r.b, r.b + r.c, 0.5).pvalue if r.b + r.c else 1.0
    assert r.p_value == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("a, b, match", [
    ([1, 0], [1, 0, 1], "same length"),
    ([[1, 0]], [[1, 0]], "must be 1-D"),
    ([1, 2], [1, 0], "booleans"),
    (["x", "y"], [1, 0], "booleans"),
])
def test_mcnemar_rejects_bad_input(a, b, match):
    with pytest.raises(ValueError, match=f"mcnemar: .*{match}"):
        mcnemar(a, b)


def test_paired_bootstrap_interval_covers_a_clear_difference():
    rng = np.random.default_rng(1)
    a = rng.random(1000) < 0.9
    b = rng.random(1000) < 0.7
    r = paired_bootstrap(lambda i: a[i].mean() - b[i].mean(), 1000, n_boot=1000, seed=3)
    assert r.diff == pytest.approx(a.mean() - b.mean())
    assert r.low < r.diff < r.high
    assert r.low > 0.1 and r.high < 0.3
    assert r.p_value == pytest.approx(2 / 1001)  # no resample at or below 0
    again = paired_bootstrap(lambda i: a[i].mean() - b[i].mean(), 1000, n_boot=1000, seed=3)
    assert again == r  # the seed fixes the resamples


def test_paired_bootstrap_of_no_difference_is_not_significant():
    rng = np.random.default_rng(2)
    a = rng.random(500) < 0.8
    r = paired_bootstrap(lambda i: a[i].mean() - a[i].mean(), 500, n_boot=200)
    assert (r.diff, r.low, r.high, r.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_bootstrap_keeps_the_pairing():
    # b = a shifted by a constant per item: every paired resample has the same difference,
    # an unpaired one would not
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    b = a - 0.25
    r = paired_bootstrap(lambda i: a[i].mean() - b[i].mean(), 200, n_boot=300)
    assert r.low == pytest.approx(0.25) and r.high == pytest.approx(0.25)


@pytest.mark.parametrize("kw, err, match", [
    (dict(n_items=1), ValueError, "n_items must be >= 2"),
    (dict(n_items=2.0), TypeError, "n_items must be an int"),
    (dict(n_items=10, n_boot=10), ValueError, "n_boot must be an int >= 100"),
])
def test_paired_bootstrap_rejects_bad_input(kw, err, match):
    with pytest.raises(err, match=f"paired_bootstrap: {match}"):
        paired_bootstrap(lambda i: 0.0, **kw)


def test_paired_bootstrap_rejects_non_finite_stat():
    with pytest.raises(ValueError, match="non-finite"):
        paired_bootstrap(lambda i: float("nan"), 10, n_boot=100)


def test_verdict_rule():
    assert verdict(True, 0.01) == VERDICTS[0] == "reproduced"
    assert verdict(True, 0.01, seeds_agree=False) == "partly"
    assert verdict(True, 0.2) == "partly"
    assert verdict(False, 0.0) == "not reproduced at this scale"
    with pytest.raises(ValueError, match="verdict: p_value"):
        verdict(True, 1.5)
