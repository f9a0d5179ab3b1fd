"""Small generated models in the shapes other exporters write them (onnx.helper only, seeded), for the robustness set.

`cnn(...)` is one classifier — Conv(3→8)+bias → Relu → Conv(8→8)+bias → Relu → GlobalAveragePool → Flatten →
Gemm(8→4) — with switches for each exporter pattern: how the batch and H/W are declared (symbolic, `?`, -1, fixed),
the opset, weights in Constant nodes, the conv bias as `Add(Conv, Reshape(Constant, Constant))`, an op of a custom
domain (or com.microsoft) mid-graph, float16. `dense_head` / `regression` / `embedding` are the non-classifiers.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

C_IN, C, K, HW = 3, 8, 4, 8


def _dim(d):
    """None → '?' (no name, no value), str → symbolic, int → value (including -1, as some exporters write)."""
    dim = onnx.TensorShapeProto.Dimension()
    if isinstance(d, str):
        dim.dim_param = d
    elif isinstance(d, int):
        dim.dim_value = d
    return dim


def _vi(name: str, elem: int, dims) -> onnx.ValueInfoProto:
    vi = helper.make_tensor_value_info(name, elem, None)
    if dims is not None:
        shape = vi.type.tensor_type.shape
        shape.SetInParent()
        for d in dims:
            shape.dim.append(_dim(d))
    return vi


def cnn(*, batch="N", hw=HW, opset: int = 18, constant_nodes: bool = False, bias_subgraph: bool = False,
        custom: str | None = None, fp16: bool = False, seed: int = 0, out_dims=None) -> onnx.ModelProto:
    """`hw`: int for fixed H/W, a str for symbolic ('H' → 'H', 'W'), None for '?' dims.
    `custom`: None, 'com.microsoft' (a Gelu onnxruntime runs but ONNX shape inference does not know) or another
    domain name (an op nothing can run)."""
    rng = np.random.default_rng(seed)
    ft = np.float16 if fp16 else np.float32
    elem = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    w = {"w1": rng.normal(0, 0.3, (C, C_IN, 3, 3)), "b1": rng.normal(0, 0.1, C),
         "w2": rng.normal(0, 0.3, (C, C, 3, 3)), "b2": rng.normal(0, 0.1, C),
         "w3": rng.normal(0, 0.3, (K, C)), "b3": rng.normal(0, 0.1, K)}
    w = {k: v.astype(ft) for k, v in w.items()}
    nodes, inits = [], []

    def const(name, value):
        if constant_nodes:
            nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name)))
        else:
            inits.append(numpy_helper.from_array(value, name))
        return name

    def conv(x, wname, bname, out):
        if bias_subgraph:  # the converter pattern: y = Conv(x, W) + Reshape(b, [1, C, 1, 1])
            const(wname, w[wname])
            nodes.append(helper.make_node("Constant", [], [bname + "_v"], value=numpy_helper.from_array(w[bname])))
            nodes.append(helper.make_node("Constant", [], [bname + "_s"],
                                          value=numpy_helper.from_array(np.array([1, C, 1, 1], np.int64))))
            nodes.append(helper.make_node("Reshape", [bname + "_v", bname + "_s"], [bname + "_r"]))
            nodes.append(helper.make_node("Conv", [x, wname], [out + "_nb"], pads=[1, 1, 1, 1]))
            nodes.append(helper.make_node("Add", [out + "_nb", bname + "_r"], [out]))
        else:
            nodes.append(helper.make_node("Conv", [x, const(wname, w[wname]), const(bname, w[bname])], [out],
                                          pads=[1, 1, 1, 1]))

    conv("x", "w1", "b1", "c1")
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"]))
    a = "r1"
    if custom is not None:
        op = "Gelu" if custom == "com.microsoft" else "MyAct"
        nodes.append(helper.make_node(op, ["r1"], ["g1"], domain=custom))
        a = "g1"
    conv(a, "w2", "b2", "c2")
    nodes.append(helper.make_node("Relu", ["c2"], ["r2"]))
    nodes.append(helper.make_node("GlobalAveragePool", ["r2"], ["p"]))
    nodes.append(helper.make_node("Flatten", ["p"], ["f"], axis=1))
    nodes.append(helper.make_node("Gemm", ["f", const("w3", w["w3"]), const("b3", w["b3"])], ["logits"], transB=1))
    hdims = [hw, hw] if isinstance(hw, int) or hw is None else ["H", "W"]
    graph = helper.make_graph(nodes, "cnn", [_vi("x", elem, [batch, C_IN, *hdims])],
                              [_vi("logits", elem, out_dims if out_dims is not None else [batch, K])], inits)
    imports = [helper.make_opsetid("", opset)]
    if custom is not None:
        imports.append(helper.make_opsetid(custom, 1))
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 7 if opset <= 14 else 8 if opset <= 18 else 10
    return model


def dense_head(batch="N") -> onnx.ModelProto:
    """Segmentation-like: x (N,3,8,8) → Conv(3→8) → Relu → Conv 1×1 (8→K) → scores (N, K, 8, 8)."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (C, C_IN, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, C).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (K, C, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(0, 0.1, K).astype(np.float32), "b2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["scores"])]
    g = helper.make_graph(nodes, "seg", [_vi("x", TensorProto.FLOAT, [batch, C_IN, HW, HW])],
                          [_vi("scores", TensorProto.FLOAT, [batch, K, HW, HW])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    return m


def vector_head(out: str = "regression") -> onnx.ModelProto:
    """x (N,3,8,8) → Conv → Relu → GAP → Flatten → Gemm(8→D): regression (D=1) or an L2-normalised embedding (D=6)."""
    rng = np.random.default_rng(2)
    d = 1 if out == "regression" else 6
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (C, C_IN, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, C).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (d, C)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(0, 0.1, d).astype(np.float32), "b2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("GlobalAveragePool", ["r1"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "w2", "b2"], ["y" if out == "regression" else "e"], transB=1)]
    if out != "regression":
        nodes.append(helper.make_node("LpNormalization", ["e"], ["y"], axis=1, p=2))
    g = helper.make_graph(nodes, out, [_vi("x", TensorProto.FLOAT, ["N", C_IN, HW, HW])],
                          [_vi("y", TensorProto.FLOAT, ["N", d])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    return m


def data(n: int = 48, hw: int = HW, seed: int = 0, labels: bool = True, fp16: bool = False, k: int = K) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, C_IN, hw, hw)).astype(np.float16 if fp16 else np.float32)
    return {"x": x, "y": rng.integers(0, k, n)} if labels else {"x": x}
