"""Parameters and multiply-accumulates, per node and in total.

Parameters are the elements of floating-point constants (initializers, plus any Constant nodes left in a model
that was not normalised), so shape constants do not count. MACs of Conv, ConvTranspose, Gemm and MatMul (and the two
products q·kᵀ and weights·v inside the ONNX Attention op, as the written-out MatMuls count them) come from real
shapes (`io.shapes.tensor_shapes`: inference where it is complete, one onnxruntime run where it is not) at the
given input shapes — by default the declared ones with a dynamic batch of 1; callers with data pass the data's
shape. Nodes whose shapes are still unknown (dynamic dims and no shape given, or a model onnxruntime cannot run) are
listed in `unknown` and counted as 0, so `macs` is then a lower bound; a count is never negative.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from ..io.graph import attr
from ..io.shapes import complete, concrete_inputs, tensor_shapes


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


def count(model: onnx.ModelProto, inputs: dict[str, tuple[int, ...]] | None = None) -> ModelCount:
    """`inputs`: concrete input shapes (whole, or per sample) to count at; default the declared shapes, batch 1."""
    consts = _float_constants(model)
    pinned = concrete_inputs(model, inputs, strict=False) if inputs else concrete_inputs(model, strict=False)
    shapes = {k: list(v) for k, v in tensor_shapes(model, pinned).items() if complete(v)}
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


def _macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int | None:
    op = node.op_type
    if op == "Attention" and node.domain in ("", "ai.onnx"):
        return _attention_macs(node, shapes)
    if op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        return 0
    ins = [shapes.get(t) for t in node.input[:2]]
    out = shapes.get(node.output[0])
    if any(s is None for s in ins) or out is None:
        return None
    if any(d < 0 for s in (*ins, out) for d in s):
        return None
    w = ins[1]
    if op == "Conv":  # each output element: C_in/g · k… MACs
        return int(np.prod(out)) * int(np.prod(w[1:]))
    if op == "ConvTranspose":  # each input element scatters into C_out/g · k… outputs
        return int(np.prod(ins[0])) * int(np.prod(w[1:]))
    k = ins[0][0] if op == "Gemm" and attr(node, "transA", 0) else ins[0][-1]
    return int(np.prod(out)) * int(k)


def _attention_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int | None:
    """B·Hq·Tq·Tk·(dh + dv): q·kᵀ and weights·v, Tk counting the cached keys (past_key) too."""
    q, k, v = (shapes.get(t) for t in node.input[:3])
    past = shapes.get(node.input[4]) if len(node.input) > 4 and node.input[4] else []
    if q is None or k is None or v is None or past is None:
        return None
    if len(q) == 4:
        b, hq, tq, dh = q
        tk, dv = k[2] + (past[2] if past else 0), v[3]
    else:
        hq, hkv = attr(node, "q_num_heads"), attr(node, "kv_num_heads")
        if not hq or not hkv:
            return None
        b, tq, dh = q[0], q[1], q[2] // hq
        tk, dv = k[1] + (past[2] if past else 0), v[2] // hkv
    return int(b) * int(hq) * int(tq) * int(tk) * (int(dh) + int(dv))


def nonzero_params(model: onnx.ModelProto) -> int:
    """Non-zero elements of the floating-point initializers: what unstructured pruning really removes (`count`'s
    params include the zeros, which the file still stores)."""
    from onnx import numpy_helper

    return sum(int(np.count_nonzero(numpy_helper.to_array(t))) for t in model.graph.initializer
               if helper.tensor_dtype_to_np_dtype(t.data_type).kind == "f")
