"""The small ONNX graph API every stage uses: attributes, constants, who produces / reads a tensor, names.

One place for what every pass needs (the way onnx-graphsurgeon gives passes one tiny interface): node names are
made unique and stable once, at load (`name_nodes`), and every later stage refers to nodes by `node.name`.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import OnnxPruneError


# ---------------------------------------------------------------------------------------------------- names
def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every node a unique, stable name, in place: an unnamed node becomes '<op>_<index>', a repeated name
    gets '#2', '#3', … — the only node-naming scheme in onnxprune (plans, reports and --protect use it)."""
    taken: set[str] = set()
    for i, node in enumerate(model.graph.node):
        base = node.name or f"{node.op_type}_{i}"
        name, k = base, 2
        while name in taken:
            name, k = f"{base}#{k}", k + 1
        node.name = name
        taken.add(name)
    return model


def node_by_name(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    for n in model.graph.node:
        if n.name == name:
            return n
    raise OnnxPruneError(f"no node named '{name}' in the model")


def fresh_name(taken: Iterable[str], base: str) -> str:
    """`base`, or `base_2`, `base_3`, … whichever is not taken."""
    taken = taken if isinstance(taken, (set, dict)) else set(taken)
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


# ---------------------------------------------------------------------------------------------------- attributes
def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def set_attr(node: onnx.NodeProto, name: str, value: Any) -> None:
    del_attr(node, name)
    node.attribute.append(helper.make_attribute(name, value))


def del_attr(node: onnx.NodeProto, name: str) -> None:
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)


def opset(model: onnx.ModelProto) -> int:
    """The default-domain opset version (1 when the model declares none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


# ---------------------------------------------------------------------------------------------------- topology
def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output if o}


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    c: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            if i:
                c[i].append(n)
    return c


def uses(model: onnx.ModelProto) -> dict[str, int]:
    """How many node inputs (and graph outputs) read each tensor."""
    u: dict[str, int] = defaultdict(int)
    for n in model.graph.node:
        for t in n.input:
            u[t] += 1
    for o in model.graph.output:
        u[o.name] += 1
    return u


def graph_outputs(model: onnx.ModelProto) -> set[str]:
    return {o.name for o in model.graph.output}


# ---------------------------------------------------------------------------------------------------- constants
def initializer_map(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Name → numpy array for every initializer."""
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def constant(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """The value of initializer `name`, or None when it is not one."""
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    return None


def set_initializer(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    """Replace (or add) an initializer, keeping its position so output bytes stay deterministic."""
    new = numpy_helper.from_array(np.asarray(value, order="C"), name)  # (ascontiguousarray makes scalars 1-D)
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(new)
            return
    model.graph.initializer.append(new)


def remove_unused_initializers(model: onnx.ModelProto) -> None:
    g = model.graph
    used = {i for n in g.node for i in n.input} | graph_outputs(model)
    keep = [t for t in g.initializer if t.name in used]
    if len(keep) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(keep)


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose large float initializers keep their type and dims but not their data: all shape inference
    needs (small constants such as Reshape targets keep their values), without passing the weights in and out of
    onnx's C++ inference (most of its cost on a 100 MB model)."""
    m = copy_model(model)
    for t in m.graph.initializer:
        if t.data_type in FLOAT_TYPES and int(np.prod(t.dims)) > 1024:
            for f in ("raw_data", "float_data", "double_data", "int32_data"):
                t.ClearField(f)
    return m
