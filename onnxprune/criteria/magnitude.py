"""Magnitude: |w| per weight (L1); per output channel / neuron the L1 or L2 norm of its filter."""
from __future__ import annotations

import numpy as np


def weight_magnitude(w: np.ndarray) -> np.ndarray:
    """|w|: the classic post-training unstructured criterion."""
    return np.abs(np.asarray(w, dtype=np.float64))


def filter_norm(w: np.ndarray, out_axis: int = 0, p: int = 1) -> np.ndarray:
    """L1 (p=1) or L2 (p=2) norm of each output channel's weights, for any layout given its output axis.

    Conv W [M, C/g, k…] → out_axis=0; ConvTranspose W [C, M/g, k…] → out_axis=1; Gemm transB=0 W [in, out] → 1.
    """
    if p not in (1, 2):
        raise ValueError(f"p={p}: only L1 and L2 norms")
    a = np.moveaxis(np.asarray(w, dtype=np.float64), out_axis, 0).reshape(np.shape(w)[out_axis], -1)
    return np.abs(a).sum(1) if p == 1 else np.sqrt((a * a).sum(1))
