"""APoZ activity scores."""
import numpy as np
import pytest

from onnxprune.criteria import apoz


def test_activity_and_channels():
    np.testing.assert_allclose(apoz.activity(np.array([0.0, 0.75, 1.0])), [1.0, 0.25, 0.0])
    np.testing.assert_allclose(apoz.channel_scores(np.array([0.5])), [0.5])
    with pytest.raises(ValueError):
        apoz.activity(np.array([1.5]))
