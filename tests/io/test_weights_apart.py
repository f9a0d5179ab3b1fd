"""Throw-away sessions (shape probes) may hand the large weights to onnxruntime as in-memory arrays instead of
serialising them: the same values come out, and the caller's model is left as it was."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.io.runtime import APART_MIN, make_session
from onnxprune.io.shapes import runtime_values


def model() -> onnx.ModelProto:
    """x [N, 64] → MatMul by a 64×128 weight (large: handed over apart) → Add a small bias → Reshape by a small
    int64 target (stays in the bytes) → y [N, 2, 64]."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 128)).astype(np.float32)
    assert w.size >= APART_MIN
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Add", ["h", "b"], ["a"], name="add"),
         helper.make_node("Reshape", ["a", "shape"], ["y"], name="rs")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 64])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(rng.normal(size=128).astype(np.float32), "b"),
         numpy_helper.from_array(np.array([-1, 2, 64], np.int64), "shape")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_weights_apart_gives_the_same_outputs_and_leaves_the_model_alone():
    m = model()
    before = m.SerializeToString()
    x = np.random.default_rng(1).normal(size=(3, 64)).astype(np.float32)
    plain = make_session(m, optimize="disable").run(None, {"x": x})[0]
    apart = make_session(m, optimize="disable", weights_apart=True)
    assert np.array_equal(apart.run(None, {"x": x})[0], plain)
    assert m.SerializeToString() == before


def test_shape_probe_values_are_unchanged():
    m = model()
    x = np.random.default_rng(2).normal(size=(2, 64)).astype(np.float32)
    got = runtime_values(m, ["h", "a", "y"], {"x": x})
    w, b = (numpy_helper.to_array(t) for t in m.graph.initializer[:2])
    np.testing.assert_allclose(got["a"], x @ w + b, rtol=1e-5, atol=1e-5)
    assert got["y"].shape == (2, 2, 64)
