"""Apply channel decisions to a graph: remove channels physically, or zero them (the reference).

`remove_channels` slices every member of every pruned group (weights on the right axis, biases, BN vectors,
per-channel constants, Gemm rows/columns), updates `group` attributes of depthwise convs and the shape constants of
Split/Slice/Reshape/Resize, then validates (stale value_info dropped, strict shape inference, full checker,
onnxruntime load). `zero_consumers` is the same decision expressed as zeros in the consumers' weights: exactly
equivalent, so the two are compared in tests.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from ..errors import OnnxPruneError
from ..io.graph import attr, del_attr, fresh_name, initializer_map, set_attr, set_initializer, uses
from ..io.model import validate
from ..units.groups import ChannelGroup, Tracer
from ..units.layout import positions, width
from ..units.table import RULES

Keep = Mapping[str, np.ndarray | Sequence[int]]


def remove_channels(model: onnx.ModelProto, keep: Keep) -> onnx.ModelProto:
    """A new, validated model keeping only `keep[group_id]` (sorted channel indices) of each listed group."""
    work, tracer, groups = _prepare(model)
    removed = _removed(groups, keep)
    fixer = Fixer(work, tracer, removed, groups)
    fixer.check_not_empty()
    cuts: dict[tuple[str, int], list[np.ndarray]] = defaultdict(list)
    group_attr: dict[str, int] = defaultdict(int)
    to_fix: dict[str, None] = {}
    for g in groups:
        if g.id not in removed:
            continue
        for m in g.members:
            idx = m.indices(removed[g.id])
            if m.role == "attr":
                group_attr[m.node] += len(idx)
            elif m.role == "shape":
                to_fix[m.node] = None
            elif len(idx):
                cuts[(m.tensor, m.axis)].append(idx)
    nodes = {n.name: n for n in work.graph.node}
    for name in to_fix:  # shape constants first: they read the original values
        RULES[nodes[name].op_type].fix(fixer, nodes[name])
    inits = initializer_map(work)
    for (t, axis), idx in cuts.items():  # a weight may be cut on two axes (consumer and producer): chain them
        inits[t] = np.delete(inits[t], np.unique(np.concatenate(idx)), axis=axis)
        set_initializer(work, t, inits[t])
    for name, n in group_attr.items():
        fixer.set_attr(nodes[name], "group", attr(nodes[name], "group") - n)
    return validate(work)


def zero_consumers(model: onnx.ModelProto, keep: Keep) -> onnx.ModelProto:
    """The reference for `remove_channels`: same graph, consumer weights of removed channels set to 0."""
    work, _, groups = _prepare(model)
    removed = _removed(groups, keep)
    inits = initializer_map(work)
    for g in groups:
        for m in g.members:
            if g.id in removed and m.role == "consumer":
                w = np.moveaxis(inits[m.tensor].copy(), m.axis, 0)
                w[m.indices(removed[g.id])] = 0
                inits[m.tensor] = np.moveaxis(w, 0, m.axis)
                set_initializer(work, m.tensor, inits[m.tensor])
    return work


class Fixer:
    """What an op's `fix` needs: original constants, kept-index masks per tensor, and safe ways to edit a node."""

    def __init__(self, model: onnx.ModelProto, tracer: Tracer, removed: dict[str, np.ndarray],
                 groups: list[ChannelGroup]):
        self.model, self.tracer, self.opset = model, tracer, tracer.opset
        by_id = {g.id: g for g in groups}  # removed group channels → the channels of its spaces (conv-group tiles)
        self.removed_by_root = {tracer.group_root[gid]: by_id[gid].expand(r) for gid, r in removed.items()}
        self.uses = uses(model)

    def const(self, t: str) -> np.ndarray:
        return self.tracer.inits[t]

    def rank(self, t: str) -> int | None:
        return self.tracer.rank(t)

    def shape(self, t: str) -> list | None:
        """The original shape of t (before any channel is removed)."""
        return self.tracer.shape(t)

    def kept(self, t: str) -> np.ndarray:
        """Boolean mask over the channel axis of tensor t: True where the index survives."""
        layout = self.tracer.layouts[t]
        mask = np.ones(width(layout), dtype=bool)
        for p, seg in positions(layout):
            r = self.removed_by_root.get(self.tracer.find(seg.space))
            if r is not None:
                r = r[(r >= seg.lo) & (r < seg.hi)]
                mask[(p + (r[:, None] - seg.lo) * seg.repeat + np.arange(seg.repeat)).ravel()] = False
        return mask

    def axis(self, t: str) -> object:
        """Channel axis of t (transformer hook, see `Tracer.axes`)."""
        return self.tracer.axis(t)

    def producer(self, t: str) -> onnx.NodeProto | None:
        """The node computing t (transformer hook: a Reshape target computed by a Concat)."""
        return next((n for n in self.model.graph.node if t in n.output), None)

    def check_not_empty(self) -> None:
        for t, layout in self.tracer.layouts.items():
            if any(self.tracer.find(s.space) in self.removed_by_root for s in layout) and not self.kept(t).any():
                raise OnnxPruneError(f"the plan removes every channel of tensor '{t}'")

    def set_input(self, node: onnx.NodeProto, i: int, value: np.ndarray, new_name: str | None = None) -> None:
        """Point input i at `value`; a constant shared with other nodes is copied rather than changed."""
        while len(node.input) <= i:
            node.input.append("")
        old = node.input[i]
        if new_name or not old or self.uses.get(old, 0) > 1:
            name = fresh_name(self.tracer.inits, new_name or f"{old}__{node.name}")
            self.tracer.inits[name] = value
            node.input[i] = name
            self.uses[name] = 1
            if old:
                self.uses[old] -= 1
        set_initializer(self.model, node.input[i], value)

    def set_attr(self, node: onnx.NodeProto, name: str, value) -> None:
        set_attr(node, name, value)

    def del_attr(self, node: onnx.NodeProto, name: str) -> None:
        del_attr(node, name)


def _prepare(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Tracer, list[ChannelGroup]]:
    """Copy the model and give every per-channel constant used in several places its own copy, then analyse.

    Exporters deduplicate equal constants (every zero bias of one size becomes one tensor), so a vector shared by
    layers of different groups is copied per use: a few values, and each group slices its own. A weight matrix or
    kernel read by several layers is never copied: the analysis couples those layers' channels instead
    (`Tracer.attach`), and both cut it at the same indices."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    tracer = Tracer(work).run()
    groups = tracer.groups()
    member_tensors = {m.tensor for g in groups for m in g.members if m.role not in ("attr", "shape")}
    used = uses(work)
    coupled = {t for t, _ in tracer.weight_use}
    shared = {t for t in member_tensors if used.get(t, 0) > 1 and t not in coupled}
    if not shared:
        return work, tracer, groups
    inits = initializer_map(work)
    seen: dict[str, int] = defaultdict(int)
    for node in work.graph.node:
        for i, t in enumerate(node.input):
            if t in shared:
                seen[t] += 1
                if seen[t] > 1:
                    name = fresh_name(inits, f"{t}__{seen[t]}")
                    inits[name] = inits[t]
                    set_initializer(work, name, inits[t])
                    node.input[i] = name
    tracer = Tracer(work).run()
    return work, tracer, tracer.groups()


def _removed(groups: list[ChannelGroup], keep: Keep) -> dict[str, np.ndarray]:
    """Group id → removed channel indices; every mistake in `keep` is a one-line error."""
    by_id = {g.id: g for g in groups}
    out = {}
    for gid, kept in keep.items():
        g = by_id.get(gid)
        if g is None:
            raise OnnxPruneError(f"unknown channel group '{gid}' (was the plan made for another model?)")
        k = np.asarray(kept, dtype=np.int64).ravel()
        if len(k) == g.size and np.array_equal(k, np.arange(g.size)):
            continue  # nothing removed
        if not g.prunable:
            raise OnnxPruneError(f"channel group '{gid}' cannot be pruned: {g.reason}")
        if len(k) == 0:
            raise OnnxPruneError(f"channel group '{gid}': at least one channel must be kept")
        if np.any(np.diff(k) <= 0) or k[0] < 0 or k[-1] >= g.size:
            raise OnnxPruneError(f"channel group '{gid}': kept indices must be sorted, unique and in [0, {g.size})")
        out[gid] = np.setdiff1d(np.arange(g.size), k)
    return out
