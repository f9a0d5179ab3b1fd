"""Family-wise error control: exact rejection sets, and FWER <= δ under the global null."""

import numpy as np
import pytest

from onnxprune.certify import bonferroni, fixed_sequence
from onnxprune.errors import OnnxPruneError


def test_fixed_sequence_stops_at_first_failure_even_if_later_pass():
    np.testing.assert_array_equal(fixed_sequence([0.01, 0.02, 0.5, 0.01], 0.05), [True, True, False, False])


def test_fixed_sequence_rejects_nothing_when_the_first_fails():
    assert not fixed_sequence([0.2, 0.0, 0.0], 0.1).any()


def test_rejection_is_inclusive_at_the_threshold():
    assert fixed_sequence([0.05], 0.05).all()
    assert bonferroni([0.05, 0.05], 0.1).all()


def test_bonferroni_uses_delta_over_m_and_ignores_order():
    np.testing.assert_array_equal(bonferroni([0.02, 0.004, 0.9, 0.012], 0.05), [False, True, False, True])


def test_procedures_are_pure():
    p = np.array([0.01, 0.5])
    fixed_sequence(p, 0.1)
    bonferroni(p, 0.1)
    np.testing.assert_array_equal(p, [0.01, 0.5])


@pytest.mark.parametrize("bad", [[-0.1], [1.5], [np.nan], [[0.1]]])
def test_invalid_pvalues_are_refused(bad):
    with pytest.raises(OnnxPruneError):
        fixed_sequence(bad, 0.1)
    with pytest.raises(OnnxPruneError):
        bonferroni(bad, 0.1)


@pytest.mark.parametrize("delta", [0.0, 1.0, -0.5])
def test_delta_must_be_a_probability(delta):
    with pytest.raises(OnnxPruneError, match="δ"):
        fixed_sequence([0.1], delta)


def test_fwer_under_global_null_with_uniform_pvalues():
    # Every null true, p-values exactly uniform: any rejection is a family-wise error.
    rng = np.random.default_rng(1)
    trials, m, delta = 4000, 10, 0.1
    p = rng.random((trials, m))
    se = np.sqrt(delta * (1 - delta) / trials)
    for control in (fixed_sequence, bonferroni):
        fwer = np.mean([control(row, delta).any() for row in p])
        assert fwer <= delta + 3 * se, control.__name__
    # The simulation can tell: testing each null at δ without control blows the FWER up.
    assert np.mean((p <= delta).any(axis=1)) > delta + 3 * se
