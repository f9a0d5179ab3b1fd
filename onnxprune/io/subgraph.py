"""Cut a model down to what some tensors depend on.

onnxruntime runs every node of a session whatever is fetched, so a pass that only needs an early tensor (the
layer-by-layer reconstruction fetches each layer's input in turn) pays for the whole network unless the graph is
cut first. Values are unchanged: only nodes the tensors do not depend on are dropped.
"""
from __future__ import annotations

import onnx
from onnx import helper


def upstream(model: onnx.ModelProto, tensors: list[str], elem_type: int = onnx.TensorProto.FLOAT) -> onnx.ModelProto:
    """A copy of `model` whose outputs are `tensors` (declared as `elem_type`) and whose nodes are exactly those
    they depend on. Graph inputs stay declared (callers keep feeding them); unused initializers and value_info are
    dropped. A graph with control-flow subgraphs is only re-pointed, not cut."""
    g = model.graph
    producer = {o: i for i, n in enumerate(g.node) for o in n.output}
    needed_nodes: set[int] = set()
    stack = [t for t in tensors if t in producer]
    seen: set[str] = set()
    while stack:
        t = stack.pop()
        if t in seen or t not in producer:
            continue
        seen.add(t)
        i = producer[t]
        if i not in needed_nodes:
            needed_nodes.add(i)
            stack.extend(x for x in g.node[i].input if x)
            for a in g.node[i].attribute:  # subgraphs (If/Loop) read outer tensors implicitly: keep them all
                if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                    return _with_outputs(model, tensors, elem_type)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [n for i, n in enumerate(g.node) if i in needed_nodes]
    del out.graph.node[:]
    out.graph.node.extend(kept)
    used = {x for n in kept for x in n.input}
    inits = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(inits)
    del out.graph.value_info[:]
    return _set_outputs(out, tensors, elem_type)


def _with_outputs(model: onnx.ModelProto, tensors: list[str], elem_type: int) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return _set_outputs(out, tensors, elem_type)


def _set_outputs(m: onnx.ModelProto, tensors: list[str], elem_type: int) -> onnx.ModelProto:
    del m.graph.output[:]
    m.graph.output.extend(helper.make_tensor_value_info(t, elem_type, None) for t in tensors)
    return m
