"""Family-wise error control: which nulls of a grid may be rejected at level δ.

Testing many ratios each at level δ would let *some* risky ratio slip through with
probability far above δ. Both procedures below keep P(any null wrongly rejected) <= δ
given valid p-values, with no assumption on how the p-values depend on each other.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from onnxprune.errors import OnnxPruneError


def _check(pvalues: ArrayLike, delta: float) -> np.ndarray:
    if not 0.0 < delta < 1.0:
        raise OnnxPruneError(f"δ must be in (0, 1), got {delta}")
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise OnnxPruneError(f"p-values must be a 1-D array, got shape {p.shape}")
    if np.any(~np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise OnnxPruneError("p-values must lie in [0, 1]")
    return p


def fixed_sequence(pvalues: ArrayLike, delta: float) -> np.ndarray:
    """Reject in the given order at full level δ, stopping at the first p > δ.

    No δ is split because a later null is only tested once every earlier one was
    rejected; the first true null reached is the only chance of an error. Powerful
    when the order follows the risk (ascending pruning ratio), which is why LTT uses it.
    """
    p = _check(pvalues, delta)
    return np.cumprod(p <= delta).astype(bool)


def bonferroni(pvalues: ArrayLike, delta: float) -> np.ndarray:
    """Reject where p <= δ/m: order-free, so it survives a non-monotone risk curve, at a cost in power."""
    p = _check(pvalues, delta)
    return p <= delta / max(len(p), 1)
