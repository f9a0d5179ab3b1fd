"""Structured (channel) pruning: coupled channel groups → channel scores → kept channels → physical removal.

The same five steps as `unstructured.py`: `requests` (which statistics), `score` (once per statistics pass),
`select` (cheap, per ratio), `apply` (rewrite), `reconstruct` (optional least-squares re-fit); `prune` chains them.

Group-level aggregation (one place, documented here): a group is a set of channels removed together (e.g. every
conv feeding one residual chain). Its channel score aggregates over the group's members by the **mean**:
the mean |γ| over its BatchNorms (or, without BN, the mean L1 norm of its producing filters), the mean F over the
tensors its consumers read, the mean activity (1 − APoZ) over those tensors. The mean keeps a group that spans
many layers comparable with a single-layer group.

Global selection compares channels of different groups, so magnitudes must share a scale. BN γ already do (BN
normalises the activations; network slimming ranks raw γ globally). Filter norms do not (they grow with fan-in and
differ per layer), so a group without BN gets its filter L1 norms divided by the group's mean norm and, when the
model also has BN groups, multiplied by the median |γ| of all BN channels. The explicit `l1` / `l2` criteria use
the per-group mean normalisation for every group (as Torch-Pruning's global pruning does).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import onnx

from ..criteria import apoz as apoz_crit
from ..criteria import fscreen
from ..criteria import relative_importance as ri_crit
from ..io.data import Dataset
from ..errors import OnnxPruneError
from ..units.rules import attr
from ..units.groups import ChannelGroup, _channel_vector, analyse, bn_scales, node_names, producer_l1
from ..rewrite.channels import remove_channels
from ..io.model import initializer_map, model_hash
from ..select.plan import Plan, PruneSettings
from ..stats import Request, Stats

CRITERIA = ("fscreen", "bn", "l1", "l2", "apoz", "ri")
STATS_FOR = {"fscreen": "class_moments", "apoz": "zeros"}


@dataclass
class Scores:
    """Per prunable group: one score per channel (higher = keep), plus the groups left alone and why."""

    criterion: str
    groups: list[ChannelGroup]
    channel_scores: dict[str, np.ndarray]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (group id, reason)
    label_mode: str | None = None


def candidate_groups(model: onnx.ModelProto, settings: PruneSettings) -> tuple[list[ChannelGroup], list[tuple[str, str]]]:
    """Prunable groups after `--protect`; the rest with the reason they are left alone."""
    groups = analyse(model)
    protected = _protected_nodes(model, settings.protect)
    keep, skipped = [], []
    for g in groups:
        if not g.prunable:
            skipped.append((g.id, g.reason or "not prunable"))
        elif protected & ({m.node for m in g.members} | set(g.producers)):
            skipped.append((g.id, "protected by --protect"))
        else:
            keep.append(g)
    return keep, skipped


def _protected_nodes(model: onnx.ModelProto, protect: tuple[str, ...]) -> set[str]:
    """`first` / `last` name the first / last weighted layer; other names match node or initializer names."""
    names = node_names(model)
    weighted = [nm for nm, n in zip(names, model.graph.node) if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")]
    out: set[str] = set()
    for p in protect:
        if p == "first" and weighted:
            out.add(weighted[0])
        elif p == "last" and weighted:
            out.add(weighted[-1])
        else:
            hits = {nm for nm, n in zip(names, model.graph.node) if nm == p or p in n.input}
            if not hits:
                raise OnnxPruneError(f"--protect {p}: no node or weight of that name")
            out |= hits
    return out


def requests(model: onnx.ModelProto, settings: PruneSettings) -> list[Request]:
    """Channel statistics of the tensors consumers read (after BN and activation), for the chosen criterion."""
    if settings.criterion not in CRITERIA:
        raise OnnxPruneError(f"--criterion {settings.criterion}: structured mode supports {', '.join(CRITERIA)}")
    groups, _ = candidate_groups(model, settings)
    if settings.criterion in STATS_FOR:
        kind = frozenset({STATS_FOR[settings.criterion]})
        tensors = sorted({t for g in groups for t in g.activations})
        return [Request(t, "channels", kind) for t in tensors]
    if settings.criterion == "ri":
        nodes = dict(zip(node_names(model), model.graph.node))
        reqs = {}
        for g in groups:
            for m in g.members:
                if m.role == "consumer" and m.node in nodes:
                    node = nodes[m.node]
                    kind = "channels" if node.op_type == "Conv" else "features"
                    reqs[m.node] = Request(node.input[0], kind, frozenset({"contrib"}), layer=m.node)
        return list(reqs.values())
    return []


def score(model: onnx.ModelProto, stats: Stats | None, settings: PruneSettings) -> Scores:
    groups, skipped = candidate_groups(model, settings)
    if not groups:
        raise OnnxPruneError("no prunable channel groups in this model" +
                             (f" ({skipped[0][0]}: {skipped[0][1]})" if skipped else ""))
    crit = settings.criterion
    mag = _comparable_magnitudes(model, groups, p=2 if crit == "l2" else 1, prefer_bn=crit not in ("l1", "l2"))
    if crit in ("bn", "l1", "l2"):
        per = mag
    elif crit == "fscreen":
        f = [_mean_over(stats, g, "f") for g in groups]
        per = fscreen.channel_scores(f, mag, settings.alpha)
    elif crit == "apoz":
        per = [apoz_crit.channel_scores(_mean_over(stats, g, "apoz")) for g in groups]
    else:  # ri
        per = [_ri_channel(g, stats, settings.beta) for g in groups]
    return Scores(crit, groups, {g.id: np.asarray(s, np.float64) for g, s in zip(groups, per)}, skipped,
                  None if stats is None else stats.label_mode)


def _comparable_magnitudes(model: onnx.ModelProto, groups: list[ChannelGroup], p: int, prefer_bn: bool
                           ) -> list[np.ndarray]:
    """Per group, channel magnitudes on one scale across groups (see the module docstring)."""
    gammas = [bn_scales(model, g) if prefer_bn else [] for g in groups]
    bn = {i: np.nanmean(np.abs(np.stack(gs)), axis=0) for i, gs in enumerate(gammas) if gs}
    scale = float(np.median(np.concatenate(list(bn.values())))) if bn else 1.0
    out = []
    for i, g in enumerate(groups):
        if i in bn:
            out.append(bn[i])
            continue
        norms = _filter_norms(model, g, p)
        out.append(norms / max(float(norms.mean()), 1e-12) * scale)
    return out


def _filter_norms(model: onnx.ModelProto, g: ChannelGroup, p: int) -> np.ndarray:
    """The producing filters' L_p norm per channel, averaged over the group's producers."""
    n_prod = max(1, len(g.producers))
    if p == 1:
        return producer_l1(model, g) / n_prod
    w = initializer_map(model)
    norms = [np.nan_to_num(_channel_vector(w[m.tensor], m, g.size, lambda v: float(np.sqrt((v * v).sum()))))
             for m in g.members if m.role == "producer" and w[m.tensor].ndim >= 2]
    return np.mean(norms, axis=0) if norms else np.ones(g.size)


def _mean_over(stats: Stats | None, g: ChannelGroup, key: str) -> np.ndarray:
    """Mean of a per-channel statistic over the tensors the group's consumers read (Concat offsets applied)."""
    if stats is None:
        raise OnnxPruneError("this criterion needs calibration data (--calib)")
    offsets = g.activation_offsets or [0] * len(g.activations)
    vals = [stats.get(t, key)[off:off + g.size] for t, off in zip(g.activations, offsets) if stats.has(t, key)]
    vals = [v for v in vals if v.shape == (g.size,)]
    if not vals:
        raise OnnxPruneError(f"statistics '{key}' missing for group {g.id}")
    return np.mean(vals, axis=0)


def _ri_channel(g: ChannelGroup, stats: Stats | None, beta: float) -> np.ndarray:
    """Mean relative-importance score of each channel's outgoing connections, over the group's consumers."""
    if stats is None:
        raise OnnxPruneError("this criterion needs calibration data (--calib)")
    per = []
    for m in g.members:
        mean, std = _layer_stat(stats, m.node, "ri_mean"), _layer_stat(stats, m.node, "ri_std")
        if m.role != "consumer" or mean is None:
            continue
        s = ri_crit.score(mean, std, beta)  # (out, in) whatever the weight layout: the input axis is 1
        per.append(np.nan_to_num(_channel_vector(s, replace(m, axis=1), g.size, lambda v: float(v.mean()))))
    return np.mean(per, axis=0) if per else np.ones(g.size)


def _layer_stat(stats: Stats, layer: str, key: str) -> np.ndarray | None:
    return stats.get(layer, key) if stats.has(layer, key) else None


def select(model: onnx.ModelProto, scores: Scores, ratio: float, settings: PruneSettings) -> Plan:
    """Kept channels per group so that about `ratio` of all prunable channels go.

    Global allocation picks one score threshold across groups (the paper's one-shot global pruning); kept counts
    respect the minimum (`--min-channels`, `--min-keep`) and are rounded up to multiples of `--round-to` so
    onnxruntime keeps its blocked fast kernels; the threshold is chosen so that the total after rounding lands
    as close to the target as possible. Uniform allocation removes the same fraction from every group.
    """
    groups = scores.groups
    sizes = np.array([g.size for g in groups])
    floor = np.minimum(sizes, np.maximum(settings.min_channels, np.ceil(settings.min_keep * sizes).astype(int)))
    target_removed = ratio * sizes.sum()

    def rounded(k: np.ndarray) -> np.ndarray:
        return rounded_all(k, floor, sizes, settings.round_to)

    if settings.allocation == "uniform":
        keep = rounded(np.ceil((1.0 - ratio) * sizes).astype(int))
    elif ratio == 0:
        keep = sizes.copy()
    else:
        # one global order of all channels (score, then group, then index: deterministic under ties); keeping the
        # top p channels gives per-group counts = cumulative membership counts at p; pick the p whose removed
        # total after rounding is closest to the target
        all_scores = np.concatenate([scores.channel_scores[g.id] for g in groups])
        owner = np.repeat(np.arange(len(groups)), sizes)
        order = np.lexsort((np.arange(len(all_scores)), -all_scores))
        member = np.zeros((len(groups), len(order) + 1), dtype=np.int64)
        member[owner[order], np.arange(1, len(order) + 1)] = 1
        kept = member.cumsum(1)  # kept[g, p]: channels of group g among the global top p
        removed = (sizes[:, None] - rounded_all(kept, floor, sizes, settings.round_to)).sum(0)
        best = int(np.argmin(np.abs(removed - target_removed)))
        keep = rounded(kept[:, best])
    channels = {}
    for g, k in zip(groups, keep):
        if k < g.size:
            s = scores.channel_scores[g.id]
            order = np.lexsort((np.arange(g.size), -s))  # highest score first, ties by index: deterministic
            chosen = set(int(i) for i in order[:k])
            for m in g.members:  # a tensor that sees only channels [lo, hi) must keep at least one of them
                hi = g.size if m.hi < 0 else m.hi
                if (m.lo, hi) != (0, g.size) and not any(m.lo <= c < hi for c in chosen):
                    chosen.add(int(m.lo + np.argmax(s[m.lo:hi])))
            channels[g.id] = sorted(chosen)
    return Plan("structured", model_hash(model), {**settings.to_dict(), "ratio": ratio}, channels=channels)


def rounded_all(k: np.ndarray, floor: np.ndarray, sizes: np.ndarray, round_to: int) -> np.ndarray:
    """Kept counts raised to the per-group floor, rounded up to multiples of `round_to`, capped at the group size.

    Works on (groups,) or (groups, candidates) arrays."""
    f = floor.reshape(-1, *([1] * (k.ndim - 1)))
    z = sizes.reshape(-1, *([1] * (k.ndim - 1)))
    return np.minimum(z, np.ceil(np.maximum(k, f) / round_to).astype(int) * round_to)


def apply(model: onnx.ModelProto, plan: Plan) -> onnx.ModelProto:
    """Physically remove the channels the plan drops; the result is validated (checker, shapes, onnxruntime)."""
    if plan.mode != "structured":
        raise OnnxPruneError(f"plan is {plan.mode}, not structured")
    return remove_channels(model, {k: np.asarray(v) for k, v in plan.channels.items()})


def report(dense: onnx.ModelProto, pruned: onnx.ModelProto, plan: Plan, notes: list[str] = ()) -> dict:
    """Per channel group: channels and kept; totals; parameter, MAC and file-size changes (same keys as the
    unstructured report, with channels as the unit)."""
    from ..units.count import count
    from ..io.model import size_report

    groups = {g.id: g for g in analyse(dense) if g.prunable}
    rows = [{"layer": gid, "weight": gid, "op": "channels", "weights": g.size,
             "kept": len(plan.channels.get(gid, range(g.size))),
             "sparsity": 1.0 - len(plan.channels.get(gid, range(g.size))) / g.size, "protected": False,
             "shape": [g.size], "pruned_shape": [len(plan.channels.get(gid, range(g.size)))]}
            for gid, g in groups.items()]
    total, kept = sum(r["weights"] for r in rows), sum(r["kept"] for r in rows)
    c0, c1 = count(dense), count(pruned)
    skipped = [g.reason if g.reason == g.id else f"{g.id}: {g.reason}" for g in analyse(dense) if not g.prunable]
    return {
        "criterion": plan.settings.get("criterion"), "ratio": plan.settings.get("ratio"), "unit": "channels",
        "layers": rows, "sparsity": 1.0 - kept / max(total, 1), "weights": total, "kept": kept,
        "params": {"dense": c0.params, "pruned": c1.params}, "macs": {"dense": c0.macs, "pruned": c1.macs},
        "size": size_report(dense, pruned),
        "notes": list(notes) + [f"left alone: {s}" for s in skipped],
    }


def kept_fraction(scores: Scores, plan: Plan) -> dict[str, tuple[int, int]]:
    """Group id → (kept, total) channels, for reports."""
    return {g.id: (len(plan.channels.get(g.id, range(g.size))), g.size) for g in scores.groups}


# ---------------------------------------------------------------- reconstruction
RECON_SAMPLES = 2048  # calibration images for the re-fit; ResNet-20, BN-γ at 50 %: 512 → 53 %, 2048 → 57 %, 5000 → 58 %
RECON_ROWS_PER_UNKNOWN = 8  # conv layers: sample about this many patch rows per fitted weight of a filter
RECON_POSITIONS = (4, 32)  # ... using between 4 and 32 output positions per image
RECON_BATCH = 64  # the dense pass holds every target layer's full output for one batch


def reconstruct(dense: onnx.ModelProto, pruned: onnx.ModelProto, plan: Plan, data: Dataset,
                settings: PruneSettings) -> onnx.ModelProto:
    """Ridge re-fit of every layer that lost input channels, in graph order, against the dense layer's outputs.

    Layer by layer, the pruned model (already re-fitted upstream) supplies the inputs X̃ and the dense model the
    targets T (the layer's full output, bias included); the kept weights and a bias solve
    (X̃ᵀX̃ + λI) W = X̃ᵀT (`reconstruct.ridge_refit`). Conv inputs are unfolded into patches (im2col) at a seeded
    sample of output positions. Grouped convs and auto_pad convs are left as they are.
    """
    from ..io.model import set_initializer, validate
    from ..reconstruct.least_squares import ridge_refit
    from ..stats import stream

    dropped = set(plan.channels)
    groups = {g.id: g for g in analyse(dense)}
    targets = {m.node for gid in dropped for m in groups[gid].members if m.role == "consumer"}
    dense, model = _named_copy(dense), _named_copy(pruned)  # analyse's names, fixed before any node is inserted
    order = [n.name for n in dense.graph.node if n.name in targets and _refittable(n)]
    if not order:
        return validate(model)
    sub = data.subset(np.unique(np.linspace(0, len(data) - 1, min(RECON_SAMPLES, len(data))).astype(int)))
    rng = np.random.default_rng(settings.seed)
    nodes_d = {name: _node(dense, name) for name in order}
    # one dense pass: every layer's targets at its sampled output positions (kept output channels only)
    positions: dict[str, np.ndarray | None] = {}
    wanted: dict[str, list[np.ndarray]] = {name: [] for name in order}
    outs = [nodes_d[name].output[0] for name in order]
    inits = initializer_map(model)
    unknowns = {name: int(np.prod(inits[_node(model, name).input[1]].shape[1:])) + 1 for name in order}
    batch = min(RECON_BATCH, settings.batch_size)
    for yb in stream(dense, sub, outs, batch_size=batch):
        for name in order:
            y = yb[nodes_d[name].output[0]]
            out_keep = _kept_outputs(groups, plan, name)
            if out_keep is not None:  # this layer's own output channels were pruned too: fit only the kept ones
                y = np.take(y, out_keep, axis=1 if y.ndim == 4 else -1)
            if name not in positions:
                positions[name] = _sample_positions(y, rng, unknowns[name], len(sub))
            wanted[name].append(_rows(y, positions[name]))
    # layer by layer, inputs from the pruned model as re-fitted so far
    for name in order:
        node_p = _node(model, name)
        w = initializer_map(model)[node_p.input[1]]
        h = c = None
        tt = 0.0
        for xb, t in zip(stream(model, sub, [node_p.input[0]], batch_size=batch), wanted[name]):
            x = _design(node_p, w, xb[node_p.input[0]], positions[name])
            x = np.hstack([x, np.ones((len(x), 1), np.float32)])
            hb, cb = (x.T @ x).astype(np.float64), (x.T @ t).astype(np.float64)  # float32 BLAS, float64 sums
            h, c = (hb, cb) if h is None else (h + hb, c + cb)
            tt = tt + np.square(t, dtype=np.float64).sum(0)
        wb = ridge_refit(h, c, np.ones((c.shape[1], c.shape[0]), bool), settings.ridge)
        wb = _repair_variance(wb, h, c, tt)
        _write_back(model, node_p, w, wb, set_initializer)
    return validate(model)


def _repair_variance(wb: np.ndarray, h: np.ndarray, c: np.ndarray, tt: np.ndarray) -> np.ndarray:
    """Rescale each fitted output so its variance over the fit rows equals the dense target's (mean kept).

    Least squares shrinks: the fitted outputs have variance R²·var(target). Downstream BN and activations expect
    the dense spread, so each output channel j is scaled by std(t_j)/std(ŷ_j) about its mean (REPAIR-style
    statistic repair). All moments come from the accumulated sums: Σ[x 1] is h's last row, Σt is c's last row."""
    n = h[-1, -1]
    mean_p = (wb @ h[-1]) / n
    var_p = np.einsum("ji,ik,jk->j", wb, h, wb) / n - mean_p ** 2
    mean_t = c[-1] / n
    var_t = tt / n - mean_t ** 2
    ok = (var_p > 0) & (var_t > 0)
    scale = np.where(ok, np.sqrt(np.where(ok, var_t, 1.0) / np.where(ok, var_p, 1.0)), 1.0)
    out = wb * scale[:, None]
    out[:, -1] = mean_t - scale * (mean_p - wb[:, -1])
    return out


def _sample_positions(y: np.ndarray, rng: np.random.Generator, unknowns: int, n: int) -> np.ndarray | None:
    """Flat output positions sampled once per conv layer (None for 2-D Gemm/MatMul outputs).

    Enough rows for a well-posed fit (about RECON_ROWS_PER_UNKNOWN per unknown) without paying for more."""
    if y.ndim != 4:
        return None
    hw = y.shape[2] * y.shape[3]
    lo, hi = RECON_POSITIONS
    p = int(np.clip(np.ceil(RECON_ROWS_PER_UNKNOWN * unknowns / n), lo, hi))
    return np.sort(rng.choice(hw, size=min(p, hw), replace=False))


def _rows(y: np.ndarray, pos: np.ndarray | None) -> np.ndarray:
    """Targets as rows: (N·P, C) at the sampled positions for conv maps, (N, F) otherwise."""
    if pos is None:
        return y.reshape(-1, y.shape[-1]).astype(np.float32)
    n, c = y.shape[:2]
    return y.reshape(n, c, -1)[:, :, pos].transpose(0, 2, 1).reshape(-1, c).astype(np.float32)


def _kept_outputs(groups: dict[str, ChannelGroup], plan: Plan, node: str) -> np.ndarray | None:
    """Dense indices of the output channels `node` keeps, or None when its outputs were not pruned."""
    for gid, kept in plan.channels.items():
        if any(m.role == "producer" and m.node == node for m in groups[gid].members):
            return np.asarray(kept)
    return None


def _refittable(node: onnx.NodeProto) -> bool:
    if node.op_type == "Conv":
        return attr(node, "group", 1) == 1 and attr(node, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
    if node.op_type == "Gemm":
        return attr(node, "alpha", 1.0) == 1.0 and attr(node, "beta", 1.0) == 1.0 and not attr(node, "transA", 0)
    return node.op_type == "MatMul"


def _named_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node, name in zip(out.graph.node, node_names(out)):
        node.name = name
    return out


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _design(node: onnx.NodeProto, w: np.ndarray, x: np.ndarray, pos: np.ndarray | None) -> np.ndarray:
    """Input rows matching `_rows`: im2col patches at the sampled positions for Conv, feature rows otherwise."""
    if node.op_type != "Conv":
        return x.reshape(-1, x.shape[-1]).astype(np.float32)
    kh, kw = w.shape[2:]
    sh, sw = attr(node, "strides", [1, 1])
    dh, dw = attr(node, "dilations", [1, 1])
    pt, pl, pb, pr = attr(node, "pads", [0, 0, 0, 0])
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    win = np.lib.stride_tricks.sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # (N, C, H', W', kh, kw)
    r, q = np.divmod(pos, win.shape[3])
    patches = win[:, :, r, q]  # (N, C, P, kh, kw)
    return patches.transpose(0, 2, 1, 3, 4).reshape(len(x) * len(pos), -1).astype(np.float32)


def _write_back(model: onnx.ModelProto, node: onnx.NodeProto, w: np.ndarray, wb: np.ndarray, set_init) -> None:
    """Store the fitted weights in the node's layout and its bias (adding a bias input to a bias-free Conv)."""
    weights, bias = wb[:, :-1], wb[:, -1]
    if node.op_type == "Conv":
        new_w = weights.reshape(w.shape)
    elif node.op_type == "Gemm" and attr(node, "transB", 0):
        new_w = weights
    else:  # Gemm without transB and MatMul keep W as (in, out)
        new_w = weights.T
    set_init(model, node.input[1], new_w.astype(w.dtype))
    if node.op_type == "MatMul":
        _add_after_matmul(model, node, bias.astype(w.dtype), set_init)
        return
    if len(node.input) < 3 or not node.input[2]:
        name = f"{node.name}.reconstructed_bias"
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = name
    set_init(model, node.input[2], bias.astype(w.dtype).reshape(-1))


def _add_after_matmul(model: onnx.ModelProto, node: onnx.NodeProto, bias: np.ndarray, set_init) -> None:
    """MatMul has no bias input: the fitted bias goes into an Add right after it."""
    if np.allclose(bias, 0):
        return
    out = node.output[0]
    node.output[0] = f"{out}.pre_bias"
    bname = f"{node.name}.reconstructed_bias"
    set_init(model, bname, bias)
    idx = list(model.graph.node).index(node)
    model.graph.node.insert(idx + 1, onnx.helper.make_node("Add", [node.output[0], bname], [out],
                                                            name=f"{node.name}.bias_add"))


class _Structured:
    name = "structured"
    requests = staticmethod(requests)
    score = staticmethod(score)
    select = staticmethod(select)
    reconstruct = staticmethod(reconstruct)
    report = staticmethod(report)
    kept = staticmethod(kept_fraction)

    @staticmethod
    def apply(model, plan, probe=None):
        return apply(model, plan)


STRUCTURED = _Structured()
