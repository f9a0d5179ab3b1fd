"""Super-uniform p-values for the null H: R(λ) > ε (the pruned model is too risky).

A p-value p is valid (super-uniform) when P(p <= u) <= u for every u in [0, 1]
whenever the null holds. Rejecting H at p <= δ then wrongly certifies a risky
ratio with probability at most δ, which is all that fwer.py needs.

Each function is pure and vectorised; scalar inputs give a float, arrays give an
array. All three use the boundary R = ε, the least favourable point of the null.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import xlogy
from scipy.stats import binom

from onnxprune.errors import OnnxPruneError

# Absorbs float error in n * mean for integer error counts (e.g. (3/7)*7 = 3.0000000000000004).
_COUNT_TOL = 1e-9


def _check_eps(eps: float) -> float:
    if not 0.0 < eps < 1.0:
        raise OnnxPruneError(f"risk tolerance ε must be in (0, 1), got {eps}")
    return float(eps)


def _check_n(n: int) -> int:
    if int(n) != n or n < 1:
        raise OnnxPruneError(f"number of samples n must be a positive integer, got {n}")
    return int(n)


def _scalar_or_array(values: np.ndarray, like: ArrayLike) -> float | np.ndarray:
    return float(values) if np.ndim(like) == 0 else values


def binomial_pvalue(errors: int | ArrayLike, n: int, eps: float) -> float | np.ndarray:
    """Exact binomial tail P(Binom(n, ε) <= k) for k observed errors out of n 0/1 losses.

    Under the null the error count stochastically dominates Binom(n, ε), so this tail
    is an exact super-uniform p-value: the sharpest valid choice for 0/1 losses.
    """
    n, eps = _check_n(n), _check_eps(eps)
    k = np.asarray(errors, dtype=np.float64)
    if np.any(k != np.round(k)) or np.any(k < 0) or np.any(k > n):
        raise OnnxPruneError(f"error counts must be integers in [0, n={n}]")
    p = np.clip(binom.cdf(k, n, eps), 0.0, 1.0)
    return _scalar_or_array(p, errors)


def _h1(a: np.ndarray, b: float) -> np.ndarray:
    """Bernoulli KL divergence KL(a || b), with 0·log 0 = 0 so that a = 0 is exact."""
    return xlogy(a, a / b) + xlogy(1.0 - a, (1.0 - a) / (1.0 - b))


def hoeffding_bentkus_pvalue(mean_loss: float | ArrayLike, n: int, eps: float) -> float | np.ndarray:
    """Hoeffding–Bentkus p-value for losses bounded in [0, 1] (LTT, Angelopoulos et al. 2021).

    p = min( exp(-n·h1(r̂ ∧ ε, ε)),  e·P(Binom(n, ε) <= ⌈n r̂⌉) ),  and p = 1 when r̂ >= ε.

    Both terms bound P(R̂ <= r̂) under R = ε for any [0, 1]-valued loss, so their
    minimum is still valid; Hoeffding wins for small n·ε, Bentkus elsewhere.
    """
    n, eps = _check_n(n), _check_eps(eps)
    r_hat = np.asarray(mean_loss, dtype=np.float64)
    if np.any(~np.isfinite(r_hat)) or np.any(r_hat < 0) or np.any(r_hat > 1):
        raise OnnxPruneError("mean losses must lie in [0, 1]")
    hoeffding = np.exp(-n * _h1(np.minimum(r_hat, eps), eps))
    count = np.ceil(n * r_hat - _COUNT_TOL)
    bentkus = math.e * binom.cdf(count, n, eps)
    p = np.minimum(np.minimum(hoeffding, bentkus), 1.0)
    p = np.where(r_hat >= eps, 1.0, p)
    return _scalar_or_array(p, mean_loss)


def wsr_pvalue(losses: ArrayLike, eps: float, *, delta: float = 0.1) -> float | np.ndarray:
    """Waudby-Smith–Ramdas betting p-value (optional; tighter than HB for low-variance losses).

    Bets against the null with the capital process K_t = Π_{i<=t} (1 - ν_i (L_i - ε)).
    Under R >= ε each factor has mean <= 1, so K is a non-negative supermartingale and
    Ville's inequality gives P(max_t K_t >= 1/u) <= u: p = min(1, 1 / max_t K_t) is valid.

    The bet ν_i = min(1, sqrt(2 log(1/δ) / (n σ̂²_{i-1}))) is predictable (uses only
    L_1..L_{i-1}), which validity requires; δ only tunes power, never validity. With
    μ̂_i = (1/2 + Σ_{j<=i} L_j)/(i+1) and σ̂²_i = (1/4 + Σ_{j<=i} (L_j - μ̂_j)²)/(i+1)
    as in LTT. ν <= 1 keeps every factor >= ε > 0. The result depends on sample order;
    for exchangeable data any fixed order is valid.

    `losses` is 1-D (one p-value) or 2-D (one p-value per row, computed along axis -1).
    """
    eps = _check_eps(eps)
    if not 0.0 < delta < 1.0:
        raise OnnxPruneError(f"δ must be in (0, 1), got {delta}")
    values = np.asarray(losses, dtype=np.float64)
    if values.ndim not in (1, 2) or values.shape[-1] == 0:
        raise OnnxPruneError(f"losses must be a non-empty 1-D or 2-D array, got shape {values.shape}")
    if np.any(~np.isfinite(values)) or np.any(values < 0) or np.any(values > 1):
        raise OnnxPruneError("losses must lie in [0, 1]")

    n = values.shape[-1]
    steps = np.arange(1, n + 1)
    mu = (0.5 + np.cumsum(values, axis=-1)) / (steps + 1)
    sigma2 = (0.25 + np.cumsum((values - mu) ** 2, axis=-1)) / (steps + 1)
    # Predictable: the bet at step i uses σ̂² up to i-1 (σ̂²_0 = 1/4).
    sigma2_prev = np.concatenate([np.full(values.shape[:-1] + (1,), 0.25), sigma2[..., :-1]], axis=-1)
    nu = np.minimum(1.0, np.sqrt(2.0 * np.log(1.0 / delta) / (n * sigma2_prev)))
    log_capital = np.cumsum(np.log1p(-nu * (values - eps)), axis=-1)
    p = np.minimum(1.0, np.exp(-np.maximum(log_capital.max(axis=-1), 0.0)))
    return float(p) if values.ndim == 1 else p
