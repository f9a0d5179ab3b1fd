"""Percentile ranks and hybrid mixing, on hand-computed examples."""
import numpy as np
import pytest

from onnxprune.criteria.ranking import global_ranks, hybrid, percentile_ranks


def test_percentile_ranks_average_ties():
    # values 10, 30, 20, 20 → ranks 1, 4, 2.5, 2.5 → / 4
    np.testing.assert_allclose(percentile_ranks(np.array([10.0, 30, 20, 20])), [0.25, 1.0, 0.625, 0.625])


def test_global_ranks_span_all_arrays():
    a, b = global_ranks([np.array([1.0, 4.0]), np.array([[2.0], [3.0]])])
    np.testing.assert_allclose(a, [0.25, 1.0])
    np.testing.assert_allclose(b, [[0.5], [0.75]])


def test_hybrid_by_hand():
    s = [np.array([3.0, 1.0]), np.array([2.0, 0.0])]  # global ranks 4, 2 | 3, 1 → 1, .5 | .75, .25
    m = [np.array([0.1, 0.4]), np.array([0.3, 0.2])]  # global ranks 1, 4 | 3, 2 → .25, 1 | .75, .5
    out = hybrid(s, m, 0.4)
    np.testing.assert_allclose(out[0], [0.4 * 1 + 0.6 * 0.25, 0.4 * 0.5 + 0.6 * 1.0])
    np.testing.assert_allclose(out[1], [0.4 * 0.75 + 0.6 * 0.75, 0.4 * 0.25 + 0.6 * 0.5])


def test_alpha_zero_is_magnitude_rank_exactly():
    rng = np.random.default_rng(0)
    m = [rng.random(5), rng.random((2, 3))]
    for got, want in zip(hybrid([rng.random(5), rng.random((2, 3))], m, 0.0), global_ranks(m)):
        assert np.array_equal(got, want)


def test_alpha_out_of_range():
    with pytest.raises(ValueError):
        hybrid([np.ones(1)], [np.ones(1)], 1.5)
