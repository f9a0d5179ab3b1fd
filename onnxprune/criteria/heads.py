"""Attention-head scores: how much each head adds to the residual stream, from data and the output projection.

A head h feeds the output projection W_o through its dh features x_h (the merged heads tensor, read per head by the
statistics engine: the per-sample mean of x² over the real tokens and the head's features, kind "heads"). What it
adds to the block's output is W_h x_h, of expected energy Σ_j E[x_j²]·‖W_j‖² over its features j; with the head's
features taken at their mean energy E_h this is E_h·‖W_h‖_F² — the head's *contribution*. It is the activation-
weighted magnitude of the head (Wanda's |w|·‖x‖ and FLAP's fluctuation × column norm, at head level), where the
plain magnitude (`units.tokens.head_magnitudes`) sees ‖W_h‖ only: a head whose outputs are near zero on real data
contributes little however large its block.
"""
from __future__ import annotations

import numpy as np
import onnx

from ..stats import Stats
from ..units.groups import ChannelGroup
from ..units.tokens import head_magnitudes


def head_energy(stats: Stats, group: ChannelGroup) -> np.ndarray | None:
    """E_h: the mean over samples of each head's per-sample energy (class means weighted by class counts), averaged
    over the tensors the group's consumers read; None when no such statistics were collected."""
    offsets = group.activation_offsets or [0] * len(group.activations)
    out = []
    for t, off in zip(group.activations, offsets):
        if not (stats.has(t, "class_mean") and stats.has(t, "class_n")):
            continue
        means, n = stats.get(t, "class_mean"), stats.get(t, "class_n")
        if means.ndim == 2 and means.shape[1] >= off + group.size and n.sum() > 0:
            out.append((n[:, None] * means[:, off:off + group.size]).sum(0) / n.sum())
    return np.mean(out, axis=0) if out else None


def contributions(model: onnx.ModelProto, group: ChannelGroup, stats: Stats | None) -> np.ndarray | None:
    """E_h·‖W_h‖_F² per head (see the module docstring); None without per-head statistics."""
    energy = None if stats is None else head_energy(stats, group)
    if energy is None:
        return None
    return np.maximum(energy, 0.0) * head_magnitudes(model, group, p=2) ** 2
