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


def piece(model: onnx.ModelProto, nodes: list[onnx.NodeProto], inputs: list[tuple[str, int]],
          outputs: list[tuple[str, int]]) -> onnx.ModelProto:
    """A model of just `nodes` (in order), fed `inputs` and returning `outputs` ((name, ONNX element type) pairs,
    shapes left to the runtime), with the initializers those nodes read copied from `model` as they are now.

    Built from scratch rather than cut from a copy, so a piece costs its own weights, not the whole model's."""
    read = {x for n in nodes for x in reads(n)}
    inits = [t for t in model.graph.initializer if t.name in read]
    graph = helper.make_graph(nodes, f"{model.graph.name}.piece",
                              [helper.make_tensor_value_info(n, e, None) for n, e in inputs],
                              [helper.make_tensor_value_info(n, e, None) for n, e in outputs], inits)
    out = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    out.functions.extend(model.functions)
    return out


def reads(node: onnx.NodeProto) -> list[str]:
    """Every tensor a node reads: its inputs and the outer-scope names its subgraphs (If / Loop / Scan) use."""
    names = [x for x in node.input if x]
    for a in node.attribute:
        for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else
                  list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []):
            inner = {o for n in g.node for o in n.output} | {i.name for i in g.input} | \
                {t.name for t in g.initializer}
            names += [x for n in g.node for x in reads(n) if x not in inner]
    return names


def between(model: onnx.ModelProto, inputs: set[str], outputs: list[str]) -> list[onnx.NodeProto]:
    """The nodes, in graph order, that compute `outputs` from `inputs` and the initializers (a walk up from the
    outputs that stops at the inputs)."""
    g = model.graph
    producer = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    take: set[int] = set()
    stack = [t for t in outputs if t not in inputs]
    while stack:
        i = producer.get(stack.pop())
        if i is None or i in take:
            continue
        take.add(i)
        stack.extend(x for x in reads(g.node[i]) if x not in inputs)
    return [g.node[i] for i in sorted(take)]
