"""Transformer views of channel groups: which tensors the statistics must reduce over tokens, and head groups.

The channel analysis (`groups.Tracer` with `rules_tokens`) knows each tensor's channel axis. A group whose
consumers read features on the last axis of a token tensor [N, T.., F] needs per-sample statistics reduced over
the tokens (kind "tokens"), not over H, W. A head group (channels = whole heads of dh features) has no per-channel
tensor: its statistics come from the input of the output projection, reduced over tokens and each head's dh
features (kind "heads", block dh); that tensor becomes the group's activation, offset by the group's first head.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..io.graph import initializer_map
from .groups import ChannelGroup, Tracer


@dataclass(frozen=True)
class View:
    kind: str  # "tokens" | "heads"
    block: int = 1


def analyse_views(model: onnx.ModelProto) -> tuple[list[ChannelGroup], dict[str, View]]:
    """The channel groups (as `groups.analyse`), head groups given their activation, and the token views."""
    tracer = Tracer(model).run()
    groups = tracer.groups()
    views: dict[str, View] = {}
    nodes = {n.name: n for n in model.graph.node}
    for g in groups:
        for t in g.activations:
            a = tracer.axis(t)
            if isinstance(a, int) and a != 1 or _token_rows(tracer, t):
                views[t] = View("tokens")
        if g.activations:
            continue
        for m in g.members:
            node = nodes.get(m.node)
            if m.role == "consumer" and m.repeat > 1 and node is not None and node.op_type in ("MatMul", "Gemm"):
                t = node.input[0]
                if t not in g.activations:
                    g.activations.append(t)
                    g.activation_offsets.append(m.offset // m.repeat)
                    views[t] = View("heads", m.repeat)
    return groups, views


def _token_rows(tracer: Tracer, t: str) -> bool:
    """A rank-2 [rows, F] tensor whose rows are not the samples ([B·T, F]: GPT-2's Conv1D): its first dim is known
    (a number, or a symbol such as 'batch*sequence') and is not the model input's batch dim."""
    s = tracer.shape(t)
    inits = set(tracer.inits)
    first = next((i.name for i in tracer.model.graph.input if i.name not in inits), None)
    b = tracer.shape(first) if first else None
    return s is not None and len(s) == 2 and s[0] is not None and bool(b) and s[0] != b[0]


def is_head_group(group: ChannelGroup) -> bool:
    """Channels of several features each on the producers' output axis (attention heads)."""
    return any(m.role == "producer" and m.repeat > 1 for m in group.members)


def head_magnitudes(model: onnx.ModelProto, group: ChannelGroup, p: int = 1) -> np.ndarray:
    """Per head: the L_p norm of its block of the output projection (the consumer rows it feeds), no data needed;
    averaged over the group's consumers."""
    inits = initializer_map(model)
    out = []
    for m in group.members:
        if m.role != "consumer":
            continue
        w = np.moveaxis(inits[m.tensor].astype(np.float64), m.axis, 0)
        out.append([np.linalg.norm(w[m.indices(np.array([c]))].ravel(), p) for c in range(group.size)])
    return np.mean(out, axis=0) if out else np.ones(group.size)


def feature_kind(model: onnx.ModelProto, infos: dict, tensor: str) -> str:
    """How the statistics engine must read a Gemm / MatMul input: "features" for [B, F]; "tokens" for [B, T.., F]
    (reduced over the tokens per sample, not flattened to T·F) and for a rank-2 tensor whose rows are not provably
    the samples ([B·T, F], GPT-2's Conv1D exports): the token reduction reshapes it to [B, -1, F] in the graph."""
    info = infos.get(tensor)
    rank = getattr(info, "rank", None)
    if rank is None or rank < 2:
        return "features"
    if rank >= 3:
        return "tokens"
    inits = {t.name for t in model.graph.initializer}
    first = next((i for i in model.graph.input if i.name not in inits), None)
    if first is None or first.name not in infos or not infos[first.name].shape:
        return "features"
    b = infos[first.name].shape[0]
    d0 = info.shape[0] if info.shape else None
    return "features" if d0 is not None and d0 == b else "tokens"


def head_dim(group: ChannelGroup) -> int:
    """Features per channel of a head group (dh; g·dh under grouped-query attention, where a channel is a key/value
    head and its g query heads, whose weight members step g·dh); 1 for other groups."""
    return max((m.step if m.step and m.repeat > 1 else m.repeat for m in group.members if m.role == "producer"),
               default=1)
