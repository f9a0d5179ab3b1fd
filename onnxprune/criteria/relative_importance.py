"""Relative importance (paper 003, reading fixed in DESIGN §4).

Per sample, weight (i, j) contributes r_ij = |w_ij·x_j| / (Σ_k |w_ik·x_k| + |b_i| + ε) of neuron i's input mass.
Samples whose pre-activation lies in the activation's blind range (zero derivative: ReLU ≤ 0) are skipped,
since no small change of w_ij moves the output there. The statistics engine accumulates mean and std of r
online ("ri_mean", "ri_std"); the score is mean + β·std, so a weight that is usually small but sometimes large
(high std) is protected. β = 1 by default (settings.beta). The contributions themselves are accumulated by
`stats.accumulators.Contributions` (streaming, no (B, out, in) temporary).
"""
from __future__ import annotations

import numpy as np

def score(ri_mean: np.ndarray, ri_std: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """mean + β·std of the contribution ratio over the kept samples; lowest is pruned first."""
    return np.asarray(ri_mean, np.float64) + beta * np.asarray(ri_std, np.float64)


def channel_scores(consumer_scores: np.ndarray, in_axis: int = 1) -> np.ndarray:
    """Channel level: mean weight score over the channel's outgoing connections in its consumer's weight.

    The mean (not the sum) keeps channels comparable across consumers of different widths; for a Conv consumer
    W [M, C, k…] (in_axis=1) it averages over the M filters and the kernel positions reading channel C."""
    s = np.moveaxis(np.asarray(consumer_scores, np.float64), in_axis, 0)
    return s.reshape(s.shape[0], -1).mean(1)
