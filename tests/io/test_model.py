"""model_io: every command's loader turns bad files into one clear error and normalises weights."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.errors import OnnxPruneError
from onnxprune.io.graph import initializer_map
from onnxprune.io.model import load_model, model_hash, save_model, validate
from onnxprune.io.runtime import make_session

from builders import tiny_mlp


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(OnnxPruneError, match="no such file"):
        load_model(tmp_path / "nope.onnx")


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(OnnxPruneError, match="not a file"):
        load_model(tmp_path)


def test_text_file_is_not_a_model(tmp_path):
    p = tmp_path / "x.onnx"
    p.write_text("hello, I am not protobuf")
    with pytest.raises(OnnxPruneError, match="not"):
        load_model(p)


def test_truncated_model_is_rejected(tmp_path, tiny_model_path):
    data = tiny_model_path.read_bytes()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(OnnxPruneError):
        load_model(p)


def test_constant_nodes_become_initializers(tmp_path):
    p = tmp_path / "const.onnx"
    onnx.save(tiny_mlp(constant_nodes=True), p)
    m = load_model(p)
    assert [n.op_type for n in m.graph.node] == ["Gemm", "Relu", "Gemm"]
    assert set(initializer_map(m)) == {"w1", "b1", "w2", "b2"}
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    ref = make_session(tiny_mlp()).run(None, {"input": x})[0]
    np.testing.assert_allclose(make_session(m).run(None, {"input": x})[0], ref, rtol=1e-6)


def test_identity_aliases_of_weights_are_folded(tmp_path):
    m = tiny_mlp()
    w1 = next(t for t in m.graph.initializer if t.name == "w1")
    w1.name = "w1_src"
    m.graph.node.insert(0, onnx.helper.make_node("Identity", ["w1_src"], ["w1"]))
    p = tmp_path / "alias.onnx"
    onnx.save(m, p)
    loaded = load_model(p)
    assert "Identity" not in {n.op_type for n in loaded.graph.node}
    assert "w1_src" not in initializer_map(loaded)


def test_save_refuses_to_overwrite_the_input(tiny_model_path):
    before = tiny_model_path.read_bytes()
    with pytest.raises(OnnxPruneError, match="refusing to overwrite"):
        save_model(tiny_mlp(seed=1), tiny_model_path, inputs=(tiny_model_path,))
    assert tiny_model_path.read_bytes() == before


def test_save_is_deterministic(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    save_model(tiny_mlp(), a)
    save_model(tiny_mlp(), b)
    assert a.read_bytes() == b.read_bytes()
    assert model_hash(tiny_mlp()) == model_hash(tiny_mlp()) != model_hash(tiny_mlp(seed=1))


def test_validate_rejects_inconsistent_shapes():
    m = tiny_mlp()
    w2 = next(t for t in m.graph.initializer if t.name == "w2")
    w2.CopyFrom(onnx.numpy_helper.from_array(np.zeros((2, 5), np.float32), "w2"))  # 5 inputs, but fc1 gives 3
    with pytest.raises(OnnxPruneError, match="invalid|does not load"):
        validate(m)


# ---------------------------------------------------------------------------------------------------- folding
def test_constant_subgraphs_are_folded_on_load(tmp_path):
    """A converter's conv bias Add(Conv, Reshape(Constant, Constant)) becomes an initializer the Add reads."""
    from robustness.exporters import cnn

    p = tmp_path / "bias.onnx"
    onnx.save(cnn(bias_subgraph=True), p)
    m = load_model(p)
    assert [n.op_type for n in m.graph.node].count("Reshape") == 0
    adds = [n for n in m.graph.node if n.op_type == "Add"]
    inits = initializer_map(m)
    assert len(adds) == 2 and all(a.input[1] in inits and inits[a.input[1]].shape == (1, 8, 1, 1) for a in adds)
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    ref = make_session(cnn(bias_subgraph=True)).run(None, {"x": x})[0]
    np.testing.assert_allclose(make_session(m).run(None, {"x": x})[0], ref, rtol=1e-6)


def test_folding_is_byte_deterministic(tmp_path):
    from robustness.exporters import cnn

    p = tmp_path / "bias.onnx"
    onnx.save(cnn(bias_subgraph=True, constant_nodes=True), p)
    a, b = load_model(p), load_model(p)
    assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def test_bundled_models_have_nothing_to_fold():
    """Folding leaves the bundled models byte-identical (they load exactly as before folding existed)."""
    from builders import REPO

    from onnxprune.io.model import fold_constants, serialize
    from onnxprune.io.graph import copy_model

    for path in sorted((REPO / "models").glob("*.onnx")):
        m = load_model(path)
        assert serialize(fold_constants(copy_model(m))) == serialize(m), path.name


def test_quantisation_and_random_ops_are_not_folded():
    from onnx import TensorProto, helper, numpy_helper

    from onnxprune.io.model import fold_constants

    g = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["q", "s"], ["w"]),
         helper.make_node("RandomNormal", [], ["r"], shape=[2], dtype=1),
         helper.make_node("Add", ["x", "w"], ["y0"]), helper.make_node("Add", ["y0", "r"], ["y"])], "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array([1, 2], np.int8), "q"), numpy_helper.from_array(np.float32(0.5), "s")])
    m = fold_constants(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]))
    assert [n.op_type for n in m.graph.node] == ["DequantizeLinear", "RandomNormal", "Add", "Add"]


# ---------------------------------------------------------------------------------------------------- writing
def test_output_location_is_checked_before_any_work(tmp_path):
    from onnxprune.io.model import check_writable

    check_writable(tmp_path / "new" / "deeper" / "out.onnx")  # creatable: fine, and nothing is created
    assert not (tmp_path / "new").exists()
    with pytest.raises(OnnxPruneError, match="cannot write"):
        check_writable("/proc/x.onnx")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OnnxPruneError, match="not a directory"):
        check_writable(tmp_path / "file" / "out.onnx")
    with pytest.raises(OnnxPruneError, match="is a directory"):
        check_writable(tmp_path)
    src = tmp_path / "in.onnx"
    src.write_bytes(b"x")
    with pytest.raises(OnnxPruneError, match="refusing to overwrite"):
        check_writable(src, inputs=(src,))


def test_save_failure_is_one_line_and_leaves_nothing(tmp_path):
    from onnxprune.io import model as model_io

    with pytest.raises(OnnxPruneError, match="cannot write the model"):
        save_model(tiny_mlp(), "/proc/x.onnx")
    model_io.WRITTEN.clear()
    out = save_model(tiny_mlp(), tmp_path / "ok.onnx")
    assert model_io.WRITTEN == [out] and [p.name for p in tmp_path.iterdir()] == ["ok.onnx"]


def test_constants_of_every_form_fold_through_shape_ops():
    """Constant(value_ints) → Reshape's shape; Unsqueeze / Cast / Concat of constants: all folded."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxprune.io.model import normalise

    b = np.arange(4, dtype=np.float64)
    g = helper.make_graph(
        [helper.make_node("Constant", [], ["shape"], value_ints=[1, 4]),
         helper.make_node("Cast", ["b64"], ["b32"], to=TensorProto.FLOAT),
         helper.make_node("Reshape", ["b32", "shape"], ["b2"]),
         helper.make_node("Unsqueeze", ["s", "axes"], ["s1"]),
         helper.make_node("Concat", ["s1", "s1"], ["s2"], axis=0),
         helper.make_node("Add", ["x", "b2"], ["y0"]),
         helper.make_node("Mul", ["y0", "s2"], ["y"])], "fold",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(b, "b64"), numpy_helper.from_array(np.float32(2.0), "s"),
         numpy_helper.from_array(np.array([0], np.int64), "axes")])
    m = normalise(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]))
    assert [n.op_type for n in m.graph.node] == ["Add", "Mul"]
    consts = initializer_map(m)
    np.testing.assert_array_equal(consts["b2"], b.astype(np.float32).reshape(1, 4))
    np.testing.assert_array_equal(consts["s2"], [2.0, 2.0])


def test_compressed_size_is_exact_for_small_models_and_a_close_estimate_for_large_ones():
    import zlib

    from onnxprune.io.model import ZLIB_EXACT_BYTES, compressed_size

    small = np.random.default_rng(0).normal(size=1000).astype(np.float32).tobytes()
    assert compressed_size(small) == (len(zlib.compress(small, 6)), False)
    # 24 MB of float32 weights, every third 1 MB run zeroed (unstructured sparsity, uneven across "layers")
    w = np.random.default_rng(1).normal(size=(24, 1 << 18)).astype(np.float32)
    w[::3] = 0
    big = w.tobytes()
    assert len(big) > ZLIB_EXACT_BYTES
    est, estimated = compressed_size(big, 1)
    assert estimated and abs(est / len(zlib.compress(big, 1)) - 1) < 0.05
    assert compressed_size(big, 1) == (est, True)  # deterministic
