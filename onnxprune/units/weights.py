"""Weight layers: the unit of unstructured pruning, and the one description of a layer's weight layout.

A weight layer is a Gemm (B, transA = 0), a MatMul with a constant 2-D second input, or a Conv (W), whose weight
is an initializer read by that node alone (so zeroing it cannot change another layer) and whose data input is not
a constant. `WeightLayer` says how per-input statistics line up with the weight (`per_input`, `per_connection`),
how to view it as one row per output (`rows`), its bias (`linear_form`) and what relative importance needs of it
(`contrib_spec`). Layers are named by their node's name (unique after `io.graph.name_nodes`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import OnnxPruneError
from ..io.graph import attr, attrs, consumers, graph_outputs, initializer_map, node_by_name, uses
from ..stats import ContribSpec
from .chains import activation_after


@dataclass(frozen=True)
class WeightLayer:
    name: str  # node name
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


def weight_layers(model: onnx.ModelProto) -> list[WeightLayer]:
    """Every prunable weight layer, in graph (topological) order."""
    shapes = {t.name: tuple(int(d) for d in t.dims) for t in model.graph.initializer}
    used = uses(model)
    out = []
    for n in model.graph.node:
        if len(n.input) < 2 or n.input[1] not in shapes or used.get(n.input[1]) != 1 or n.input[0] in shapes:
            continue
        shape = shapes[n.input[1]]
        if n.op_type == "Gemm" and not attr(n, "transA", 0) and len(shape) == 2:
            in_axis = 1 if attr(n, "transB", 0) else 0
            out.append(WeightLayer(n.name, "Gemm", n.input[1], shape, n.input[0], in_axis, 1 - in_axis))
        elif n.op_type == "MatMul" and len(shape) == 2:
            out.append(WeightLayer(n.name, "MatMul", n.input[1], shape, n.input[0], 0, 1))
        elif n.op_type == "Conv" and len(shape) >= 3:
            out.append(WeightLayer(n.name, "Conv", n.input[1], shape, n.input[0], 1, 0, int(attr(n, "group", 1))))
    return out


def weight_layer(model: onnx.ModelProto, name: str) -> WeightLayer:
    """The weight layer of node `name`; an error naming the prunable layers when it is not one."""
    layers = weight_layers(model)
    for L in layers:
        if L.name == name:
            return L
    raise OnnxPruneError(f"'{name}' is not a prunable weight layer (layers: {', '.join(L.name for L in layers)})")


def protected(layers: list[WeightLayer], protect: tuple[str, ...] | list[str]) -> set[str]:
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


def linear_form(model: onnx.ModelProto, L: WeightLayer) -> Linear:
    node = node_by_name(model, L.name)
    inits = initializer_map(model)
    if node.op_type == "Gemm":
        a = attrs(node)
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in inits else None
        return Linear(float(a.get("alpha", 1.0)), float(a.get("beta", 1.0)), bias, True)
    readers = consumers(model).get(node.output[0], [])
    if node.output[0] not in graph_outputs(model) and len(readers) == 1 and readers[0].op_type == "Add":
        other = [i for i in readers[0].input if i != node.output[0]]
        if other and other[0] in inits and inits[other[0]].size in (1, L.shape[L.out_axis]):
            return Linear(1.0, 1.0, other[0], False)
    return Linear(1.0, 1.0, None, False)


def contrib_spec(model: onnx.ModelProto, L: WeightLayer) -> ContribSpec:
    """What relative importance needs of a layer: its weight as (out, in/groups) and bias, and the blind range.

    A Conv connection (i, j) is a whole kernel; its contribution uses Σ|w| over the kernel (the kernel's L1 norm)
    times |x̄_j|, so a zero-sum kernel (edge or Laplacian filter) still counts for the signal it carries."""
    w = initializer_map(model)[L.weight].astype(np.float64)
    lin = linear_form(model, L) if L.op != "Conv" else None
    if L.op == "Conv":
        matrix = np.abs(w).reshape(w.shape[0], w.shape[1], -1).sum(-1)
        node = node_by_name(model, L.name)
        b = initializer_map(model).get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        bias = None if b is None else b.astype(np.float64).reshape(-1)
    else:
        matrix = lin.alpha * L.rows(w)
        bias = None
        if lin.bias is not None:
            b = initializer_map(model)[lin.bias].astype(np.float64).reshape(-1)
            bias = lin.beta * np.broadcast_to(b, (matrix.shape[0],)).copy()
    act = activation_after(model, node_by_name(model, L.name))
    return ContribSpec(L.name, L.op, L.input, matrix, bias, L.groups, L.kind,
                       None if act is None else (act[0], act[2], act[3]))
