"""Channel scores for coupled channel groups: the criteria of this package, aggregated over a group's members.

A group is a set of channels removed together (e.g. every conv feeding one residual chain). Its channel score
aggregates over the group's members by the **mean**: the mean |γ| over its BatchNorms (or, without BN, the mean
L1 norm of its producing filters), the mean F over the tensors its consumers read, the mean activity (1 − APoZ)
over those tensors, the mean relative importance of the channel's outgoing connections. The mean keeps a group
that spans many layers comparable with a single-layer group.

Global selection compares channels of different groups, so magnitudes must share a scale. BN γ already do (BN
normalises the activations; network slimming ranks raw γ globally). Filter norms do not (they grow with fan-in and
differ per layer), so a group without BN gets its filter norms divided by the group's mean norm and, when the
model also has BN groups, multiplied by the median |γ| of all BN channels. The explicit `l1` / `l2` criteria use
the per-group mean normalisation for every group (as Torch-Pruning's global pruning does).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import onnx

from ..errors import OnnxPruneError
from ..io.graph import initializer_map
from ..stats import Stats
from ..units.groups import ChannelGroup, Member
from . import apoz, fscreen
from . import relative_importance as ri
from .bn_scale import bn_scale
from .magnitude import filter_norm

CRITERIA = ("fscreen", "bn", "l1", "l2", "apoz", "ri", "taylor")


def per_channel(values: np.ndarray, member: Member, size: int, reduce: Callable[[np.ndarray], float]) -> np.ndarray:
    """One number per group channel from a member tensor: `reduce` over the slice that channel owns on the
    member's axis (NaN where this member does not see the channel)."""
    out = np.full(size, np.nan)
    moved = np.moveaxis(values, member.axis, 0)
    for c in range(max(member.lo, 0), member.hi):
        out[c] = reduce(moved[member.indices(np.array([c]))])
    return out


def bn_gammas(model: onnx.ModelProto, group: ChannelGroup, inits: dict[str, np.ndarray] | None = None
              ) -> list[np.ndarray]:
    """|γ| of every BN normalising the group, one (size,) array per BN (NaN where a BN sees only part); a channel
    tied across conv groups gets the mean |γ| of the channels it stands for."""
    inits = initializer_map(model) if inits is None else inits
    scale_of = {n.name: n.input[1] for n in model.graph.node if n.op_type == "BatchNormalization"}
    return [bn_scale(per_channel(inits[m.tensor], m, group.size, lambda v: float(np.abs(v).mean())))
            for m in group.members if m.role == "bn" and scale_of.get(m.node) == m.tensor]


def filter_norms(model: onnx.ModelProto, group: ChannelGroup, p: int = 1,
                 inits: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Each channel's producing-filter L_p norm (biases excluded), averaged over the group's producers that make it
    (a branch tied to some channels of a group by a channel shuffle makes only those: it says nothing about the
    others, so it is left out of their mean rather than counted as 0)."""
    inits = initializer_map(model) if inits is None else inits
    norms = [per_channel(inits[m.tensor], m, group.size, lambda v: float(filter_norm(v.reshape(1, -1), 0, p)[0]))
             for m in group.members if m.role == "producer" and inits[m.tensor].ndim >= 2]
    if not norms:
        return np.ones(group.size)
    norms = np.stack(norms)
    seen = ~np.isnan(norms)
    return np.where(seen.any(0), np.nansum(norms, axis=0) / np.maximum(seen.sum(0), 1), 0.0)


def magnitudes(model: onnx.ModelProto, groups: list[ChannelGroup], p: int = 1, prefer_bn: bool = True
               ) -> list[np.ndarray]:
    """Per group, channel magnitudes on one scale across groups (see the module docstring)."""
    inits = initializer_map(model)  # once: converting every initializer per group cost seconds on densenet121
    gammas = [bn_gammas(model, g, inits) if prefer_bn else [] for g in groups]
    # BN scores a group only when a BN sees every channel (a branch tied by a channel shuffle normalises only the
    # units it makes): otherwise its filters score it
    bn = {i: np.nanmean(np.stack(gs), axis=0) for i, gs in enumerate(gammas)
          if gs and (~np.isnan(np.stack(gs))).any(axis=0).all()}
    scale = float(np.median(np.concatenate(list(bn.values())))) if bn else 1.0
    out = []
    for i, g in enumerate(groups):
        if i in bn:
            out.append(bn[i])
            continue
        norms = filter_norms(model, g, p, inits)
        out.append(norms / max(float(norms.mean()), 1e-12) * scale)
    return out


def consumer_mean(stats: Stats | None, group: ChannelGroup, key: str) -> np.ndarray:
    """Mean of a per-channel statistic over the tensors the group's consumers read (Concat offsets applied)."""
    if stats is None:
        raise OnnxPruneError("this criterion needs calibration data (--calib)")
    offsets = group.activation_offsets or [0] * len(group.activations)
    n = group.channels  # a channel tied across conv groups: the mean over the channels it stands for
    vals = [stats.get(t, key)[off:off + n] for t, off in zip(group.activations, offsets) if stats.has(t, key)]
    vals = [v.reshape(group.tiles, group.size).mean(0) for v in vals if v.shape == (n,)]
    if not vals:
        raise OnnxPruneError(f"statistics '{key}' missing for group {group.id}")
    return np.mean(vals, axis=0)


def fscreen_scores(model: onnx.ModelProto, groups: list[ChannelGroup], stats: Stats | None, alpha: float
                   ) -> list[np.ndarray]:
    """M(C) = α·rank(F) + (1−α)·rank(|γ_C| or filter L1), ranks global over all groups (paper 001 eq. 6)."""
    f = [consumer_mean(stats, g, "f") for g in groups]
    return fscreen.channel_scores(f, magnitudes(model, groups), alpha)


def apoz_scores(groups: list[ChannelGroup], stats: Stats | None) -> list[np.ndarray]:
    """1 − APoZ of each channel, averaged over the tensors the group's consumers read."""
    return [apoz.channel_scores(consumer_mean(stats, g, "apoz")) for g in groups]


def taylor_scores(groups: list[ChannelGroup], stats: Stats | None) -> list[np.ndarray]:
    """First-order Taylor Σ|g·a| of each channel (mean over samples), averaged over the tensors the group's
    consumers read: the loss change its removal would cause to first order (Molchanov et al. 2017)."""
    return [consumer_mean(stats, g, "taylor") for g in groups]


def ri_scores(groups: list[ChannelGroup], stats: Stats | None, beta: float) -> list[np.ndarray]:
    """Mean relative-importance score of each channel's outgoing connections, over the group's consumers."""
    if stats is None:
        raise OnnxPruneError("this criterion needs calibration data (--calib)")
    out = []
    for g in groups:
        per = []
        for m in g.members:
            if m.role != "consumer" or not stats.has(m.node, "ri_mean"):
                continue
            s = ri.score(stats.get(m.node, "ri_mean"), stats.get(m.node, "ri_std"), beta)  # (out, in): input axis 1
            cols = ri.channel_scores(s, in_axis=1)
            per.append(np.nan_to_num(per_channel(cols, replace(m, axis=0), g.size, lambda v: float(v.mean()))))
        out.append(np.mean(per, axis=0) if per else np.ones(g.size))
    return out


def scores(criterion: str, model: onnx.ModelProto, groups: list[ChannelGroup], stats: Stats | None,
           alpha: float, beta: float) -> list[np.ndarray]:
    """One score per channel of every group (higher = keep) for a structured criterion."""
    if criterion in ("bn", "l1", "l2"):
        return magnitudes(model, groups, p=2 if criterion == "l2" else 1, prefer_bn=criterion == "bn")
    if criterion == "fscreen":
        return fscreen_scores(model, groups, stats, alpha)
    if criterion == "apoz":
        return apoz_scores(groups, stats)
    if criterion == "ri":
        return ri_scores(groups, stats, beta)
    if criterion == "taylor":
        return taylor_scores(groups, stats)
    raise OnnxPruneError(f"--criterion {criterion}: not a channel criterion")
