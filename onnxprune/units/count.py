"""Parameters and multiply-accumulates (batch 1), per node and in total.

Parameters are the elements of floating-point constants (initializers, plus any Constant nodes left in a model
that was not normalised), so shape constants do not count. MACs come from shape inference with the batch set to
1: Conv, ConvTranspose, Gemm and MatMul; nodes whose shapes cannot be inferred are listed in `unknown`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from ..io.graph import attr


@dataclass
class NodeCount:
    node: str
    op_type: str
    params: int
    macs: int


@dataclass
class ModelCount:
    params: int
    macs: int
    nodes: list[NodeCount] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # MAC-bearing nodes whose shapes were not inferred

    def by_node(self) -> dict[str, NodeCount]:
        return {n.node: n for n in self.nodes}


def count(model: onnx.ModelProto) -> ModelCount:
    consts = _float_constants(model)
    shapes = _batch1_shapes(model, consts)
    counted: set[str] = set()
    nodes, unknown = [], []
    for node in model.graph.node:
        name = node.name
        params = sum(consts[t] for t in node.input if t in consts and t not in counted)
        counted.update(t for t in node.input if t in consts)
        macs = _macs(node, shapes)
        if macs is None:
            unknown.append(name)
            macs = 0
        if params or macs:
            nodes.append(NodeCount(name, node.op_type, params, macs))
    return ModelCount(sum(consts.values()), sum(n.macs for n in nodes), nodes, unknown)


def _float_constants(model: onnx.ModelProto) -> dict[str, int]:
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    names = [t.name for t in model.graph.initializer]
    names += [n.output[0] for n in model.graph.node if n.op_type == "Constant" and any(a.name == "value" for a in n.attribute)]
    return {name: int(np.prod(t.dims, dtype=np.int64)) for name, t in zip(names, tensors)
            if helper.tensor_dtype_to_np_dtype(t.data_type).kind == "f"}


def _batch1_shapes(model: onnx.ModelProto, consts: dict[str, int]) -> dict[str, list[int]]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
    try:
        m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception:
        pass
    shapes = {t.name: list(t.dims) for t in m.graph.initializer}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    for n in m.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    shapes[n.output[0]] = list(a.t.dims)
    return shapes


def _macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int | None:
    op = node.op_type
    if op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        return 0
    ins = [shapes.get(t) for t in node.input[:2]]
    out = shapes.get(node.output[0])
    if any(s is None for s in ins) or out is None:
        return None
    w = ins[1]
    if op == "Conv":  # each output element: C_in/g · k… MACs
        return int(np.prod(out)) * int(np.prod(w[1:]))
    if op == "ConvTranspose":  # each input element scatters into C_out/g · k… outputs
        return int(np.prod(ins[0])) * int(np.prod(w[1:]))
    k = ins[0][0] if op == "Gemm" and attr(node, "transA", 0) else ins[0][-1]
    return int(np.prod(out)) * int(k)
