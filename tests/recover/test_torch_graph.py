"""TorchGraph: parity with onnxruntime, exact initializer round trip, unsupported ops, BN semantics."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from recover_builders import GENERATED, MODELS, REPO, conv_chain, input_shape  # noqa: E402

from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.recover.torch_graph import TorchGraph  # noqa: E402


def _ort(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, feed)[0]


def _torch(model: onnx.ModelProto, feed: dict, tg: TorchGraph | None = None) -> np.ndarray:
    tg = (tg or TorchGraph(model)).eval()
    with torch.no_grad():
        return tg.run(feed)[model.graph.output[0].name].numpy()


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    assert a.shape == ref.shape
    return float(np.abs(a - ref).max() / max(1.0, float(np.abs(ref).max())))


def _calib_batch(model: onnx.ModelProto, n: int = 16) -> dict:
    shape = input_shape(model, n)[1:]
    for f in sorted((REPO / "calib_data").glob("*calib*.npz")):
        with np.load(f) as z:
            if z["x"].shape[1:] == shape:
                return {model.graph.input[0].name: z["x"][:n].astype(np.float32)}
    raise AssertionError(f"no calibration data fits {shape}")


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_parity_generated(name: str) -> None:
    m = GENERATED[name]()
    x = np.random.default_rng(0).uniform(0, 255, input_shape(m, 4)).astype(np.float32)
    feed = {"input": x}
    assert _rel(_torch(m, feed), _ort(m, feed)) <= 1e-4


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_parity_bundled(path: Path) -> None:
    m = onnx.load(path)
    feed = _calib_batch(m)
    assert _rel(_torch(m, feed), _ort(m, feed)) <= 1e-4


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_round_trip_byte_identical(path: Path) -> None:
    m = onnx.load(path)
    back = TorchGraph(m).write_back(m)
    assert [t.SerializeToString() for t in back.graph.initializer] == \
        [t.SerializeToString() for t in m.graph.initializer]
    assert back.SerializeToString() == m.SerializeToString()


def test_round_trip_other_dtypes_and_storage() -> None:
    """float16 and float64 initializers, and float_data (not raw_data) storage, come back byte-identical."""
    w16 = numpy_helper.from_array(np.arange(6, dtype=np.float16).reshape(2, 3) / 7, "w16")
    w64 = helper.make_tensor("w64", TensorProto.DOUBLE, [3], [0.1, 0.2, 1 / 3])
    w32 = helper.make_tensor("w32", TensorProto.FLOAT, [3], [0.5, -1.25, 3.0])  # float_data storage
    nodes = [helper.make_node("Cast", ["w16"], ["w16f"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["input", "w16f"], ["h"]),
             helper.make_node("Add", ["h", "w32"], ["h2"]),
             helper.make_node("Cast", ["h2"], ["h3"], to=TensorProto.DOUBLE),
             helper.make_node("Mul", ["h3", "w64"], ["out"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 2])],
                          [helper.make_tensor_value_info("out", TensorProto.DOUBLE, [None, 3])], [w16, w64, w32])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    tg = TorchGraph(m)
    back = tg.write_back(m)
    assert back.SerializeToString() == m.SerializeToString()
    x = {"input": np.array([[1.0, 2.0]], np.float32)}
    np.testing.assert_allclose(_torch(m, x, tg), _ort(m, x), rtol=1e-6)


def test_write_back_changed_values_same_names_and_parity() -> None:
    m = conv_chain()
    tg = TorchGraph(m)
    names = tg.trainable_names()
    assert names, "conv weights must be trainable"
    with torch.no_grad():
        for k, nm in enumerate(names):
            tg.tensor(nm).mul_(1.0 + 0.01 * (k + 1))
    back = tg.write_back(m)
    assert [t.name for t in back.graph.initializer] == [t.name for t in m.graph.initializer]
    assert back.graph.node == m.graph.node  # structure untouched
    before = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    for t in back.graph.initializer:
        a = numpy_helper.to_array(t)
        assert a.dtype == before[t.name].dtype and a.shape == before[t.name].shape
        assert (not np.array_equal(a, before[t.name])) == (t.name in names and bool(np.any(before[t.name])))
    x = {"input": np.random.default_rng(1).uniform(0, 255, input_shape(m, 3)).astype(np.float32)}
    assert _rel(_torch(back, x), _ort(back, x)) <= 1e-4
    onnx.checker.check_model(back, full_check=True)


def test_parameter_roles() -> None:
    m = conv_chain()
    tg = TorchGraph(m)
    trainable = set(tg.trainable_names())
    pre = [n.input[1] for n in m.graph.node[:2]]  # input preprocessing Mul / Add constants
    assert not trainable & set(pre)
    bn = next(n for n in m.graph.node if n.op_type == "BatchNormalization")
    assert set(bn.input[1:3]) <= trainable
    assert not set(bn.input[3:5]) & trainable
    assert all(not isinstance(tg.tensor(n), torch.nn.Parameter) for n in bn.input[3:5])  # buffers
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    assert set(conv.input[1:]) <= trainable


def test_single_numbers_of_the_function_stay_frozen() -> None:
    """GELU's √2 / 1 / 0.5 and the attention scale are part of the function (and trained, onnxruntime could no
    longer fuse the GELU); weights, biases, LayerNorm and the position embedding are trained."""
    m = onnx.load(REPO / "models" / "rowformer_mnist.onnx")
    inits = {t.name: t for t in m.graph.initializer}
    trainable = set(TorchGraph(m).trainable_names())
    singles = {n for n, t in inits.items() if t.data_type == TensorProto.FLOAT and int(np.prod(t.dims)) == 1}
    gelu = {i for n in m.graph.node if n.op_type in ("Div", "Mul", "Add") for i in n.input if i in singles}
    assert len(gelu) >= 3 and not gelu & trainable
    layers = {n.input[1] for n in m.graph.node if n.op_type in ("MatMul", "Gemm", "LayerNormalization")
              if n.input[1] in inits}
    assert layers and layers <= trainable


def test_bn_train_mode_updates_running_stats_with_onnx_momentum() -> None:
    m = conv_chain()
    bn = next(n for n in m.graph.node if n.op_type == "BatchNormalization")
    for a in bn.attribute:
        if a.name == "momentum":
            a.f = 0.8
    if not any(a.name == "momentum" for a in bn.attribute):
        bn.attribute.append(helper.make_attribute("momentum", 0.8))
    tg = TorchGraph(m).train()
    mean0 = tg.tensor(bn.input[3]).clone()
    captured = {}
    x = np.random.default_rng(2).uniform(0, 255, input_shape(m, 8)).astype(np.float32)
    with torch.no_grad():
        captured = tg.run({"input": x}, fetch=[bn.input[0]])
    batch_mean = captured[bn.input[0]].mean((0, 2, 3))
    # ONNX momentum m: running = m·running + (1 − m)·batch
    np.testing.assert_allclose(tg.tensor(bn.input[3]).numpy(), (0.8 * mean0 + 0.2 * batch_mean).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_unsupported_op_is_one_line_error() -> None:
    nodes = [helper.make_node("Relu", ["input"], ["a"], name="r"),
             helper.make_node("TopK", ["a", "k"], ["out", "idx"], name="the_topk", axis=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 2])],
                          [numpy_helper.from_array(np.array([2], np.int64), "k")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(OnnxPruneError) as e:
        TorchGraph(m)
    msg = str(e.value)
    assert msg == "cannot train this model in PyTorch: unsupported op TopK at node 'the_topk'"
    assert "\n" not in msg


def test_unsupported_custom_domain_names_the_domain() -> None:
    nodes = [helper.make_node("FusedConv", ["input"], ["out"], name="fc", domain="com.microsoft")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(OnnxPruneError, match=r"unsupported op com\.microsoft\.FusedConv at node 'fc'"):
        TorchGraph(m)


def test_gradients_reach_every_trainable_initializer() -> None:
    m = GENERATED["residual"]()
    tg = TorchGraph(m).train()
    x = np.random.default_rng(3).uniform(0, 255, input_shape(m, 4)).astype(np.float32)
    tg.run({"input": x})["out"].pow(2).sum().backward()
    for nm in tg.trainable_names():
        g = tg.tensor(nm).grad
        assert g is not None and torch.isfinite(g).all(), nm
