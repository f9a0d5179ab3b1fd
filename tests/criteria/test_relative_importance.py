"""Relative importance: contribution ratios, blind range, mean + β·std, channel aggregation."""
import numpy as np

from onnxprune.criteria import relative_importance as ri


def test_contributions_by_hand():
    w = np.array([[1.0, -2.0]])
    b = np.array([1.0])
    x = np.array([[1.0, 1.0], [2.0, 0.0]])
    r = ri.contributions(w, b, x)
    # sample 0: |1|, |−2|, |b|=1 → 1/4, 2/4 ; sample 1: 2, 0 → 2/3, 0
    np.testing.assert_allclose(r[:, 0, :], [[0.25, 0.5], [2 / 3, 0.0]], atol=1e-9)
    # pre-activations: 1 − 2 + 1 = 0 (blind for ReLU), 2 + 1 = 3 (active)
    np.testing.assert_array_equal(ri.relu_active(w, b, x), [[False], [True]])


def test_score_and_channels():
    np.testing.assert_allclose(ri.score(np.array([0.2, 0.1]), np.array([0.0, 0.2]), beta=1.0), [0.2, 0.3])
    np.testing.assert_allclose(ri.score(np.array([0.2, 0.1]), np.array([0.0, 0.2]), beta=0.0), [0.2, 0.1])
    consumer = np.array([[0.1, 0.3], [0.3, 0.5]])  # (out=2, in=2)
    np.testing.assert_allclose(ri.channel_scores(consumer, in_axis=1), [0.2, 0.4])
