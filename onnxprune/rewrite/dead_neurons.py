"""Physically remove neurons left with no incoming or no outgoing connections (paper 001 §3.3).

Only fully connected chains are handled: producer P (Gemm / MatMul) → per-feature bias Adds and elementwise
activations → consumer Q (Gemm / MatMul), every tensor in between read by one node and not a graph output. Hidden
neuron j is row j of P and column j of Q.
- no outgoing connection (column j of Q all zero): nothing downstream sees it → drop it.
- no incoming connection (row j of P all zero): it outputs the constant act(b_j); fold W_Q[:, j]·act(b_j) into Q's
  bias first, then drop it (kept in place when Q has no bias to fold into and the constant is non-zero).
Removing neurons can empty other rows / columns, so this runs to a fixed point. Anything else (Conv, unknown ops
in between) keeps its zeros in place, which is still exactly correct.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..units.weights import Layer, linear_form
from ..io.model import set_initializer

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
    producer: Layer
    consumer: Layer
    producer_bias: str | None  # Gemm C of P, per neuron or broadcast
    path: list[onnx.NodeProto]  # bias Adds and activations between P and Q, in order
    adds: list[str]  # per-feature constants of the bias Adds on the path (sliced with the neurons)
    fold: tuple[str, float] | None  # Q's bias initializer and the factor alpha/beta a folded constant gets


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def links(model: onnx.ModelProto, layers: list[Layer]) -> list[Link]:
    """Producer → consumer pairs of FC layers joined only by bias Adds and elementwise activations."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    by_input = {L.input: L for L in layers if L.op in ("Gemm", "MatMul")}
    by_name = {L.name: L for L in layers}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    out = []
    for n in g.node:
        P = by_name.get(n.name or n.output[0])
        if P is None or P.op not in ("Gemm", "MatMul") or P.weight != (n.input[1] if len(n.input) > 1 else None):
            continue
        hidden = P.shape[P.out_axis]
        pbias = n.input[2] if n.op_type == "Gemm" and len(n.input) > 2 and n.input[2] in inits else None
        if n.op_type == "Gemm" and len(n.input) > 2 and n.input[2] and pbias is None:
            continue
        t, path, adds = n.output[0], [], []
        while t not in outputs and len(consumers.get(t, [])) == 1:
            c = consumers[t][0]
            if t in by_input and by_input[t].name == (c.name or c.output[0]):
                Q = by_input[t]
                out.append(Link(P, Q, pbias, path, adds, _fold_target(model, Q)))
                break
            if c.op_type in _ACTIVATIONS and c.input[0] == t:
                path.append(c)
            elif c.op_type == "Add" and len(c.input) == 2:
                other = c.input[1] if c.input[0] == t else c.input[0]
                if other not in inits or int(np.prod(inits[other].dims)) not in (1, hidden):
                    break
                path.append(c)
                adds.append(other)
            else:
                break
            t = c.output[0]
    return out


def _fold_target(model: onnx.ModelProto, Q: Layer) -> tuple[str, float] | None:
    """Where a constant hidden output can be absorbed: Q's bias, scaled by alpha/beta (None without one)."""
    lin = linear_form(model, Q)
    return (lin.bias, lin.alpha / lin.beta) if lin.bias is not None and lin.beta != 0 else None


def _constant_outputs(link: Link, w: dict[str, np.ndarray], pnode_attrs: dict, hidden: int) -> np.ndarray:
    """What each hidden neuron outputs when its incoming row is all zero: the path applied to its bias."""
    x = np.zeros(hidden)
    if link.producer_bias is not None:
        x = x + float(pnode_attrs.get("beta", 1.0)) * np.broadcast_to(w[link.producer_bias].reshape(-1), (hidden,))
    for node in link.path:
        if node.op_type == "Add":
            other = node.input[1] if node.input[1] in w else node.input[0]
            x = x + np.broadcast_to(w[other].reshape(-1), (hidden,))
        else:
            x = _ACTIVATIONS[node.op_type](x, _attrs(node))
    return x


def remove(model: onnx.ModelProto, layers: list[Layer]) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """Remove dead hidden neurons in place. Returns, per weight, the kept indices (original numbering) on its
    "out" and/or "in" axis, and notes for the report."""
    ls = links(model, layers)
    names = {x for L in ls for x in (L.producer.weight, L.consumer.weight, L.producer_bias, *L.adds,
                                     L.fold[0] if L.fold else None) if x}
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer if t.name in names}
    dtypes = {t.name: numpy_helper.to_array(t).dtype for t in model.graph.initializer if t.name in names}
    node_attrs = {(n.name or n.output[0]): _attrs(n) for n in model.graph.node}
    kept = {id(L): np.arange(L.producer.shape[L.producer.out_axis]) for L in ls}
    blocked: set[tuple[int, int]] = set()
    changed = True
    while changed:
        changed = False
        for L in ls:
            P, Q = L.producer, L.consumer
            wp = np.moveaxis(w[P.weight], P.out_axis, 0)  # (hidden, in)
            wq = np.moveaxis(w[Q.weight], Q.in_axis, 0)  # (hidden, out)
            no_in, no_out = ~wp.any(1), ~wq.any(1)
            const = _constant_outputs(L, w, node_attrs[P.name], len(wp))
            fold = no_in & ~no_out & (const != 0)
            if fold.any() and L.fold is None:
                blocked.update((id(L), int(j)) for j in kept[id(L)][fold])
                no_in &= ~fold
                fold[:] = False
            dead = no_in | no_out
            if not dead.any():
                continue
            if fold.any():
                name, factor = L.fold
                delta = factor * (wq[fold] * const[fold, None]).sum(0)
                w[name] = w[name] + delta.reshape(w[name].shape) if w[name].size == delta.size \
                    else np.broadcast_to(w[name].reshape(-1), delta.shape) + delta
            keep = ~dead
            w[P.weight] = np.compress(keep, w[P.weight], axis=P.out_axis)
            w[Q.weight] = np.compress(keep, w[Q.weight], axis=Q.in_axis)
            for b in [L.producer_bias, *L.adds]:
                if b is not None and w[b].size == len(keep):
                    w[b] = w[b].reshape(-1)[keep].reshape(_sliced_shape(w[b].shape, int(keep.sum())))
            kept[id(L)] = kept[id(L)][keep]
            changed = True
    maps: dict[str, dict[str, np.ndarray]] = {}
    for L in ls:
        maps.setdefault(L.producer.weight, {})["out"] = kept[id(L)]
        maps.setdefault(L.consumer.weight, {})["in"] = kept[id(L)]
    for name, value in w.items():
        set_initializer(model, name, value.astype(dtypes[name]))
    notes = []
    if blocked:
        notes.append(f"{len(blocked)} neuron(s) without incoming weights kept: their constant output has no bias "
                     "to fold into")
    return maps, notes


def _sliced_shape(shape: tuple[int, ...], n: int) -> tuple[int, ...]:
    """A per-neuron vector's shape ((F,), (1, F), …) with its neuron axis cut to n."""
    s = list(shape)
    s[int(np.argmax(s))] = n
    return tuple(s)


def closure(model: onnx.ModelProto, layers: list[Layer], masks: dict[str, np.ndarray]
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
    node_attrs = {(n.name or n.output[0]): _attrs(n) for n in model.graph.node}
    for L in ls:
        for x in (L.producer, L.consumer):
            out.setdefault(x.weight, np.ones(x.shape, bool))
            folded.setdefault(x.weight, np.zeros(x.shape, bool))
    keepable = {id(L): (L.fold is not None) | (_constant_outputs(L, w, node_attrs[L.producer.name],
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
