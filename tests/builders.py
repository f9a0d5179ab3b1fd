"""Model builders and paths shared by the tests (importable as `builders`; tests/ is on pythonpath)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent
LENET300 = REPO / "models" / "lenet300_mnist.onnx"
MNIST_EVAL = REPO / "calib_data" / "mnist_eval.npz"
MNIST_CALIB = REPO / "calib_data" / "mnist_calib.npz"
# the bundled models, named (a glob would also collect what the README's commands write beside them)
BUNDLED = [REPO / "models" / f"{n}.onnx" for n in
           ("densenet_cifar10", "lenet300_mnist", "lenet5bn_mnist", "mobilenetv2_cifar10", "resnet20_cifar10")]


def mnist_subset(tmp_path: Path, n: int, start: int = 0, name: str = "d.npz") -> Path:
    """Rows [start, start + n) of the bundled MNIST calibration file as a small labelled .npz in tmp_path."""
    z = np.load(MNIST_CALIB)
    p = tmp_path / name
    np.savez(p, x=z["x"][start:start + n], y=z["y"][start:start + n])
    return p


def tiny_mlp(seed: int = 0, constant_nodes: bool = False) -> onnx.ModelProto:
    """input (N,4) → Gemm(4→3) → Relu → Gemm(3→2) → logits; weights as initializers or Constant nodes."""
    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    w2, b2 = rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    weights = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    nodes = [helper.make_node("Gemm", ["input", "w1", "b1"], ["h"], transB=1, name="fc1"),
             helper.make_node("Relu", ["h"], ["a"], name="relu1"),
             helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"], transB=1, name="fc2")]
    if constant_nodes:
        consts = [helper.make_node("Constant", [], [k], value=numpy_helper.from_array(v, k)) for k, v in weights.items()]
        nodes, inits = consts + nodes, []
    else:
        inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    graph = helper.make_graph(nodes, "tiny_mlp",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)


def edge_conv() -> onnx.ModelProto:
    """x (N,1,8,8) → Conv(1→2): filter 0 a Laplacian (its weights sum to 0), filter 1 a box → Relu → out."""
    w = np.stack([LAPLACIAN, np.full((3, 3), 1 / 9, np.float32)])[:, None]
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                           helper.make_node("Relu", ["c"], ["y"], name="relu")], "edge",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 8, 8])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return m


def convnet(seed: int = 0, out: int = 3) -> onnx.ModelProto:
    """input (N,3,8,8) → conv(3→4) → Relu → conv(4→6) → Relu → GAP → Flatten → Gemm(6→out)."""
    rng = np.random.default_rng(seed)
    inits = {"cw1": rng.normal(size=(4, 3, 3, 3)), "cw2": rng.normal(size=(6, 4, 3, 3)), "cb2": rng.normal(size=6),
             "fw": rng.normal(size=(out, 6)), "fb": rng.normal(size=out)}
    nodes = [helper.make_node("Conv", ["input", "cw1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "cw2", "cb2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], axis=1, name="flatten"),
             helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "convnet", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                               ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", out])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return m
