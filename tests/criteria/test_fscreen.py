"""F-screen hybrid: weight level (F of the input feature) and channel level (|γ| or filter L1)."""
import numpy as np

from onnxprune.criteria import fscreen
from onnxprune.criteria.ranking import global_ranks


def test_weight_scores_by_hand():
    # one 2×2 layer; F per input feature [10, 0] broadcast to columns; |w| = [[.1,.4],[.3,.2]]
    w = np.array([[0.1, -0.4], [0.3, 0.2]])
    f = np.broadcast_to(np.array([10.0, 0.0]), w.shape)
    (m,) = fscreen.weight_scores([f], [w], 0.5)
    # rank(F): column 0 → (3+4)/2 / 4 = .875, column 1 → .375; rank(|w|): .25 1 .75 .5
    np.testing.assert_allclose(m, 0.5 * np.array([[0.875, 0.375], [0.875, 0.375]]) + 0.5 * np.array([[0.25, 1.0],
                                                                                                       [0.75, 0.5]]))


def test_alpha_zero_equals_magnitude_ranks_and_nan_f_is_zero():
    w = [np.array([0.3, -0.1]), np.array([0.2])]
    f = [np.array([np.nan, 1.0]), np.array([np.inf])]
    got = fscreen.weight_scores(f, w, 0.0)
    want = global_ranks([np.abs(x) for x in w])
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    (s,) = fscreen.weight_scores([np.array([np.nan, 1.0])], [np.array([1.0, 1.0])], 1.0)
    assert s[0] < s[1]  # constant / dead feature (NaN F) ranks lowest


def test_channel_scores_by_hand():
    s = fscreen.channel_scores([np.array([1.0, 5.0]), np.array([3.0])], [np.array([0.9, 0.1]), np.array([0.5])], 0.4)
    # rank S: 1/3, 1, 2/3 ; rank |γ|: 1, 1/3, 2/3
    np.testing.assert_allclose(s[0], [0.4 / 3 + 0.6, 0.4 + 0.6 / 3])
    np.testing.assert_allclose(s[1], [2 / 3])
