"""APoZ (average percentage of zeros after a ReLU-like activation) at neuron / channel level.

A neuron that is almost always zero carries little signal, so its *outgoing* connections are the first to go:
in unstructured mode every weight reading input j scores 1 − APoZ_j (ties within the column are broken by |w|
in selection), which prunes whole input neurons and lets dead-neuron removal shrink the layer."""
from __future__ import annotations

import numpy as np


def activity(apoz: np.ndarray) -> np.ndarray:
    """1 − APoZ per neuron or channel: the fraction of samples (and positions) where it is non-zero."""
    a = np.asarray(apoz, dtype=np.float64)
    if np.any((a < 0) | (a > 1)):
        raise ValueError("APoZ values must lie in [0, 1]")
    return 1.0 - a


def channel_scores(apoz: np.ndarray) -> np.ndarray:
    """Channel level: the same activity score, one per channel."""
    return activity(apoz)
