"""Physically remove neurons left with no incoming or no outgoing connections (paper 001 §3.3).

Only fully connected chains are handled (`units.neurons.links`):
- no outgoing connection (column j of Q all zero): nothing downstream sees it → drop it.
- no incoming connection (row j of P all zero): it outputs the constant act(b_j); fold W_Q[:, j]·act(b_j) into Q's
  bias first, then drop it (kept in place when Q has no bias to fold into and the constant is non-zero).
Removing neurons can empty other rows / columns, so this runs to a fixed point. Anything else (Conv, unknown ops
in between) keeps its zeros in place, which is still exactly correct.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..io.graph import attrs, set_initializer
from ..units.neurons import constant_outputs, links
from ..units.weights import WeightLayer


def remove(model: onnx.ModelProto, layers: list[WeightLayer]) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """Remove dead hidden neurons in place. Returns, per weight, the kept indices (original numbering) on its
    "out" and/or "in" axis, and notes for the report."""
    ls = links(model, layers)
    names = {x for L in ls for x in (L.producer.weight, L.consumer.weight, L.producer_bias, *L.adds,
                                     L.fold[0] if L.fold else None) if x}
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer if t.name in names}
    dtypes = {t.name: numpy_helper.to_array(t).dtype for t in model.graph.initializer if t.name in names}
    node_attrs = {n.name: attrs(n) for n in model.graph.node}
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
            const = constant_outputs(L, w, node_attrs[P.name], len(wp))
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


