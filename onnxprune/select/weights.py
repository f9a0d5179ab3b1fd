"""Weight selection: keep-masks removing a ratio of the candidate weights (unstructured pruning).

Scores are compared where they are comparable (`scope`): over all candidates (global allocation), within each
layer (uniform, or criteria such as APoZ whose values differ in scale across layers), or within each output row
(Wanda). Ties in score go by |w|, then position, so the result is deterministic. Weights that dead-neuron removal
would delete anyway are counted as pruned and the budget they free is spent on the next-best weights, so the
written model has exactly the requested sparsity.

Every layer keeps a floor (`--min-keep`, a fraction of its weights) so that none is emptied. The floor is a safety
net, not an allocation: at 98 % sparsity, 2 % of every layer *is* the whole budget, and the selection collapsed to
"every layer keeps 2 %" — LeNet-300-100's 10-way output layer cut from 1,000 to 20 weights, 43 % accuracy, while the
scores themselves keep ~60 % of it (paper 001, Table 2, keeps 22 %; its Algorithm 1 takes per-layer ratios as
input and states no floor rule). So a layer's floor is at most `FLOOR_SHARE` of the density the network keeps,
(1 − ratio): the floors together take at most that share of the budget and the scores allocate the rest. With
2/3, the default 2 % floor is unchanged up to 97 % sparsity (2 % = 2/3 · 3 %) and only yields beyond it.
"""
from __future__ import annotations

import numpy as np
import onnx

from ..errors import OnnxPruneError
from ..io.graph import initializer_map
from ..io.model import model_hash
from ..units.neurons import closure
from ..units.weights import WeightLayer, weight_layers
from .plan import Plan, PruneSettings

FLOOR_SHARE = 2 / 3  # most of the kept budget the per-layer floors may claim (module docstring)


def select_weights(model: onnx.ModelProto, values: dict[str, np.ndarray], scope: str, ratio: float,
                   settings: PruneSettings) -> Plan:
    """Keep-masks removing `ratio` of the candidate weights; ties in score are broken by |w|, then position.

    Weights that dead-neuron removal would delete anyway (e.g. the incoming row of a neuron whose outgoing
    connections were all pruned) are counted as pruned and the budget they free is spent on the next-best weights,
    repeated to a fixed point, so the file's sparsity is the requested one."""
    if not 0.0 <= ratio < 1.0:
        raise OnnxPruneError(f"ratio {ratio}: must be in [0, 1)")
    all_layers = weight_layers(model)
    by_weight = {L.weight: L for L in all_layers}
    forced = {n: np.zeros(s.shape, bool) for n, s in values.items()}
    folded = dict(forced)
    for _ in range(50):
        masks = _select_once(model, values, scope, forced, ratio, settings, by_weight)
        masks = {n: m | folded[n] for n, m in masks.items()}  # folded entries stay until `apply` folds them
        closed, fold = closure(model, all_layers, masks)
        lost = {n: masks[n] & ~closed[n] for n in masks}
        if not any((lost[n] & ~forced[n]).any() for n in masks):
            break
        forced = {n: forced[n] | lost[n] for n in masks}
        folded = {n: folded[n] | fold[n] for n in masks}
    masks = {n: masks[n] & ~(lost[n] & ~fold[n]) for n in masks}  # useless weights of removed neurons: zero
    d = settings.to_dict()
    d["ratio"] = float(ratio)
    return Plan("unstructured", model_hash(model), d, masks)


def _select_once(model: onnx.ModelProto, values: dict[str, np.ndarray], scope: str, forced: dict[str, np.ndarray],
                 ratio: float, settings: PruneSettings, by_weight: dict[str, WeightLayer]) -> dict[str, np.ndarray]:
    """One allocation pass; `forced` entries are pruned first (score −inf)."""
    w = initializer_map(model)
    names = list(values)
    layers = [by_weight[n] for n in names]
    svals = [np.where(forced[n], -np.inf, values[n]) for n in names]
    mags = [np.abs(w[n].astype(np.float64)) for n in names]
    min_keep = floor_fraction(ratio, settings.min_keep)
    caps = [L.size - _min_kept(L.size, min_keep) for L in layers]  # most each layer may lose
    if scope == "row":
        masks = [_select_rows(L, s, m, f, ratio, min_keep)
                 for L, s, m, f in zip(layers, svals, mags, (forced[n] for n in names))]
    elif scope == "layer" or settings.allocation == "uniform":
        masks = [_select_flat([s.ravel()], [m.ravel()], min(cap, round(ratio * L.size)), [cap])[0].reshape(L.shape)
                 for L, s, m, cap in zip(layers, svals, mags, caps)]
    else:
        total = sum(L.size for L in layers)
        flat = _select_flat([s.ravel() for s in svals], [m.ravel() for m in mags], round(ratio * total), caps)
        masks = [f.reshape(L.shape) for f, L in zip(flat, layers)]
    return dict(zip(names, masks))


def floor_fraction(ratio: float, min_keep: float) -> float:
    """The fraction of each layer kept regardless of scores: `min_keep`, but never more than `FLOOR_SHARE` of the
    kept density 1 − ratio, so the floors cannot use up the budget at extreme sparsity."""
    return min(min_keep, FLOOR_SHARE * (1.0 - ratio))


def _min_kept(size: int, min_keep: float) -> int:
    return min(size, max(1, int(np.ceil(min_keep * size))))


def _select_flat(scores: list[np.ndarray], mags: list[np.ndarray], k: int, caps: list[int]) -> list[np.ndarray]:
    """Prune the k lowest (score, |w|) entries over all arrays, at most caps[i] from array i."""
    s, m = np.concatenate(scores), np.concatenate(mags)
    lid = np.concatenate([np.full(len(a), i) for i, a in enumerate(scores)])
    order = np.lexsort((m, s))
    allowed = np.zeros(len(order), bool)
    lo = lid[order]
    for i, cap in enumerate(caps):
        allowed[np.flatnonzero(lo == i)[:cap]] = True
    keep = np.ones(len(s), bool)
    keep[order[np.flatnonzero(allowed)[:k]]] = False
    return np.split(keep, np.cumsum([len(a) for a in scores])[:-1])


def _select_rows(L: WeightLayer, s: np.ndarray, m: np.ndarray, forced: np.ndarray, ratio: float,
                 min_keep: float) -> np.ndarray:
    """Every output row loses the same number of its lowest-scored weights. Forced entries go regardless, and
    the layer budget they use up is taken off the other rows in proportion to their free entries."""
    rs, rm, rf = L.rows(s), L.rows(m), L.rows(forced)
    n = rs.shape[1]
    per_row = min(round(ratio * n), n - _min_kept(n, min_keep))
    free = n - rf.sum(1)
    budget = max(0, per_row * len(rs) - int(rf.sum()))
    k = _largest_remainder(budget, free) if free.sum() else np.zeros(len(rs), int)
    k = np.minimum(k, np.maximum(free - 1, 0))
    order = np.lexsort((rm, rs), axis=-1)  # forced (−inf) entries first in each row
    keep = np.ones(rs.shape, bool)
    pos = np.arange(n)[None, :] < (rf.sum(1) + k)[:, None]
    np.put_along_axis(keep, order, ~pos, axis=1)
    return L.from_rows(keep)


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to `weights` summing to `total` (Hamilton's method)."""
    q = total * weights / weights.sum()
    k = np.floor(q).astype(int)
    k[np.argsort(-(q - k), kind="stable")[:total - int(k.sum())]] += 1
    return k
