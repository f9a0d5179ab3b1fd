"""Relative importance: mean + β·std, and the channel aggregation over a consumer's connections."""
import numpy as np

from onnxprune.criteria import relative_importance as ri


def test_score_and_channels():
    np.testing.assert_allclose(ri.score(np.array([0.2, 0.1]), np.array([0.0, 0.2]), beta=1.0), [0.2, 0.3])
    np.testing.assert_allclose(ri.score(np.array([0.2, 0.1]), np.array([0.0, 0.2]), beta=0.0), [0.2, 0.1])
    consumer = np.array([[0.1, 0.3], [0.3, 0.5]])  # (out=2, in=2)
    np.testing.assert_allclose(ri.channel_scores(consumer, in_axis=1), [0.2, 0.4])
