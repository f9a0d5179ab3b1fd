"""Tiny ONNX models built with onnx.helper, and matching .npz data, for the statistics tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.io.data import load_dataset


def _model(nodes, inits, inp, out_dim, name):
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *inp])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", out_dim])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.checker.check_model(m, full_check=True)
    return m


def build_mlp(seed: int = 0, act: str = "Relu") -> onnx.ModelProto:
    """input (N,6) → fc1 Gemm(6→5)+bias → act → fc2 Gemm(5→4, transB=0) → Relu → fc3 MatMul(4→3) + Add → logits."""
    rng = np.random.default_rng(seed)
    inits = {"w1": rng.normal(size=(5, 6)), "b1": rng.normal(size=5) * 0.5, "w2": rng.normal(size=(5, 4)),
             "b2": rng.normal(size=4) * 0.5, "w3": rng.normal(size=(4, 3)), "b3": rng.normal(size=3)}
    nodes = [helper.make_node("Gemm", ["input", "w1", "b1"], ["h1"], transB=1, name="fc1")]
    if act == "Clip":
        inits.update({"lo": np.array(-0.5), "hi": np.array(1.0)})
        nodes.append(helper.make_node("Clip", ["h1", "lo", "hi"], ["a1"], name="act1"))
    else:
        nodes.append(helper.make_node(act, ["h1"], ["a1"], name="act1"))
    nodes += [helper.make_node("Gemm", ["a1", "w2", "b2"], ["h2"], name="fc2"),
              helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
              helper.make_node("MatMul", ["a2", "w3"], ["h3"], name="fc3"),
              helper.make_node("Add", ["h3", "b3"], ["logits"], name="bias3")]
    return _model(nodes, inits, [6], 3, "mlp")


def build_convnet(seed: int = 0) -> onnx.ModelProto:
    """input (N,3,8,8) → conv1(3→4) → BN → Relu → conv2(4→6, group 2, bias) → Relu → GAP → Flatten → fc Gemm(6→3)."""
    rng = np.random.default_rng(seed)
    inits = {"cw1": rng.normal(size=(4, 3, 3, 3)), "g": rng.uniform(0.5, 1.5, 4), "beta": rng.normal(size=4) * 0.3,
             "mu": rng.normal(size=4) * 0.1, "var": rng.uniform(0.5, 2, 4), "cw2": rng.normal(size=(6, 2, 3, 3)),
             "cb2": rng.normal(size=6) * 0.3, "fw": rng.normal(size=(3, 6)), "fb": rng.normal(size=3)}
    nodes = [helper.make_node("Conv", ["input", "cw1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("BatchNormalization", ["c1", "g", "beta", "mu", "var"], ["bn1"], name="bn1"),
             helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "cw2", "cb2"], ["c2"], pads=[1, 1, 1, 1], group=2, name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], axis=1, name="flatten"),
             helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"], transB=1, name="fc")]
    return _model(nodes, inits, [3, 8, 8], 3, "convnet")


def write_npz(path: Path, x: np.ndarray, y: np.ndarray | None = None) -> Path:
    if y is None:
        np.savez(path, x=x)
    else:
        np.savez(path, x=x, y=y)
    return path


@pytest.fixture
def mlp() -> onnx.ModelProto:
    return build_mlp()


@pytest.fixture
def convnet() -> onnx.ModelProto:
    return build_convnet()


@pytest.fixture
def mlp_data(tmp_path, mlp):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(203, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=203)
    return load_dataset(write_npz(tmp_path / "mlp.npz", x, y), mlp)


@pytest.fixture
def conv_data(tmp_path, convnet):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(97, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=97)
    return load_dataset(write_npz(tmp_path / "conv.npz", x, y), convnet)


@pytest.fixture
def without_ray(monkeypatch):
    """Imports of Ray fail, as on a machine without the optional extra."""
    import builtins

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("no ray")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray with 2 CPUs for the module's tests; skipped where the optional extra is not installed."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (optional extra)")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
