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
