"""F-statistic screening hybrid (paper 001 eq. 5 and 6, normalised as in DESIGN §4).

Connection (i, j) gets the F of its input feature j: F is scale-invariant, so F(w_ij·x_j) = F(x_j); |w_ij|
separates the weights within that column. Both parts are mixed through global percentile ranks.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .ranking import hybrid


def weight_scores(f_per_weight: Sequence[np.ndarray], weights: Sequence[np.ndarray], alpha: float) -> list[np.ndarray]:
    """M(w) = α·rank(F of the input feature) + (1−α)·rank(|w|), ranks over all given weights together.

    `f_per_weight[k]` is F broadcast to the shape of `weights[k]` (the pipeline knows each layout)."""
    f = [np.nan_to_num(np.asarray(s, dtype=np.float64), nan=0.0) for s in f_per_weight]
    return hybrid(f, [np.abs(np.asarray(w, dtype=np.float64)) for w in weights], alpha)


def channel_scores(f_channel: Sequence[np.ndarray], magnitude: Sequence[np.ndarray], alpha: float) -> list[np.ndarray]:
    """M(C) = α·rank(S(C)) + (1−α)·rank(|γ_C|), or the producing filter's L1 norm in place of |γ_C| without BN.

    One array per layer / group; ranks are taken over all channels of all arrays (global)."""
    f = [np.nan_to_num(np.asarray(s, dtype=np.float64), nan=0.0) for s in f_channel]
    return hybrid(f, [np.abs(np.asarray(m, dtype=np.float64)) for m in magnitude], alpha)
