"""Percentile ranks and hybrid mixing (DESIGN §4).

Raw F statistics are heavy-tailed and magnitudes live on another scale, so min-max mixing collapses to one of
them. Both are turned into percentile ranks over the *whole* candidate set (all layers at once) before mixing:
α = 0 is then exactly global magnitude order, and cross-layer comparability survives.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata


def percentile_ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks divided by the count: values in (0, 1], ties share a rank, order is preserved."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x.copy()
    return (rankdata(x.ravel(), method="average") / x.size).reshape(x.shape)


def global_ranks(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Percentile ranks over the concatenation of `arrays`, split back into their shapes."""
    flat = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays]) if arrays else np.zeros(0)
    r = percentile_ranks(flat)
    out, i = [], 0
    for a in arrays:
        out.append(r[i:i + np.size(a)].reshape(np.shape(a)))
        i += np.size(a)
    return out


def hybrid(screen: Sequence[np.ndarray], magnitude: Sequence[np.ndarray], alpha: float) -> list[np.ndarray]:
    """M = α·rank(S) + (1−α)·rank(magnitude), ranks global over all arrays; α = 0 returns rank(magnitude) exactly."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha {alpha} not in [0, 1]")
    rm = global_ranks(magnitude)
    if alpha == 0.0:
        return rm
    rs = global_ranks(screen)
    return [alpha * s + (1.0 - alpha) * m for s, m in zip(rs, rm)]
