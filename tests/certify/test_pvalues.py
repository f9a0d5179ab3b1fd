"""p-values for H: R > ε — exact values, range, super-uniformity at R = ε, and power."""

import math

import numpy as np
import pytest

from onnxprune.certify import binomial_pvalue, hoeffding_bentkus_pvalue, wsr_pvalue
from onnxprune.errors import OnnxPruneError

EPS, N, TRIALS = 0.1, 500, 4000
LEVELS = (0.01, 0.05, 0.1, 0.2)


def _bernoulli_losses(risk, seed, trials=TRIALS, n=N):
    return (np.random.default_rng(seed).random((trials, n)) < risk).astype(np.float64)


def _all_pvalues(losses):
    n = losses.shape[1]
    return {
        "binomial": binomial_pvalue(losses.sum(axis=1).astype(int), n, EPS),
        "hb": hoeffding_bentkus_pvalue(losses.mean(axis=1), n, EPS),
        "wsr": wsr_pvalue(losses, EPS, delta=0.1),
    }


@pytest.fixture(scope="module")
def null_pvalues():
    return _all_pvalues(_bernoulli_losses(EPS, seed=2024))


# --- validity ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["binomial", "hb", "wsr"])
def test_super_uniform_at_the_boundary_of_the_null(null_pvalues, method):
    # R = ε is the least favourable null: P(p <= u) must not exceed u (up to 3 MC s.e.).
    p = null_pvalues[method]
    for u in LEVELS:
        se = math.sqrt(u * (1 - u) / TRIALS)
        assert np.mean(p <= u) <= u + 3 * se, (method, u, np.mean(p <= u))


def test_binomial_is_nearly_exact_at_the_boundary(null_pvalues):
    # Exactness is what makes it the sharpest test: rejection rate close to δ, not far below.
    assert 0.06 <= np.mean(null_pvalues["binomial"] <= 0.1) <= 0.1 + 3 * math.sqrt(0.09 / TRIALS)


@pytest.mark.parametrize("method", ["binomial", "hb", "wsr"])
def test_has_power_when_risk_is_well_below_eps(method):
    p = _all_pvalues(_bernoulli_losses(EPS / 3, seed=7, trials=500))[method]
    assert np.mean(p <= 0.1) >= 0.95


@pytest.mark.parametrize("method", ["binomial", "hb", "wsr"])
def test_values_lie_in_unit_interval(method):
    losses = _bernoulli_losses(np.linspace(0, 1, 50)[:, None], seed=3, trials=50, n=200)
    p = _all_pvalues(losses)[method]
    assert np.all((p >= 0) & (p <= 1))


# --- exact values ------------------------------------------------------------------------


def test_binomial_equals_the_binomial_cdf():
    n, eps, k = 50, 0.2, 6
    expected = sum(math.comb(n, i) * eps**i * (1 - eps) ** (n - i) for i in range(k + 1))
    assert binomial_pvalue(k, n, eps) == pytest.approx(expected, rel=1e-10)
    assert binomial_pvalue(0, n, eps) == pytest.approx((1 - eps) ** n, rel=1e-10)


def test_binomial_is_vectorised_and_increasing_in_errors():
    p = binomial_pvalue(np.arange(0, 101), 100, 0.1)
    assert p.shape == (101,) and np.all(np.diff(p) >= 0) and p[-1] == 1.0


def test_binomial_is_large_when_observed_risk_reaches_eps():
    assert binomial_pvalue(10, 100, 0.1) >= 0.5
    assert binomial_pvalue(30, 100, 0.1) > 0.999


def test_hb_at_zero_risk_is_the_hoeffding_term():
    assert hoeffding_bentkus_pvalue(0.0, 100, 0.1) == pytest.approx(0.9**100, rel=1e-9)


def test_hb_is_the_smaller_of_hoeffding_and_bentkus():
    n, eps, r = 100, 0.1, 0.05
    h1 = r * math.log(r / eps) + (1 - r) * math.log((1 - r) / (1 - eps))
    hoeffding = math.exp(-n * h1)
    k = math.ceil(n * r)
    bentkus = math.e * sum(math.comb(n, i) * eps**i * (1 - eps) ** (n - i) for i in range(k + 1))
    assert hoeffding_bentkus_pvalue(r, n, eps) == pytest.approx(min(hoeffding, bentkus), rel=1e-9)


def test_hb_is_one_once_observed_risk_reaches_eps():
    np.testing.assert_array_equal(hoeffding_bentkus_pvalue(np.array([0.1, 0.2, 1.0]), 1000, 0.1), 1.0)


def test_hb_is_never_below_the_exact_binomial_for_01_losses():
    # HB pays for allowing any [0, 1] loss; on 0/1 losses it can only be more conservative.
    k = np.arange(0, 60)
    assert np.all(hoeffding_bentkus_pvalue(k / 300, 300, 0.1) >= binomial_pvalue(k, 300, 0.1) - 1e-12)


def test_wsr_rows_match_one_dimensional_calls():
    losses = _bernoulli_losses(0.03, seed=5, trials=3, n=300)
    np.testing.assert_allclose(wsr_pvalue(losses, EPS), [wsr_pvalue(row, EPS) for row in losses])


def test_wsr_is_one_when_every_loss_is_high_and_small_when_all_zero():
    assert wsr_pvalue(np.ones(300), EPS) == 1.0
    p = wsr_pvalue(np.zeros(300), EPS)
    # No valid p-value can beat (1 - ε)^n on 0/1 data; a good one gets within a few orders.
    assert (1 - EPS) ** 300 <= p < 1e-9


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, 1.0, 1.5])
def test_eps_must_be_in_open_unit_interval(eps):
    for call in (lambda: binomial_pvalue(0, 10, eps), lambda: hoeffding_bentkus_pvalue(0.0, 10, eps),
                 lambda: wsr_pvalue(np.zeros(10), eps)):
        with pytest.raises(OnnxPruneError, match="ε"):
            call()


def test_error_counts_must_be_integers_within_n():
    for bad in (11, -1, 2.5):
        with pytest.raises(OnnxPruneError, match="integers"):
            binomial_pvalue(bad, 10, 0.1)


def test_losses_outside_unit_interval_are_refused():
    with pytest.raises(OnnxPruneError, match=r"\[0, 1\]"):
        hoeffding_bentkus_pvalue(1.2, 10, 0.1)
    with pytest.raises(OnnxPruneError, match=r"\[0, 1\]"):
        wsr_pvalue(np.array([0.0, -0.5]), 0.1)
