"""BatchNorm scale: |γ_C| per channel (network slimming, Liu et al. 2017) — the magnitude part of 001 eq. 6."""
from __future__ import annotations

import numpy as np


def bn_scale(gamma: np.ndarray) -> np.ndarray:
    """|γ| per channel: a channel BN scales towards zero contributes little to its consumers."""
    return np.abs(np.asarray(gamma, dtype=np.float64))
