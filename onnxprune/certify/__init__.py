"""LTT certification of pruning ratios: pure numpy/scipy, no ONNX inside.

risks (per-sample losses) → pvalues (one per ratio) → fwer (which nulls to reject) → ltt (the procedure).
"""

from onnxprune.certify.fwer import bonferroni, fixed_sequence
from onnxprune.certify.ltt import Certification, certify, min_samples, parse_grid, split_indices
from onnxprune.certify.pvalues import binomial_pvalue, hoeffding_bentkus_pvalue, wsr_pvalue
from onnxprune.certify.risks import (LOSSES, Loss, cosine_loss, disagreement_loss, new_error_loss,
                                     position_disagreement_loss, relative_error_loss, sample_losses)

__all__ = [
    "LOSSES",
    "Certification",
    "Loss",
    "binomial_pvalue",
    "bonferroni",
    "certify",
    "cosine_loss",
    "disagreement_loss",
    "fixed_sequence",
    "hoeffding_bentkus_pvalue",
    "min_samples",
    "new_error_loss",
    "parse_grid",
    "position_disagreement_loss",
    "relative_error_loss",
    "sample_losses",
    "split_indices",
    "wsr_pvalue",
]
