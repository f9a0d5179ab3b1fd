"""Neurons of fully connected chains: which hidden neuron of a layer feeds which column of the next (paper 001 §3.3).

A link is producer P (Gemm / MatMul) → per-feature bias Adds and elementwise activations → consumer Q (Gemm /
MatMul), every tensor in between read by one node and not a graph output (the chain `units.chains.follow` walks).
Hidden neuron j is row j of P and column j of Q. A neuron with no outgoing connection is dead; one with no incoming
connection outputs the constant act(b_j), which can be folded into Q's bias. `closure` computes on masks alone
what removing such neurons leaves (selection uses it to spend the freed budget); `rewrite.dead_neurons.remove`
does the removal.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..io.graph import attrs, initializer_map
from .chains import follow
from .weights import WeightLayer, linear_form

_ACTIVATIONS = {
    "Relu": lambda x, a: np.maximum(x, 0.0),
    "LeakyRelu": lambda x, a: np.where(x >= 0, x, a.get("alpha", 0.01) * x),
    "Sigmoid": lambda x, a: 1.0 / (1.0 + np.exp(-x)),
    "Tanh": lambda x, a: np.tanh(x),
    "Elu": lambda x, a: np.where(x >= 0, x, a.get("alpha", 1.0) * (np.exp(x) - 1.0)),
    "Identity": lambda x, a: x,
}


@dataclass
class Link:
    producer: WeightLayer
    consumer: WeightLayer
    producer_bias: str | None  # Gemm C of P, per neuron or broadcast
    path: list[onnx.NodeProto]  # bias Adds and activations between P and Q, in order
    adds: list[str]  # per-feature constants of the bias Adds on the path (sliced with the neurons)
    fold: tuple[str, float] | None  # Q's bias initializer and the factor alpha/beta a folded constant gets


def links(model: onnx.ModelProto, layers: list[WeightLayer]) -> list[Link]:
    """Producer → consumer pairs of FC layers joined only by bias Adds and elementwise activations."""
    inits = initializer_map(model)
    by_input = {L.input: L for L in layers if L.op in ("Gemm", "MatMul")}
    by_name = {L.name: L for L in layers}
    out = []
    for n in model.graph.node:
        P = by_name.get(n.name)
        if P is None or P.op not in ("Gemm", "MatMul") or P.weight != (n.input[1] if len(n.input) > 1 else None):
            continue
        hidden = P.shape[P.out_axis]
        pbias = n.input[2] if n.op_type == "Gemm" and len(n.input) > 2 and n.input[2] in inits else None
        if n.op_type == "Gemm" and len(n.input) > 2 and n.input[2] and pbias is None:
            continue
        path, stop = follow(model, n.output[0], _per_neuron(inits, hidden))
        t = path[-1].output[0] if path else n.output[0]
        Q = by_input.get(t)
        if stop is not None and Q is not None and Q.name == stop.name:
            out.append(Link(P, Q, pbias, path, _bias_constants(n, path), _fold_target(model, Q)))
    return out


def _bias_constants(producer: onnx.NodeProto, path: list[onnx.NodeProto]) -> list[str]:
    """The constant operand of every bias Add on the path (the other operand carries the neurons)."""
    adds, cur = [], producer.output[0]
    for c in path:
        if c.op_type == "Add":
            adds.append(c.input[1] if c.input[0] == cur else c.input[0])
        cur = c.output[0]
    return adds


def _per_neuron(inits: dict[str, np.ndarray], hidden: int):
    """Steps that keep hidden neurons one-to-one: an elementwise activation, or an Add of a per-neuron constant."""
    def step(c: onnx.NodeProto, t: str) -> bool:
        if c.op_type in _ACTIVATIONS:
            return c.input[0] == t
        if c.op_type == "Add" and len(c.input) == 2:
            other = c.input[1] if c.input[0] == t else c.input[0]
            return other in inits and inits[other].size in (1, hidden)
        return False
    return step


def _fold_target(model: onnx.ModelProto, Q: WeightLayer) -> tuple[str, float] | None:
    """Where a constant hidden output can be absorbed: Q's bias, scaled by alpha/beta (None without one)."""
    lin = linear_form(model, Q)
    return (lin.bias, lin.alpha / lin.beta) if lin.bias is not None and lin.beta != 0 else None


def constant_outputs(link: Link, w: dict[str, np.ndarray], pnode_attrs: dict, hidden: int) -> np.ndarray:
    """What each hidden neuron outputs when its incoming row is all zero: the path applied to its bias."""
    x = np.zeros(hidden)
    if link.producer_bias is not None:
        x = x + float(pnode_attrs.get("beta", 1.0)) * np.broadcast_to(w[link.producer_bias].reshape(-1), (hidden,))
    for node in link.path:
        if node.op_type == "Add":
            other = node.input[1] if node.input[1] in w else node.input[0]
            x = x + np.broadcast_to(w[other].reshape(-1), (hidden,))
        else:
            x = _ACTIVATIONS[node.op_type](x, attrs(node))
    return x


def closure(model: onnx.ModelProto, layers: list[WeightLayer], masks: dict[str, np.ndarray]
            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """What `remove` will leave of these keep-masks, computed on masks alone (cheap, for selection).

    Returns (closed, folded): `closed` is the masks with every entry of a removed neuron's row and column False;
    `folded` marks the entries that vanish by folding (outgoing weights of a neuron without incoming ones, whose
    constant output moves into the next bias) — those must stay in the model until `remove` folds them, unlike the
    other vanished entries, which are useless and may simply be zeroed. Constants are judged from the dense
    biases: a neuron without incoming weights counts as removable when its link can fold or its constant is 0."""
    ls = links(model, layers)
    out = {k: np.array(v, bool) for k, v in masks.items()}
    folded = {k: np.zeros(np.shape(v), bool) for k, v in masks.items()}
    if not ls:
        return out, folded
    names = {x for L in ls for x in (L.producer_bias, *L.adds) if x}
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer if t.name in names}
    node_attrs = {n.name: attrs(n) for n in model.graph.node}
    for L in ls:
        for x in (L.producer, L.consumer):
            out.setdefault(x.weight, np.ones(x.shape, bool))
            folded.setdefault(x.weight, np.zeros(x.shape, bool))
    keepable = {id(L): (L.fold is not None) | (constant_outputs(L, w, node_attrs[L.producer.name],
                                                                 L.producer.shape[L.producer.out_axis]) == 0)
                for L in ls}
    changed = True
    while changed:
        changed = False
        for L in ls:
            P, Q = L.producer, L.consumer
            mp = np.moveaxis(out[P.weight], P.out_axis, 0)  # views: writes land in out[...]
            mq = np.moveaxis(out[Q.weight], Q.in_axis, 0)
            fq = np.moveaxis(folded[Q.weight], Q.in_axis, 0)
            has_in, has_out = mp.reshape(len(mp), -1).any(1), mq.reshape(len(mq), -1).any(1)
            dead = ~has_out | (~has_in & keepable[id(L)])
            if (dead & (has_in | has_out)).any():
                fold = dead & ~has_in & has_out
                fq[fold] |= mq[fold]
                mp[dead] = False
                mq[dead] = False
                changed = True
    return out, folded
