"""Per-sample losses: what each one counts, and what inputs it refuses."""

import numpy as np
import pytest

from onnxprune.certify import disagreement_loss, new_error_loss
from onnxprune.errors import OnnxPruneError


def test_disagreement_is_one_exactly_where_pruned_and_dense_differ():
    loss = disagreement_loss([0, 1, 2, 3], [0, 2, 2, 0])
    np.testing.assert_array_equal(loss, [0.0, 1.0, 0.0, 1.0])
    assert loss.dtype == np.float64


def test_disagreement_needs_no_labels_and_ignores_correctness():
    # Both wrong but identical predictions cost nothing: fidelity, not accuracy.
    assert disagreement_loss(np.array([7, 7]), np.array([7, 7])).sum() == 0


def test_new_error_counts_only_errors_introduced_by_pruning():
    labels = np.array([0, 0, 0, 0])
    dense = np.array([0, 0, 1, 1])  # right, right, wrong, wrong
    pruned = np.array([0, 2, 1, 0])  # right, wrong, wrong, right
    np.testing.assert_array_equal(new_error_loss(pruned, dense, labels), [0.0, 1.0, 0.0, 0.0])


def test_new_error_never_exceeds_disagreement():
    rng = np.random.default_rng(0)
    labels, dense, pruned = rng.integers(0, 3, size=(3, 500))
    assert np.all(new_error_loss(pruned, dense, labels) <= disagreement_loss(pruned, dense))


def test_length_mismatch_is_a_one_line_error_naming_the_lengths():
    with pytest.raises(OnnxPruneError, match="pred_pruned=3, pred_dense=2") as info:
        disagreement_loss([0, 1, 2], [0, 1])
    assert "\n" not in str(info.value)
    with pytest.raises(OnnxPruneError, match="labels=1"):
        new_error_loss([0, 1], [0, 1], [0])


def test_predictions_must_be_non_empty_1d():
    with pytest.raises(OnnxPruneError, match="1-D"):
        disagreement_loss(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(OnnxPruneError, match="empty"):
        disagreement_loss([], [])
