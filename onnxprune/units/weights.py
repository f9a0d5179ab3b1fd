"""Prunable weight layers and their layouts: which initializers unstructured pruning may touch, and how a
per-input-feature statistic lines up with each weight.

Prunable: Gemm's B (transA = 0), MatMul's constant 2-D second input, Conv's W — each used by exactly one node,
so zeroing it cannot change another layer. Layer names follow the statistics engine: node name, or first output.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from ..errors import OnnxPruneError


@dataclass(frozen=True)
class Layer:
    name: str  # node name (or first output when unnamed)
    op: str  # Gemm | MatMul | Conv
    weight: str  # initializer name
    shape: tuple[int, ...]
    input: str  # the data input tensor
    in_axis: int  # weight axis indexing input features / channels
    out_axis: int  # weight axis indexing output neurons / channels
    groups: int = 1

    @property
    def kind(self) -> str:
        """How the statistics engine sees the input: "features" (B, F) or "channels" (B, C) spatial means."""
        return "channels" if self.op == "Conv" else "features"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def rows(self, w: np.ndarray) -> np.ndarray:
        """The weight as (out, rest): one row per output neuron / filter."""
        return np.moveaxis(w, self.out_axis, 0).reshape(self.shape[self.out_axis], -1)

    def from_rows(self, rows: np.ndarray) -> np.ndarray:
        """Inverse of `rows`."""
        axes = [self.out_axis] + [a for a in range(len(self.shape)) if a != self.out_axis]
        moved = tuple(self.shape[a] for a in axes)
        return np.moveaxis(rows.reshape(moved), 0, self.out_axis)

    def per_input(self, vec: np.ndarray) -> np.ndarray:
        """A per-input-feature vector (Conv: per input channel, all groups) broadcast to the weight's shape."""
        v = np.asarray(vec, dtype=np.float64).ravel()
        if self.op != "Conv":
            if v.size != self.shape[self.in_axis]:
                raise OnnxPruneError(f"{self.name}: statistic has {v.size} features, weight expects "
                                     f"{self.shape[self.in_axis]}")
            s = [1] * len(self.shape)
            s[self.in_axis] = v.size
            return np.broadcast_to(v.reshape(s), self.shape)
        m, cg = self.shape[0], self.shape[1]
        if v.size != cg * self.groups:
            raise OnnxPruneError(f"{self.name}: statistic has {v.size} channels, weight expects {cg * self.groups}")
        idx = (np.arange(m)[:, None] // (m // self.groups)) * cg + np.arange(cg)[None, :]
        return np.broadcast_to(v[idx].reshape(m, cg, *[1] * (len(self.shape) - 2)), self.shape)

    def per_connection(self, a: np.ndarray) -> np.ndarray:
        """An (out, in) per-connection statistic (Conv: (out, in/groups), kernel summed) laid out like the weight."""
        a = np.asarray(a, dtype=np.float64)
        if self.op == "Conv":
            return np.broadcast_to(a.reshape(*a.shape, *[1] * (len(self.shape) - 2)), self.shape)
        return a if self.in_axis == 1 else a.T


def node_name(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def prunable_layers(model: onnx.ModelProto) -> list[Layer]:
    """Every prunable weight layer, in graph (topological) order."""
    g = model.graph
    shapes = {t.name: tuple(int(d) for d in t.dims) for t in g.initializer}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    out = []
    for n in g.node:
        if len(n.input) < 2 or n.input[1] not in shapes or uses.get(n.input[1]) != 1 or n.input[0] in shapes:
            continue
        shape = shapes[n.input[1]]
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Gemm" and not attrs.get("transA", 0) and len(shape) == 2:
            in_axis = 1 if attrs.get("transB", 0) else 0
            out.append(Layer(node_name(n), "Gemm", n.input[1], shape, n.input[0], in_axis, 1 - in_axis))
        elif n.op_type == "MatMul" and len(shape) == 2:
            out.append(Layer(node_name(n), "MatMul", n.input[1], shape, n.input[0], 0, 1))
        elif n.op_type == "Conv" and len(shape) >= 3:
            out.append(Layer(node_name(n), "Conv", n.input[1], shape, n.input[0], 1, 0, int(attrs.get("group", 1))))
    return out


def protected(layers: list[Layer], protect: tuple[str, ...] | list[str]) -> set[str]:
    """Weight names matched by --protect entries (node name, weight name, 'first', 'last'); unknown → error."""
    found: set[str] = set()
    for p in protect:
        if p == "first" and layers:
            found.add(layers[0].weight)
        elif p == "last" and layers:
            found.add(layers[-1].weight)
        else:
            hits = [L.weight for L in layers if p in (L.name, L.weight)]
            if not hits:
                names = ", ".join(L.name for L in layers)
                raise OnnxPruneError(f"--protect {p}: no prunable layer of that name (layers: {names})")
            found.update(hits)
    return found


@dataclass(frozen=True)
class Linear:
    """y = alpha·x·Wᵀ + beta·b for a Gemm / MatMul layer; `bias` is Gemm's C or the constant of a bias Add that
    alone reads a MatMul's output (None without one). `in_node` says whether the bias is an input of the node."""

    alpha: float
    beta: float
    bias: str | None
    in_node: bool


def linear_form(model: onnx.ModelProto, L: Layer) -> Linear:
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    node = next(n for n in g.node if node_name(n) == L.name)
    if node.op_type == "Gemm":
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in inits else None
        return Linear(float(a.get("alpha", 1.0)), float(a.get("beta", 1.0)), bias, True)
    readers = [n for n in g.node if node.output[0] in n.input]
    if node.output[0] not in {o.name for o in g.output} and len(readers) == 1 and readers[0].op_type == "Add":
        other = [i for i in readers[0].input if i != node.output[0]]
        if other and other[0] in inits and int(np.prod(inits[other[0]].dims)) in (1, L.shape[L.out_axis]):
            return Linear(1.0, 1.0, other[0], False)
    return Linear(1.0, 1.0, None, False)
