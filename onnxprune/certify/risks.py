"""Per-sample losses in [0, 1] comparing a pruned model with its dense parent.

LTT certifies a bound on the *mean* of a per-sample loss, so each loss here is a
plain 0/1 array (one entry per certification sample). 0/1 losses let the exact
binomial test be used, which is the most powerful valid test for them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from onnxprune.errors import OnnxPruneError


def _as_predictions(name: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise OnnxPruneError(f"{name} must be a 1-D array of per-sample predictions, got shape {array.shape}")
    if array.size == 0:
        raise OnnxPruneError(f"{name} is empty: at least one sample is needed to compute a loss")
    return array


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise OnnxPruneError(f"predictions and labels must have the same number of samples ({listing})")


def disagreement_loss(pred_pruned: ArrayLike, pred_dense: ArrayLike) -> np.ndarray:
    """1{pruned != dense}: label-free, so any unlabelled data can certify fidelity to the dense model."""
    pruned = _as_predictions("pred_pruned", pred_pruned)
    dense = _as_predictions("pred_dense", pred_dense)
    _same_length(pred_pruned=pruned, pred_dense=dense)
    return (pruned != dense).astype(np.float64)


def new_error_loss(pred_pruned: ArrayLike, pred_dense: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """1{dense right and pruned wrong}: counts only errors that pruning introduced.

    Samples the dense model already gets wrong cost nothing, so the certified
    bound is on accuracy *lost* by pruning, not on the model's absolute error.
    """
    pruned = _as_predictions("pred_pruned", pred_pruned)
    dense = _as_predictions("pred_dense", pred_dense)
    truth = _as_predictions("labels", labels)
    _same_length(pred_pruned=pruned, pred_dense=dense, labels=truth)
    return ((dense == truth) & (pruned != truth)).astype(np.float64)
