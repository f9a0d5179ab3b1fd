"""Unstructured (weight-level) post-training pruning.

`score` once (criteria are pure functions of weights and statistics) → `select` a keep-mask per weight for a
ratio (cheap, so certification can build a whole grid) → `apply`: zero the masked weights and remove neurons left
without connections → optionally `reconstruct`: re-fit the kept weights by least squares, layer by layer.

The ratio counts the prunable weights (Gemm / MatMul / Conv, see `layers.py`) that are not protected. Zeros shrink
the *compressed* file; onnxruntime runs dense kernels, so they buy no speed.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..rewrite import dead_neurons
from ..criteria import activation_aware, apoz, fscreen, magnitude, relative_importance
from ..io.data import Dataset
from ..errors import OnnxPruneError
from ..units.weights import Layer, linear_form, prunable_layers, protected
from ..io.model import initializer_map, model_hash, set_initializer, size_report, validate
from ..select.plan import Plan, PruneSettings
from ..reconstruct.least_squares import PairedGram, refit_linear
from ..stats import Request, Stats, stream

CRITERIA = ("magnitude", "fscreen", "ri", "wanda", "apoz")
_NEEDS = {"fscreen": "class_moments", "wanda": "moments", "apoz": "zeros", "ri": "contrib"}
SPEED_NOTE = ("zeros shrink the compressed file only: onnxruntime runs dense kernels, so unstructured sparsity "
              "gives no speed-up")


@dataclass
class Scores:
    """Per candidate weight, an importance score of the weight's shape (higher = kept longer)."""

    criterion: str
    values: dict[str, np.ndarray]
    scope: str = "allocation"  # where scores are comparable: "allocation" (as --allocation says), "layer", "row"
    notes: list[str] = field(default_factory=list)


@dataclass
class PruneResult:
    model: onnx.ModelProto
    plan: Plan
    report: dict


def candidates(model: onnx.ModelProto, settings: PruneSettings) -> list[Layer]:
    """Prunable layers minus the protected ones."""
    layers = prunable_layers(model)
    if not layers:
        raise OnnxPruneError("no prunable weights (Gemm, MatMul with a constant weight, Conv) in the model")
    skip = protected(layers, settings.protect)
    return [L for L in layers if L.weight not in skip]


def _check_criterion(settings: PruneSettings) -> None:
    if settings.criterion not in CRITERIA:
        raise OnnxPruneError(f"--criterion {settings.criterion}: choose one of {', '.join(CRITERIA)}")


def requests(model: onnx.ModelProto, settings: PruneSettings) -> list[Request]:
    """The statistics the criterion needs (empty for magnitude); reconstruction streams its own tensors."""
    _check_criterion(settings)
    need = _NEEDS.get(settings.criterion)
    if need is None:
        return []
    out, seen = [], set()
    for L in candidates(model, settings):
        layer = L.name if need == "contrib" else None
        if (L.input, L.kind, layer) not in seen:
            seen.add((L.input, L.kind, layer))
            out.append(Request(L.input, L.kind, frozenset({need}), layer))
    return out


def score(model: onnx.ModelProto, stats: Stats | None, settings: PruneSettings) -> Scores:
    """Scores for every candidate weight; `stats` may be None for magnitude."""
    _check_criterion(settings)
    c = settings.criterion
    layers = candidates(model, settings)
    w = initializer_map(model)
    ws = [w[L.weight] for L in layers]
    if c != "magnitude" and stats is None:
        raise OnnxPruneError(f"criterion '{c}' needs calibration data (--calib)")
    notes: list[str] = []
    if c == "magnitude":
        vals = [magnitude.weight_magnitude(x) for x in ws]
    elif c == "fscreen":
        f = [L.per_input(stats.get(L.input, "f")) for L in layers]
        vals = fscreen.weight_scores(f, ws, settings.alpha)
        notes.append(f"F-screen α={settings.alpha} (labels: {getattr(stats, 'label_mode', '?')})")
    elif c == "wanda":
        vals = [activation_aware.wanda(x, L.per_input(stats.get(L.input, "sqnorm"))) for L, x in zip(layers, ws)]
        notes.append("wanda compares weights within each output row: every row keeps the same fraction, rows of "
                     "removed neurons aside (--allocation does not apply)")
    elif c == "apoz":
        vals = [L.per_input(apoz.activity(stats.get(L.input, "apoz"))) for L in layers]
        notes.append("apoz: weights score 1 − APoZ of their input neuron (whole input neurons go first, ties by |w|),"
                     " compared within each layer (APoZ is not comparable across layers: an input that is not after "
                     "a ReLU-like op has APoZ ≈ 0); every layer loses the same fraction")
    else:
        vals = [L.per_connection(relative_importance.score(_ri(stats, L, "ri_mean"), _ri(stats, L, "ri_std"),
                                                           settings.beta)) for L in layers]
        notes.append(f"relative importance: mean + β·std of |w·x| / Σ|w·x| over samples outside the blind range, "
                     f"β={settings.beta}")
    scope = {"wanda": "row", "apoz": "layer"}.get(c, "allocation")
    return Scores(c, {L.weight: np.asarray(v, np.float64) for L, v in zip(layers, vals)}, scope, notes)


def _ri(stats: Stats, L: Layer, key: str) -> np.ndarray:
    return stats.get(L.name, key) if stats.has(L.name, key) else stats.get(L.input, key)


# ---------------------------------------------------------------------------------------------------- select
def select(model: onnx.ModelProto, scores: Scores, ratio: float, settings: PruneSettings) -> Plan:
    """Keep-masks removing `ratio` of the candidate weights; ties in score are broken by |w|, then position.

    Weights that dead-neuron removal would delete anyway (e.g. the incoming row of a neuron whose outgoing
    connections were all pruned) are counted as pruned and the budget they free is spent on the next-best weights,
    repeated to a fixed point, so the file's sparsity is the requested one."""
    if not 0.0 <= ratio < 1.0:
        raise OnnxPruneError(f"ratio {ratio}: must be in [0, 1)")
    all_layers = prunable_layers(model)
    by_weight = {L.weight: L for L in all_layers}
    forced = {n: np.zeros(s.shape, bool) for n, s in scores.values.items()}
    folded = dict(forced)
    for _ in range(50):
        masks = _select_once(model, scores, forced, ratio, settings, by_weight)
        masks = {n: m | folded[n] for n, m in masks.items()}  # folded entries stay until `apply` folds them
        closed, fold = dead_neurons.closure(model, all_layers, masks)
        lost = {n: masks[n] & ~closed[n] for n in masks}
        if not any((lost[n] & ~forced[n]).any() for n in masks):
            break
        forced = {n: forced[n] | lost[n] for n in masks}
        folded = {n: folded[n] | fold[n] for n in masks}
    masks = {n: masks[n] & ~(lost[n] & ~fold[n]) for n in masks}  # useless weights of removed neurons: zero
    d = settings.to_dict()
    d["ratio"] = float(ratio)
    return Plan("unstructured", model_hash(model), d, masks)


def _select_once(model: onnx.ModelProto, scores: Scores, forced: dict[str, np.ndarray], ratio: float,
                 settings: PruneSettings, by_weight: dict[str, Layer]) -> dict[str, np.ndarray]:
    """One allocation pass; `forced` entries are pruned first (score −inf)."""
    w = initializer_map(model)
    names = list(scores.values)
    layers = [by_weight[n] for n in names]
    svals = [np.where(forced[n], -np.inf, scores.values[n]) for n in names]
    mags = [np.abs(w[n].astype(np.float64)) for n in names]
    caps = [L.size - _min_kept(L.size, settings.min_keep) for L in layers]  # most each layer may lose
    if scores.scope == "row":
        masks = [_select_rows(L, s, m, f, ratio, settings.min_keep)
                 for L, s, m, f in zip(layers, svals, mags, (forced[n] for n in names))]
    elif scores.scope == "layer" or settings.allocation == "uniform":
        masks = [_select_flat([s.ravel()], [m.ravel()], min(cap, round(ratio * L.size)), [cap])[0].reshape(L.shape)
                 for L, s, m, cap in zip(layers, svals, mags, caps)]
    else:
        total = sum(L.size for L in layers)
        flat = _select_flat([s.ravel() for s in svals], [m.ravel() for m in mags], round(ratio * total), caps)
        masks = [f.reshape(L.shape) for f, L in zip(flat, layers)]
    return dict(zip(names, masks))


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


def _select_rows(L: Layer, s: np.ndarray, m: np.ndarray, forced: np.ndarray, ratio: float,
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


# ---------------------------------------------------------------------------------------------------- apply
def masked(model: onnx.ModelProto, plan: Plan) -> onnx.ModelProto:
    """A copy of `model` with every masked weight set to exactly 0 (nothing else changes)."""
    if plan.mode != "unstructured":
        raise OnnxPruneError(f"plan is for {plan.mode} pruning, not unstructured")
    if plan.model_hash != model_hash(model):
        raise OnnxPruneError(f"plan was made for another model (hash {plan.model_hash}, this model is "
                             f"{model_hash(model)})")
    out = copy.deepcopy(model)
    w = initializer_map(out)
    for name, keep in plan.masks.items():
        if name not in w:
            raise OnnxPruneError(f"plan masks weight '{name}', which the model does not have")
        if keep.shape != w[name].shape:
            raise OnnxPruneError(f"plan mask for '{name}' has shape {keep.shape}, weight is {w[name].shape}")
        set_initializer(out, name, np.where(keep, w[name], np.zeros((), w[name].dtype)))
    return out


def apply(model: onnx.ModelProto, plan: Plan) -> onnx.ModelProto:
    """Zero the masked weights, remove dead neurons of FC chains, validate, and check outputs are unchanged."""
    ref = masked(model, plan)
    out = copy.deepcopy(ref)
    dead_neurons.remove(out, prunable_layers(model))
    validate(out)
    if _shapes(out) != _shapes(ref):
        _check_same_outputs(ref, out)
    return out


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    return {t.name: tuple(t.dims) for t in model.graph.initializer}


def _check_same_outputs(ref: onnx.ModelProto, out: onnx.ModelProto) -> None:
    """Removing dead neurons must not change the function: compare on random inputs."""
    from ..io.runtime import input_specs, make_session

    rng = np.random.default_rng(0)
    specs = input_specs(ref)
    if any(d is None for s in specs for d in s.sample_shape) or not all(np.issubdtype(s.dtype, np.floating)
                                                                        for s in specs):
        return
    feed = {s.name: rng.normal(size=(4, *s.sample_shape)).astype(s.dtype) for s in specs}
    a, b = make_session(ref).run(None, feed), make_session(out).run(None, feed)
    for x, y in zip(a, b):
        if not np.allclose(x, y, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(x).max()))):
            raise OnnxPruneError(f"internal error: removing dead neurons changed the outputs "
                                 f"(max diff {float(np.abs(x - y).max()):.3g})")


# ---------------------------------------------------------------------------------------------------- reconstruct
def reconstruct(dense: onnx.ModelProto, pruned: onnx.ModelProto, plan: Plan, data: Dataset,
                settings: PruneSettings) -> onnx.ModelProto:
    """Re-fit the kept weights (and bias) of every FC layer from the first pruned one on, in graph order, so each
    layer is fitted to the dense layer's outputs on the inputs the already re-fitted upstream now produces.
    Conv layers keep their masked weights (noted in the report)."""
    layers = prunable_layers(dense)
    maps, _ = dead_neurons.remove(masked(dense, plan), layers)  # the neuron removal `apply` did → index maps
    work = copy.deepcopy(pruned)
    wd = initializer_map(dense)
    started = False
    for L in layers:
        started = started or L.weight in plan.masks
        if not started:
            continue
        if L.op == "Conv":
            continue
        lin = linear_form(dense, L)
        rows = maps.get(L.weight, {}).get("out", np.arange(L.shape[L.out_axis]))
        cols = maps.get(L.weight, {}).get("in", np.arange(L.shape[L.in_axis]))
        keep = L.rows(plan.masks.get(L.weight, np.ones(L.shape, bool)))[np.ix_(rows, cols)]
        w_eff = lin.alpha * L.rows(wd[L.weight].astype(np.float64))[rows]
        b_eff = None if lin.bias is None else \
            lin.beta * np.broadcast_to(wd[lin.bias].astype(np.float64).reshape(-1), (L.shape[L.out_axis],))[rows]
        gram = PairedGram()
        for xd, xp in zip(stream(dense, data, [L.input], batch_size=settings.batch_size),
                          stream(work, data, [L.input], batch_size=settings.batch_size)):
            gram.update(xp[L.input], xd[L.input])
        fit_bias = lin.in_node and lin.bias is not None and wd[lin.bias].size == L.shape[L.out_axis]
        w_new, b_new = refit_linear(gram, w_eff, b_eff, keep, settings.ridge, fit_bias)
        cur = next(x for x in prunable_layers(work) if x.weight == L.weight)
        set_initializer(work, L.weight, cur.from_rows(w_new / lin.alpha).astype(wd[L.weight].dtype))
        if b_new is not None:  # fitted, or reset to the dense bias (undoing constants folded by neuron removal)
            shape = next(tuple(t.dims) for t in work.graph.initializer if t.name == lin.bias)
            v = b_new / lin.beta
            v = v[:1] if int(np.prod(shape)) == 1 else v
            set_initializer(work, lin.bias, v.reshape(shape).astype(wd[lin.bias].dtype))
    validate(work)
    return work


# ---------------------------------------------------------------------------------------------------- report
def report(dense: onnx.ModelProto, pruned: onnx.ModelProto, plan: Plan, notes: list[str] = ()) -> dict:
    """Per-layer weights / kept / sparsity (non-zeros left in the file, dead neurons counted as pruned), totals
    over the candidates and over all prunable layers, and file sizes raw and zlib-compressed."""
    pw = initializer_map(pruned)
    rows, cand = [], [0, 0]
    total = [0, 0]
    for L in prunable_layers(dense):
        kept = int(np.count_nonzero(pw[L.weight])) if L.weight in pw else 0
        rows.append({"layer": L.name, "weight": L.weight, "op": L.op, "weights": L.size, "kept": kept,
                     "sparsity": 1.0 - kept / L.size, "protected": L.weight not in plan.masks,
                     "shape": list(L.shape), "pruned_shape": list(pw[L.weight].shape) if L.weight in pw else []})
        total[0] += L.size
        total[1] += kept
        if L.weight in plan.masks:
            cand[0] += L.size
            cand[1] += kept
    notes = list(notes)
    if plan.settings.get("reconstruct") and any(r["op"] == "Conv" for r in rows):
        notes.append("reconstruction re-fits Gemm / MatMul layers only; Conv layers keep their masked weights")
    if any(r["op"] == "Conv" for r in rows):
        notes.append("dead-neuron removal covers fully connected chains; Conv channels keep their zeros in place")
    notes.append(SPEED_NOTE)
    return {
        "criterion": plan.settings.get("criterion"), "ratio": plan.settings.get("ratio"), "layers": rows,
        "sparsity": 1.0 - cand[1] / max(cand[0], 1), "sparsity_all_prunable": 1.0 - total[1] / max(total[0], 1),
        "weights": cand[0], "kept": cand[1],
        "size": size_report(dense, pruned),
        "notes": notes,
    }


class _Unstructured:
    name = "unstructured"
    requests = staticmethod(requests)
    score = staticmethod(score)
    select = staticmethod(select)
    reconstruct = staticmethod(reconstruct)
    report = staticmethod(report)

    @staticmethod
    def kept(scores, plan):
        return {name: (int(m.sum()), int(m.size)) for name, m in sorted(plan.masks.items())}

    @staticmethod
    def apply(model, plan, probe=None):
        return apply(model, plan)


UNSTRUCTURED = _Unstructured()
