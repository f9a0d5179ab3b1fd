"""Wanda: |w|·‖x‖₂."""
import numpy as np

from onnxprune.criteria.activation_aware import wanda


def test_wanda_by_hand():
    w = np.array([[1.0, -2.0], [0.5, 0.0]])
    sq = np.array([4.0, 9.0])[None, :]  # Σx² per input feature → ‖x‖ = 2, 3
    np.testing.assert_allclose(wanda(w, sq), [[2.0, 6.0], [1.0, 0.0]])
