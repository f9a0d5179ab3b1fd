"""Weight layers: which weights are prunable, their layouts, and what relative importance needs of them."""
import numpy as np
from onnx import helper

from builders import LENET300, edge_conv
from onnxprune.io.model import load_model
from onnxprune.units.weights import contrib_spec, weight_layer, weight_layers

def test_lenet300_layers_and_layouts():
    m = load_model(LENET300)
    layers = weight_layers(m)
    assert [L.op for L in layers] == ["Gemm", "Gemm", "Gemm"]
    assert [L.shape for L in layers] == [(300, 784), (100, 300), (10, 100)]
    assert all((L.in_axis, L.out_axis) == (1, 0) for L in layers)  # transB=1: rows are outputs


def test_a_zero_sum_kernel_still_contributes():
    """A connection's contribution uses the kernel's L1 norm, not the signed sum of its weights (which is 0 for an
    edge filter however much signal it passes)."""
    m = edge_conv()
    spec = contrib_spec(m, weight_layer(m, "conv"))
    np.testing.assert_allclose(spec.weight[:, 0], [8.0, 1.0], rtol=1e-6)
    assert spec.activation == ("y", 0.0, float("inf"))  # ReLU's blind range follows the layer


def test_shared_weights_are_not_prunable_layers():
    m = edge_conv()
    m.graph.node.append(helper.make_node("Conv", ["x", "w"], ["c2"], pads=[1, 1, 1, 1], name="conv2"))
    assert weight_layers(m) == []
