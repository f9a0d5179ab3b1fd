"""Weight scores for unstructured pruning: each criterion of this package, laid out on every candidate weight.

Per-input statistics (F, Σx², APoZ) are broadcast to the weight's layout by the layer (`WeightLayer.per_input`),
per-connection ones (relative importance) by `per_connection`. `scope` says where the scores are comparable:
over all candidates ("allocation", as --allocation says), within each layer, or within each output row.
"""
from __future__ import annotations

import numpy as np

from ..errors import OnnxPruneError
from ..stats import Stats
from ..units.weights import WeightLayer
from . import activation_aware, apoz, fscreen, magnitude, relative_importance

CRITERIA = ("magnitude", "fscreen", "ri", "wanda", "apoz", "taylor")
# the onnxruntime statistic each needs; taylor needs a gradient pass instead (criteria/needs.py: GRADIENTS)
NEEDS = {"fscreen": "class_moments", "wanda": "moments", "apoz": "zeros", "ri": "contrib"}
SCOPE = {"wanda": "row", "apoz": "layer"}


def scores(criterion: str, layers: list[WeightLayer], weights: list[np.ndarray], stats: Stats | None, alpha: float,
           beta: float) -> tuple[list[np.ndarray], str, list[str]]:
    """(one score array per layer, shaped like its weight; higher = kept longer), scope, notes for the report."""
    if criterion not in CRITERIA:
        raise OnnxPruneError(f"--criterion {criterion}: choose one of {', '.join(CRITERIA)}")
    if criterion != "magnitude" and stats is None:
        raise OnnxPruneError(f"criterion '{criterion}' needs calibration data (--calib)")
    notes: list[str] = []
    if criterion == "magnitude":
        vals = [magnitude.weight_magnitude(x) for x in weights]
    elif criterion == "fscreen":
        f = [L.per_input(stats.get(L.input, "f")) for L in layers]
        vals = fscreen.weight_scores(f, weights, alpha)
        notes.append(f"F-screen α={alpha} (labels: {stats.label_mode})")
    elif criterion == "wanda":
        vals = [activation_aware.wanda(x, L.per_input(stats.get(L.input, "sqnorm"))) for L, x in zip(layers, weights)]
        notes.append("wanda compares weights within each output row: every row keeps the same fraction, rows of "
                     "removed neurons aside (--allocation does not apply)")
    elif criterion == "taylor":
        vals = [stats.get(L.weight, "taylor") for L in layers]
        notes.append(f"taylor: |g·w| per weight, g the gradient of the cross-entropy over the calibration data "
                     f"(labels: {stats.label_mode}), compared over all layers")
    elif criterion == "apoz":
        vals = [L.per_input(apoz.activity(stats.get(L.input, "apoz"))) for L in layers]
        notes.append("apoz: weights score 1 − APoZ of their input neuron (whole input neurons go first, ties by |w|),"
                     " compared within each layer (APoZ is not comparable across layers: an input that is not after "
                     "a ReLU-like op has APoZ ≈ 0); every layer loses the same fraction")
    else:
        vals = [L.per_connection(relative_importance.score(stats.get(L.name, "ri_mean"), stats.get(L.name, "ri_std"),
                                                           beta)) for L in layers]
        notes.append(f"relative importance: mean + β·std of |w·x| / Σ|w·x| over samples outside the blind range, "
                     f"β={beta}")
    return [np.asarray(v, np.float64) for v in vals], SCOPE.get(criterion, "allocation"), notes
