"""Structured (channel) pruning: coupled channel groups → channel scores → kept channels → physical removal.

The same five steps as `unstructured.py`: `requests` (which statistics), `score` (once per statistics pass),
`select` (cheap, per ratio), `apply` (rewrite), `reconstruct` (optional least-squares re-fit); `prune` chains them.

Group-level aggregation (one place, documented here): a group is a set of channels removed together (e.g. every
conv feeding one residual chain). Its channel score aggregates over the group's members by the **mean**:
the mean |γ| over its BatchNorms (or, without BN, the mean L1 norm of its producing filters), the mean F over the
tensors its consumers read, the mean activity (1 − APoZ) over those tensors. The mean keeps a group that spans
many layers comparable with a single-layer group.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from .criteria import apoz as apoz_crit
from .criteria import bn_scale, fscreen, magnitude
from .criteria import relative_importance as ri_crit
from .data import Dataset
from .errors import OnnxPruneError
from .graph.groups import ChannelGroup, analyse
from .graph.rewrite import remove_channels
from .model_io import initializer_map, model_hash
from .plan import Plan, PruneSettings
from .stats import Request, Stats, collect

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
    weighted = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")]
    out: set[str] = set()
    for p in protect:
        if p == "first" and weighted:
            out.add(weighted[0].name)
        elif p == "last" and weighted:
            out.add(weighted[-1].name)
        else:
            hits = {n.name for n in model.graph.node if n.name == p or p in n.input}
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
        nodes = {n.name: n for n in model.graph.node}
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
    w = initializer_map(model)
    gammas = {n.input[1] for n in model.graph.node if n.op_type == "BatchNormalization"}
    crit = settings.criterion
    mag = [_magnitude(g, w, gammas, p=2 if crit == "l2" else 1, prefer_bn=crit not in ("l1", "l2")) for g in groups]
    if crit in ("bn", "l1", "l2"):
        per = mag
    elif crit == "fscreen":
        f = [_mean_over(stats, g.activations, "f", g.size) for g in groups]
        per = fscreen.channel_scores(f, mag, settings.alpha)
    elif crit == "apoz":
        per = [apoz_crit.channel_scores(_mean_over(stats, g.activations, "apoz", g.size)) for g in groups]
    else:  # ri
        per = [_ri_channel(g, stats, settings.beta) for g in groups]
    return Scores(crit, groups, {g.id: np.asarray(s, np.float64) for g, s in zip(groups, per)}, skipped,
                  None if stats is None else stats.label_mode)


def _magnitude(g: ChannelGroup, w: dict[str, np.ndarray], gammas: set[str], p: int, prefer_bn: bool) -> np.ndarray:
    """Mean |γ| over the group's BNs; without BN (or for l1/l2) the mean L_p norm of its producing filters."""
    bn = [m for m in g.members if m.role == "bn" and m.tensor in gammas]
    if prefer_bn and bn:
        return np.mean([bn_scale.bn_scale(_take(w[m.tensor], m, g.size)) for m in bn], axis=0)
    prod = [m for m in g.members if m.role == "producer" and m.tensor in w and w[m.tensor].ndim >= 2]
    if not prod:
        return np.ones(g.size)
    return np.mean([magnitude.filter_norm(_take(w[m.tensor], m, g.size), out_axis=m.axis, p=p) for m in prod], axis=0)


def _take(arr: np.ndarray, m, size: int) -> np.ndarray:
    """The `size` entries of a member tensor that index this group's channels (shifted by Concat offsets)."""
    if m.offset == 0 and arr.shape[m.axis] == size:
        return arr
    return np.take(arr, np.arange(m.offset, m.offset + size), axis=m.axis)


def _mean_over(stats: Stats | None, tensors: list[str], key: str, size: int) -> np.ndarray:
    if stats is None:
        raise OnnxPruneError("this criterion needs calibration data (--calib)")
    vals = [stats.get(t, key) for t in tensors if stats.has(t, key)]
    vals = [v for v in vals if v.shape == (size,)]
    if not vals:
        raise OnnxPruneError(f"statistics '{key}' missing for tensors {tensors[:2]}")
    return np.mean(vals, axis=0)


def _ri_channel(g: ChannelGroup, stats: Stats | None, beta: float) -> np.ndarray:
    if stats is None:
        raise OnnxPruneError("this criterion needs calibration data (--calib)")
    per = []
    for m in g.members:
        if m.role != "consumer":
            continue
        mean = _layer_stat(stats, m.node, "ri_mean")
        std = _layer_stat(stats, m.node, "ri_std")
        if mean is None:
            continue
        s = ri_crit.channel_scores(ri_crit.score(mean, std, beta), in_axis=1)
        per.append(s[m.offset:m.offset + g.size] if s.shape[0] != g.size else s)
    if not per:
        return np.ones(g.size)
    return np.mean(per, axis=0)


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
        k = np.maximum(k, floor)
        return np.minimum(sizes, np.ceil(k / settings.round_to).astype(int) * settings.round_to)

    if settings.allocation == "uniform":
        keep = rounded(np.ceil((1.0 - ratio) * sizes).astype(int))
    else:
        sorted_scores = [np.sort(scores.channel_scores[g.id]) for g in groups]
        candidates = np.unique(np.concatenate(sorted_scores))
        # kept(t) per group = channels with score >= t; evaluate every candidate threshold at once
        kept = np.stack([len(s) - np.searchsorted(s, candidates, side="left") for s in sorted_scores])
        removed = (sizes[:, None] - np.apply_along_axis(rounded, 0, kept)).sum(0)
        best = int(np.argmin(np.abs(removed - target_removed) + 1e-9 * np.arange(len(candidates))))
        keep = rounded(kept[:, best]) if ratio > 0 else sizes.copy()
    channels = {}
    for g, k in zip(groups, keep):
        if k < g.size:
            s = scores.channel_scores[g.id]
            order = np.lexsort((np.arange(g.size), -s))  # highest score first, ties by index: deterministic
            channels[g.id] = sorted(int(i) for i in order[:k])
    return Plan("structured", model_hash(model), {**settings.to_dict(), "ratio": ratio}, channels=channels)


def apply(model: onnx.ModelProto, plan: Plan) -> onnx.ModelProto:
    """Physically remove the channels the plan drops; the result is validated (checker, shapes, onnxruntime)."""
    if plan.mode != "structured":
        raise OnnxPruneError(f"plan is {plan.mode}, not structured")
    return remove_channels(model, {k: np.asarray(v) for k, v in plan.channels.items()})


def kept_fraction(scores: Scores, plan: Plan) -> dict[str, tuple[int, int]]:
    """Group id → (kept, total) channels, for reports."""
    return {g.id: (len(plan.channels.get(g.id, range(g.size))), g.size) for g in scores.groups}
