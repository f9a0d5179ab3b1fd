"""Per-sample losses in [0, 1] comparing a pruned model with its dense parent.

LTT certifies a bound on the *mean* of a per-sample loss (one entry per certification sample). The two classifier
losses are 0/1, so the exact binomial test applies (the most powerful valid test for them). Models that are not
(N, K) classifiers get bounded losses: any loss in [0, 1] is certified by the Hoeffding–Bentkus or WSR p-values,
whose validity needs only boundedness and i.i.d. samples — so the *sample* (an image, a sequence) stays the unit,
never a pixel or a coordinate, which are not independent of their neighbours.

`LOSSES` names every loss with what it reads, whether it is 0/1, and its threshold τ (if it has one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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


# --- models that are not (N, K) classifiers ---------------------------------------------------


def position_disagreement_loss(pred_pruned: ArrayLike, pred_dense: ArrayLike) -> np.ndarray:
    """Per sample, the fraction of positions whose top-1 class differs from the dense model's (segmentation).

    `pred_*` hold the top-1 class per position, shape (N, positions…). Averaging within a sample keeps samples the
    i.i.d. unit the p-values need, and the certified mean is then the expected fraction of changed positions per
    image — the per-pixel disagreement rate when every image has the same size. A 0/1 loss per image ("any pixel
    changed") would be near 1 for any pruning at all, and treating pixels as samples would overstate n.
    """
    pruned, dense = _as_outputs("pred_pruned", pred_pruned), _as_outputs("pred_dense", pred_dense)
    _same_shape(pred_pruned=pruned, pred_dense=dense)
    return (pruned != dense).reshape(len(pruned), -1).mean(axis=1, dtype=np.float64)


def cosine_loss(out_pruned: ArrayLike, out_dense: ArrayLike, tau: float) -> np.ndarray:
    """1{cos(pruned, dense) < 1 − τ} per sample (embeddings: the direction is what retrieval and matching use).

    Scale-free, so it suits embeddings whose norm carries no meaning. It is 0/1, so the exact binomial test applies
    and the certificate reads "at most ε of the samples rotate by more than arccos(1 − τ)" (τ = 0.01: 8.1°). Two
    zero vectors are identical (cos 1); a zero vector against a non-zero one has cos 0.
    """
    tau = _check_tau("cosine", tau, upper=2.0)
    cos, _ = _cosine_and_relative_error(out_pruned, out_dense)
    return (cos < 1.0 - tau).astype(np.float64)


def relative_error_loss(out_pruned: ArrayLike, out_dense: ArrayLike, tau: float) -> np.ndarray:
    """min(1, ‖pruned − dense‖ / (τ·‖dense‖)) per sample (regression outputs, or any output whose scale matters).

    min(1, e/τ) ≥ 1{e ≥ τ}, so a certified mean ≤ ε bounds both the share of samples with relative error ≥ τ (by ε)
    and the mean error capped at τ (by ε·τ) — a soft loss that, unlike the 0/1 one, also counts errors below τ.
    Bounded in [0, 1], so it is certified with the Hoeffding–Bentkus or WSR p-values. A zero dense output costs 0
    when the pruned output is zero too, else 1. For L2-normalised outputs ‖p − d‖² = 2(1 − cos).
    """
    tau = _check_tau("relative", tau)
    _, rel = _cosine_and_relative_error(out_pruned, out_dense)
    return np.minimum(1.0, rel / tau)


def _cosine_and_relative_error(out_pruned: ArrayLike, out_dense: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample cosine similarity and ‖p − d‖ / ‖d‖ over all of a sample's output values, in float64."""
    p, d = _as_outputs("out_pruned", out_pruned), _as_outputs("out_dense", out_dense)
    _same_shape(out_pruned=p, out_dense=d)
    x = p.reshape(len(p), -1).astype(np.float64)
    y = d.reshape(len(d), -1).astype(np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise OnnxPruneError("model outputs hold NaN or Inf: no bounded loss can be computed")
    return cosine_and_relative_error(x, y)


def cosine_and_relative_error(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of two (N, D) float64 arrays: cosine similarity and ‖x − y‖ / ‖y‖. Zero vectors are handled: two
    zero rows are identical (cosine 1, error 0); a non-zero row against a zero one has error ∞. No checks: the
    losses above check their inputs, the evaluation report shows whatever the outputs are."""
    nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    both_zero = (nx == 0) & (ny == 0)
    cos = np.where(both_zero, 1.0, (x * y).sum(axis=1) / np.maximum(nx * ny, np.finfo(np.float64).tiny))
    diff = np.linalg.norm(x - y, axis=1)
    rel = np.where(ny > 0, diff / np.where(ny > 0, ny, 1.0), np.where(diff > 0, np.inf, 0.0))
    return np.clip(cos, -1.0, 1.0), rel


def _as_outputs(name: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim < 1 or array.shape[0] == 0:
        raise OnnxPruneError(f"{name} is empty: at least one sample is needed to compute a loss")
    return array


def _same_shape(**arrays: np.ndarray) -> None:
    shapes = {name: a.shape for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{name}={s}" for name, s in shapes.items())
        raise OnnxPruneError(f"pruned and dense outputs must have the same shape ({listing})")


def _check_tau(loss: str, tau: float, upper: float = np.inf) -> float:
    if tau is None or not np.isfinite(tau) or not 0.0 < tau <= upper:
        bound = f"(0, {upper:g}]" if np.isfinite(upper) else "> 0"
        raise OnnxPruneError(f"the {loss} loss needs a threshold τ {bound}, got {tau}")
    return float(tau)


# --- the table of losses ----------------------------------------------------------------------


@dataclass(frozen=True)
class Loss:
    """What a loss compares, and how it is certified."""

    name: str
    reads: Literal["top1", "outputs"]  # top-1 classes (per sample or per position), or the raw output values
    binary: bool  # 0/1 per sample: the exact binomial p-value applies; otherwise Hoeffding–Bentkus / WSR
    tau: float | None  # default threshold τ (None: the loss takes none)
    risk: str  # what the certified mean is, for reports ({tau} is filled in)


LOSSES: dict[str, Loss] = {x.name: x for x in (
    Loss("new_error", "top1", True, None, "the share of samples the dense model gets right and the pruned one wrong"),
    Loss("disagreement", "top1", True, None, "the share of samples whose top-1 class differs from the dense model's"),
    Loss("positions", "top1", False, None,
         "the mean per-sample fraction of positions whose top-1 class differs from the dense model's"),
    Loss("cosine", "outputs", True, 0.01,
         "the share of samples whose output's cosine similarity with the dense output is below 1 − {tau:g}"),
    Loss("relative", "outputs", False, 0.1,
         "the mean per-sample min(1, relative error / {tau:g}) of the output against the dense output"),
)}


def sample_losses(name: str, pruned: ArrayLike, dense: ArrayLike, labels: ArrayLike | None = None,
                  tau: float | None = None) -> np.ndarray:
    """The per-sample losses of `LOSSES[name]` (labels for new_error only; τ for cosine / relative)."""
    if name == "new_error":
        if labels is None:
            raise OnnxPruneError("the new_error loss needs labels (y); use the disagreement loss without them")
        return new_error_loss(pruned, dense, labels)
    if name == "disagreement":
        return disagreement_loss(pruned, dense)
    if name == "positions":
        return position_disagreement_loss(pruned, dense)
    if name == "cosine":
        return cosine_loss(pruned, dense, tau)
    if name == "relative":
        return relative_error_loss(pruned, dense, tau)
    raise OnnxPruneError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
