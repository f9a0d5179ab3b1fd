"""Activation-aware magnitude (Wanda): |w_ij|·‖x_j‖₂, compared within each output row.

A weight matters in proportion to the output change it causes, |w_ij·x_j| summed in quadrature over the
calibration samples; comparing within a row keeps every output neuron fed (the Wanda paper's choice)."""
from __future__ import annotations

import numpy as np


def wanda(w: np.ndarray, x_sqnorm: np.ndarray) -> np.ndarray:
    """|w|·sqrt(Σ_samples x_j²); `x_sqnorm` is the input features' Σx², broadcastable to w's shape."""
    return np.abs(np.asarray(w, dtype=np.float64)) * np.sqrt(np.maximum(np.asarray(x_sqnorm, np.float64), 0.0))
