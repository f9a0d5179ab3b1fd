"""Structured (channel) pruning, wired: coupled channel groups (units) → channel scores (criteria) → kept channels
(select) → physical removal, checked (rewrite) → least-squares re-fit (reconstruct)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import onnx

from ..criteria import channels as channel_criteria
from ..errors import OnnxPruneError
from ..io.data import Dataset
from ..io.model import size_report
from ..reconstruct.channels import refit_channels
from ..rewrite.channels import remove_channels, zero_consumers
from ..rewrite.check import check_equivalent, probe_feed
from ..rewrite.fold_bias import fold_bias_adds
from ..select.channels import select_channels
from ..select.plan import Plan, PruneSettings
from ..stats import Request, Stats
from ..units.count import count
from ..units.groups import ChannelGroup, analyse, protected_nodes
from ..units.tokens import View, analyse_views, head_dim, head_magnitudes, is_head_group
from ..units.weights import contrib_spec, weight_layers

CRITERIA = channel_criteria.CRITERIA
STATS_FOR = {"fscreen": "class_moments", "apoz": "zeros"}  # per-channel statistics of the tensors consumers read


@dataclass
class ChannelScores:
    """Per prunable group: one score per channel (higher = keep), plus the groups left alone and why."""

    criterion: str
    groups: list[ChannelGroup]
    channel_scores: dict[str, np.ndarray]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (group id, reason)
    notes: list[str] = field(default_factory=list)


def candidate_groups(model: onnx.ModelProto, settings: PruneSettings) -> tuple[list[ChannelGroup], list[tuple[str, str]]]:
    """Prunable groups after `--protect`; the rest with the reason they are left alone."""
    protected = protected_nodes(model, settings.protect)
    keep, skipped = [], []
    for g in analyse_views(model)[0]:
        if not g.prunable:
            skipped.append((g.id, g.reason or "not prunable"))
        elif protected & ({m.node for m in g.members} | set(g.producers)):
            skipped.append((g.id, "protected by --protect"))
        else:
            keep.append(g)
    return keep, skipped


class Structured:
    name = "structured"

    def requests(self, model: onnx.ModelProto, settings: PruneSettings) -> list[Request]:
        """Channel statistics of the tensors consumers read (after BN and activation), or the contributions into
        every consumer (relative importance)."""
        if settings.criterion not in CRITERIA:
            raise OnnxPruneError(f"--criterion {settings.criterion}: structured mode supports {', '.join(CRITERIA)}")
        groups, _ = candidate_groups(model, settings)
        if settings.criterion in STATS_FOR:
            tensors = sorted({t for g in groups for t in g.activations})
            views = analyse_views(model)[1]  # transformer tensors: reduced over tokens (or tokens and head dims)
            stat = STATS_FOR[settings.criterion]
            out = []
            for t in tensors:
                v = views.get(t, View("channels"))
                if v.kind == "heads" and stat != "class_moments":
                    continue  # no APoZ of a head: its groups keep the magnitude score (`score`)
                out.append(Request(t, v.kind, frozenset({stat}), block=v.block))
            return out
        if settings.criterion == "ri":
            layers = {L.name: L for L in weight_layers(model)}
            consumers = dict.fromkeys(m.node for g in groups for m in g.members if m.role == "consumer")
            return [Request(layers[n].input, layers[n].kind, frozenset({"contrib"}), contrib_spec(model, layers[n]))
                    for n in consumers if n in layers]
        return []

    def score(self, model: onnx.ModelProto, stats: Stats | None, settings: PruneSettings) -> ChannelScores:
        groups, skipped = candidate_groups(model, settings)
        if not groups:
            raise OnnxPruneError("no prunable channel groups in this model" +
                                 (f" ({skipped[0][0]}: {skipped[0][1]})" if skipped else ""))
        heads = [g for g in groups if is_head_group(g)]
        if heads and settings.criterion in ("l1", "l2", "apoz"):  # heads: the magnitude of their output-projection block
            p = 2 if settings.criterion == "l2" else 1
            rest = [g for g in groups if not is_head_group(g)]
            per_rest = iter(channel_criteria.scores(settings.criterion, model, rest, stats, settings.alpha,
                                                    settings.beta) if rest else [])
            mags = {g.id: head_magnitudes(model, g, p) for g in heads}
            per = [_rescaled(mags[g.id]) if g.id in mags else next(per_rest) for g in groups]
        elif heads and settings.criterion == "fscreen":
            per = _fscreen_with_head_contributions(model, groups, stats, settings.alpha)
        else:
            per = channel_criteria.scores(settings.criterion, model, groups, stats, settings.alpha, settings.beta)
        return ChannelScores(settings.criterion, groups,
                             {g.id: np.asarray(s, np.float64) for g, s in zip(groups, per)}, skipped)

    def select(self, model: onnx.ModelProto, scores: ChannelScores, ratio: float, settings: PruneSettings) -> Plan:
        # a head stands for dh channels (features): the ratio counts it so, and --round-to applies to kept heads × dh
        groups = [replace(g, tiles=head_dim(g)) if is_head_group(g) and g.tiles == 1 else g for g in scores.groups]
        return select_channels(model, groups, scores.channel_scores, ratio, settings)

    def apply(self, model: onnx.ModelProto, plan: Plan, probe: Dataset | None = None) -> onnx.ModelProto:
        """Physically remove the channels the plan drops; checked against the model with the consumer-side
        weights of those channels zeroed (exactly equivalent), on a few samples."""
        if plan.mode != "structured":
            raise OnnxPruneError(f"plan is {plan.mode}, not structured")
        keep = {k: np.asarray(v) for k, v in plan.channels.items()}
        pruned = remove_channels(model, keep)
        if keep:
            feed = probe_feed(model, probe)
            check_equivalent(pruned, zero_consumers(model, keep), feed, lambda: _culprit(model, keep, feed))
        return pruned

    def reconstruct(self, dense: onnx.ModelProto, pruned: onnx.ModelProto, plan: Plan, data: Dataset,
                    settings: PruneSettings) -> onnx.ModelProto:
        return fold_bias_adds(refit_channels(dense, pruned, plan, data, settings))

    def report(self, dense: onnx.ModelProto, pruned: onnx.ModelProto, plan: Plan, notes: list[str] = (),
               shapes: dict[str, tuple[int, ...]] | None = None) -> dict:
        """Per channel group: channels and kept; totals; parameter, MAC and file-size changes (same keys as the
        unstructured report, with channels as the unit)."""
        analysed = analyse(dense)
        rows = []
        for g in analysed:
            if g.prunable:  # counted in channels of the tensors (a grouped conv's unit stands for `tiles` channels,
                # a head for its dh features, as selection counts them); the shape column shows heads × dh
                units, dh = len(plan.channels.get(g.id, range(g.size))), head_dim(g)
                kept, total = units * g.tiles * dh, g.channels * dh
                rows.append({"layer": g.id, "weight": g.id, "op": "channels", "weights": total, "kept": kept,
                             "sparsity": 1.0 - kept / total, "protected": False,
                             "shape": [g.channels] if dh == 1 else [g.size, dh],
                             "pruned_shape": [kept] if dh == 1 else [units, dh]})
        total, kept = sum(r["weights"] for r in rows), sum(r["kept"] for r in rows)
        c0, c1 = count(dense, shapes), count(pruned, shapes)
        skipped = [g.reason if g.reason == g.id else f"{g.id}: {g.reason}" for g in analysed if not g.prunable]
        return {
            "criterion": plan.settings.get("criterion"), "ratio": plan.settings.get("ratio"), "unit": "channels",
            "layers": rows, "sparsity": 1.0 - kept / max(total, 1), "weights": total, "kept": kept,
            "params": {"dense": c0.params, "pruned": c1.params}, "macs": {"dense": c0.macs, "pruned": c1.macs},
            "size": size_report(dense, pruned),
            "notes": list(notes) + [f"left alone: {s}" for s in skipped],
        }

    def kept(self, scores: ChannelScores, plan: Plan) -> dict[str, tuple[int, int]]:
        """Group id → (kept, total) channels of the tensors, for reports."""
        return {g.id: (len(plan.channels.get(g.id, range(g.size))) * g.tiles * head_dim(g), g.channels * head_dim(g))
                for g in scores.groups}


def _fscreen_with_head_contributions(model: onnx.ModelProto, groups: list[ChannelGroup], stats: Stats | None,
                                     alpha: float) -> list[np.ndarray]:
    """F-screen (`criteria.channels.fscreen_scores`) whose magnitude term for a head group is the head's
    data-driven contribution E_h·‖W_h‖² to the output projection (`criteria.heads`) instead of its q/k/v filter
    norms: what a head adds to the residual stream, not what it reads."""
    from ..criteria import fscreen
    from ..criteria.heads import contributions

    f = [channel_criteria.consumer_mean(stats, g, "f") for g in groups]
    mags = channel_criteria.magnitudes(model, groups)
    for i, g in enumerate(groups):
        c = contributions(model, g, stats) if is_head_group(g) else None
        if c is not None:
            mags[i] = _rescaled(c)
    return fscreen.channel_scores(f, mags, alpha)


def _rescaled(v: np.ndarray) -> np.ndarray:
    """Head magnitudes on the per-group-mean scale the other magnitude scores use (global selection)."""
    return v / max(float(np.mean(v)), 1e-12)


def _culprit(model: onnx.ModelProto, keep: dict[str, np.ndarray], feed: dict[str, np.ndarray]) -> str:
    """The first group whose removal alone changes the function (only computed once a difference was found)."""
    from ..rewrite.check import RTOL, max_rel_diff

    for gid, k in keep.items():
        if max_rel_diff(zero_consumers(model, {gid: k}), remove_channels(model, {gid: k}), feed) > RTOL:
            return f"removing channels of group '{gid}'"
    return "removing channels of several groups together"


STRUCTURED = Structured()
