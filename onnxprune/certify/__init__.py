"""LTT certification of pruning ratios: pure numpy/scipy, no ONNX inside.

risks (per-sample losses) → pvalues (one per ratio) → fwer (which nulls to reject) → ltt (the procedure).
"""

from onnxprune.certify.fwer import bonferroni, fixed_sequence
from onnxprune.certify.ltt import Certification, certify, min_samples, parse_grid, split_indices
from onnxprune.certify.pvalues import binomial_pvalue, hoeffding_bentkus_pvalue, wsr_pvalue
from onnxprune.certify.risks import disagreement_loss, new_error_loss

__all__ = [
    "Certification",
    "binomial_pvalue",
    "bonferroni",
    "certify",
    "disagreement_loss",
    "fixed_sequence",
    "hoeffding_bentkus_pvalue",
    "min_samples",
    "new_error_loss",
    "parse_grid",
    "split_indices",
    "wsr_pvalue",
]
