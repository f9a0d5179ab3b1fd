"""Weight magnitude and filter norms for several layouts."""
import numpy as np
import pytest

from onnxprune.criteria.bn_scale import bn_scale
from onnxprune.criteria.magnitude import filter_norm, weight_magnitude


def test_weight_magnitude():
    np.testing.assert_array_equal(weight_magnitude(np.array([-2.0, 0.5, 0.0])), [2.0, 0.5, 0.0])


def test_filter_norm_conv_layout():
    w = np.array([[[[1.0, -2.0]], [[2.0, 0.0]]], [[[3.0, 4.0]], [[0.0, 0.0]]]])  # [M=2, C=2, 1, 2]
    np.testing.assert_allclose(filter_norm(w, 0, 1), [5.0, 7.0])
    np.testing.assert_allclose(filter_norm(w, 0, 2), [3.0, 5.0])


def test_filter_norm_other_output_axis():
    w = np.array([[1.0, -3.0], [2.0, 4.0]])  # Gemm transB=0: [in, out]
    np.testing.assert_allclose(filter_norm(w, out_axis=1, p=1), [3.0, 7.0])
    with pytest.raises(ValueError):
        filter_norm(w, 0, 3)


def test_bn_scale():
    np.testing.assert_array_equal(bn_scale(np.array([-0.5, 2.0])), [0.5, 2.0])
