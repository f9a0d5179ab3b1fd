"""Learn-then-Test on ONNX models: build a candidate per grid ratio, measure per-sample losses, certify.

Validity is enforced here, not just documented: the grid is fixed before any data is seen, and the statistics
that rank weights/channels come from a split of the calibration data disjoint from the split the losses are
measured on (seeded), unless the caller passes two separate files.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..certify import Certification, certify, disagreement_loss, new_error_loss, split_indices
from ..io.data import Dataset
from ..measure.evaluate import predict
from .prune import Prepared, prepare
from ..select.plan import PruneSettings
from ..progress import track


@dataclass
class CertifyRun:
    certification: Certification
    prepared: Prepared
    build_n: int
    cert_n: int
    loss: str  # "new_error" (labelled) or "disagreement" (label-free)


def run(model: onnx.ModelProto, data: Dataset, settings: PruneSettings, grid: np.ndarray, eps: float,
        delta: float, *, cert_data: Dataset | None = None, cert_fraction: float = 0.5, pvalue: str = "binomial",
        control: str = "fixed_sequence", reconstruct: bool = False) -> CertifyRun:
    """Score on the build split, evaluate each grid ratio on the certification split, run LTT."""
    if cert_data is None:
        build_idx, cert_idx = split_indices(len(data), cert_fraction, settings.seed)
        build, cert = data.subset(build_idx), data.subset(cert_idx)
    else:
        build, cert = data, cert_data
    prepared = prepare(model, build, settings)
    dense = predict(model, cert, settings.batch_size, "dense predictions")
    labelled = cert.labelled
    losses = np.empty((len(grid), len(cert)))
    for i, ratio in enumerate(track(grid, "certifying grid", total=len(grid))):
        if ratio == 0:
            pred = dense
        else:
            cand, _ = prepared.build(float(ratio), build, reconstruct=reconstruct)
            pred = predict(cand, cert, settings.batch_size, f"ratio {ratio:.2f}")
        losses[i] = new_error_loss(pred, dense, cert.labels) if labelled else disagreement_loss(pred, dense)
    cert_result = certify(grid, losses, eps, delta, pvalue=pvalue, control=control)
    return CertifyRun(cert_result, prepared, len(build), len(cert), "new_error" if labelled else "disagreement")
