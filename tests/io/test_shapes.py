"""io.shapes: shapes never depend on ONNX shape inference alone; -1 / symbolic / '?' dims are dynamic."""
from __future__ import annotations

import numpy as np
import pytest
from robustness.exporters import HW, K, cnn, dense_head, vector_head

from onnxprune.errors import OnnxPruneError
from onnxprune.io.runtime import fixed_batch, input_specs
from onnxprune.io.shapes import concrete_inputs, output_kind, tensor_shapes


@pytest.mark.parametrize("batch", ["N", None, -1, 0])
def test_dynamic_batch_is_never_a_size(batch):
    assert input_specs(cnn(batch=batch))[0].batch is None
    assert fixed_batch(cnn(batch=batch)) is None
    assert concrete_inputs(cnn(batch=batch)) == {"x": (1, 3, HW, HW)}


def test_fixed_batch_is_kept():
    assert fixed_batch(cnn(batch=1)) == 1
    assert concrete_inputs(cnn(batch=4)) == {"x": (4, 3, HW, HW)}


@pytest.mark.parametrize("hw", ["H", None, -1])
def test_dynamic_hw_needs_a_shape_and_takes_the_real_one(hw):
    m = cnn(hw=hw) if hw != -1 else cnn(hw=-1)
    with pytest.raises(OnnxPruneError, match=r"dynamic dimensions .* pass --shape x=1,3,N,N"):
        concrete_inputs(m)
    assert concrete_inputs(m, {"x": (1, 3, 6, 6)}) == {"x": (1, 3, 6, 6)}
    assert concrete_inputs(m, {"": (3, 6, 6)}) == {"x": (1, 3, 6, 6)}  # a per-sample shape
    with pytest.raises(OnnxPruneError, match="does not fit"):
        concrete_inputs(m, {"x": (1, 4, 6, 6)})
    assert concrete_inputs(m, strict=False) == {}


def test_shapes_after_an_op_inference_does_not_know_come_from_onnxruntime():
    """com.microsoft.Gelu stops ONNX shape inference; every later tensor's shape comes from one onnxruntime run."""
    shapes = tensor_shapes(cnn(custom="com.microsoft"))
    assert shapes["c2"] == (1, 8, HW, HW) and shapes["logits"] == (1, K)
    assert tensor_shapes(cnn(custom="com.microsoft", hw="H"), {"x": (2, 3, 5, 5)})["c2"] == (2, 8, 5, 5)


def test_symbolic_dims_are_resolved_at_the_given_shape():
    shapes = tensor_shapes(cnn(hw="H"), {"x": (1, 3, 6, 6)})
    assert shapes["c1"] == (1, 8, 6, 6)
    feed = {"x": np.zeros((2, 3, 5, 5), np.float32)}
    assert tensor_shapes(cnn(hw="H"), feed=feed)["c2"] == (2, 8, 5, 5)


def test_output_kind():
    assert output_kind(cnn()) == ("classes", K)
    assert output_kind(dense_head()) == ("dense", K)
    assert output_kind(vector_head("regression")) == ("values", None)
    assert output_kind(vector_head("embedding")) == ("values", None)
    assert output_kind(cnn(custom="com.microsoft", out_dims=["N", "K"]), {"x": (1, 3, HW, HW)}) == ("classes", K)
