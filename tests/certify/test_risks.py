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


# --- bounded losses for models that are not (N, K) classifiers ---------------------------------

from onnxprune.certify import (LOSSES, cosine_loss, position_disagreement_loss, relative_error_loss,  # noqa: E402
                               sample_losses)


def test_position_loss_is_the_fraction_of_a_samples_positions_that_changed_class():
    dense = np.array([[[0, 1], [2, 3]], [[1, 1], [1, 1]], [[0, 0], [0, 0]]])  # (N=3, 2, 2) top-1 maps
    pruned = np.array([[[0, 1], [2, 0]], [[1, 1], [1, 1]], [[1, 1], [1, 1]]])
    np.testing.assert_array_equal(position_disagreement_loss(pruned, dense), [0.25, 0.0, 1.0])


def test_position_loss_on_one_position_per_sample_is_the_classifier_disagreement():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 3, (2, 200))
    np.testing.assert_array_equal(position_disagreement_loss(a[:, None], b[:, None]), disagreement_loss(a, b))


def test_cosine_loss_counts_samples_rotated_beyond_the_threshold():
    angle = np.deg2rad([0.0, 5.0, 10.0, 90.0, 180.0])
    pruned = np.stack([np.cos(angle), np.sin(angle)], axis=1) * 3.0  # the norm does not matter
    dense = np.tile([1.0, 0.0], (5, 1))
    np.testing.assert_array_equal(cosine_loss(pruned, dense, tau=0.01), [0, 0, 1, 1, 1])  # 1 − cos 8.1° = 0.01
    np.testing.assert_array_equal(cosine_loss(pruned, dense, tau=2.0), [0, 0, 0, 0, 0])


def test_cosine_loss_of_zero_outputs():
    np.testing.assert_array_equal(cosine_loss([[0, 0], [0, 0]], [[0, 0], [1, 0]], tau=0.5), [0.0, 1.0])


def test_relative_error_loss_is_the_error_over_tau_capped_at_one():
    dense = np.array([[3.0, 4.0]] * 4)  # ‖d‖ = 5
    pruned = dense + np.array([[0.0, 0.0], [0.25, 0.0], [0.0, 0.5], [3.0, 0.0]])  # errors 0, 0.05, 0.1, 0.6
    np.testing.assert_allclose(relative_error_loss(pruned, dense, tau=0.1), [0.0, 0.5, 1.0, 1.0])


def test_relative_error_loss_bounds_the_share_of_samples_beyond_tau():
    rng = np.random.default_rng(1)
    dense = rng.normal(size=(500, 6))
    pruned = dense + rng.normal(scale=0.1, size=(500, 6))
    rel = np.linalg.norm(pruned - dense, axis=1) / np.linalg.norm(dense, axis=1)
    loss = relative_error_loss(pruned, dense, tau=0.1)
    assert np.all(loss >= (rel >= 0.1)) and np.all((0 <= loss) & (loss <= 1)) and 0 < loss.mean() < 1


def test_relative_error_loss_of_a_zero_dense_output():
    np.testing.assert_array_equal(relative_error_loss([[0.0], [1.0]], [[0.0], [0.0]], tau=0.1), [0.0, 1.0])


@pytest.mark.parametrize("fn,tau", [(cosine_loss, 0.0), (cosine_loss, 2.5), (relative_error_loss, -1.0),
                                    (relative_error_loss, float("nan")), (relative_error_loss, None)])
def test_thresholds_outside_their_range_are_refused(fn, tau):
    with pytest.raises(OnnxPruneError, match="threshold τ"):
        fn(np.ones((2, 3)), np.ones((2, 3)), tau)


def test_output_losses_refuse_shape_mismatch_and_non_finite_values():
    with pytest.raises(OnnxPruneError, match=r"same shape \(out_pruned=\(2, 3\), out_dense=\(2, 4\)\)"):
        relative_error_loss(np.ones((2, 3)), np.ones((2, 4)), 0.1)
    with pytest.raises(OnnxPruneError, match="NaN or Inf"):
        cosine_loss([[np.nan, 1.0]], [[1.0, 1.0]], 0.1)
    with pytest.raises(OnnxPruneError, match="empty"):
        position_disagreement_loss(np.zeros((0, 4)), np.zeros((0, 4)))


def test_the_loss_table_says_which_losses_are_binary():
    rng = np.random.default_rng(2)
    top1, out = rng.integers(0, 3, (2, 50, 4)), rng.normal(size=(50, 3))
    out = np.stack([out + rng.normal(scale=0.08, size=out.shape), out])  # close outputs: errors around τ
    labels = rng.integers(0, 3, 50)
    for name, spec in LOSSES.items():
        a, b = (top1[:, :, 0] if name in ("new_error", "disagreement") else top1) if spec.reads == "top1" else out
        loss = sample_losses(name, a, b, labels, spec.tau if spec.tau is not None else None)
        assert loss.shape == (50,) and np.all((0 <= loss) & (loss <= 1)), name
        assert spec.binary == bool(np.all((loss == 0) | (loss == 1))), name  # bounded ones do take values inside
    assert {n for n, s in LOSSES.items() if s.binary} == {"new_error", "disagreement", "cosine"}
    with pytest.raises(OnnxPruneError, match="unknown loss 'mse'"):
        sample_losses("mse", out[0], out[1])
