"""Coupled channel groups: the ONNX analogue of Torch-Pruning's dependency graph.

`analyse` walks the graph once in topological order. Each producer (Conv, ConvTranspose, Gemm, MatMul with a
constant weight) opens a new channel *space*; the per-op rules in `ops.RULES` carry layouts forward and record
every tensor slice that depends on a channel. Ops that couple feature maps (residual Add, SE Mul) merge spaces with
a union-find. A merged space is a `ChannelGroup`: channels that must be removed together. Anything the rules cannot
see through, the model input and the graph outputs make a group unprunable, with the reason recorded.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from ..errors import OnnxPruneError
from ..io.graph import initializer_map, opset
from .layout import Layout, Seg, positions, width
from .rules import RULES, Unsupported


@dataclass
class Member:
    """One tensor slice affected when the group's channels change: channel c ↔ indices
    [offset + c·repeat, offset + (c+1)·repeat) on `axis`, for lo ≤ c < hi."""

    tensor: str  # initializer name, or "group" (role "attr": the node's group attribute)
    axis: int
    role: str  # producer | consumer | bn | const | depthwise | attr | shape
    offset: int = 0
    repeat: int = 1
    node: str = ""
    lo: int = 0  # channel range of the group that reaches this tensor (a Split/Slice may see only part)
    hi: int = -1

    def indices(self, channels: np.ndarray) -> np.ndarray:
        """Axis indices of the given group channels (those outside [lo, hi) are ignored)."""
        c = np.asarray(channels, dtype=np.int64)
        c = c[(c >= self.lo) & (c < self.hi)]
        return (self.offset + c[:, None] * self.repeat + np.arange(self.repeat)).ravel()


@dataclass
class ChannelGroup:
    id: str  # name of the first producer node (stable across runs and across rewrites)
    size: int
    members: list[Member]
    producers: list[str]  # nodes whose output channels are this group
    bn: list[str]  # BatchNormalization nodes normalising these channels (γ = their input[1])
    activations: list[str]  # tensors the consumers read (pre-Flatten for Gemm heads): the channel feature
    prunable: bool
    reason: str = ""
    activation_offsets: list[int] = field(default_factory=list)  # channel c is channel offset + c of activations[i]

    def describe(self) -> str:
        state = "prunable" if self.prunable else f"skipped: {self.reason}"
        return f"{self.id} ({self.size} ch, {len(self.producers)} producer(s)): {state}"


def analyse(model: onnx.ModelProto) -> list[ChannelGroup]:
    """All channel groups in graph order; never raises on ops it does not know (their groups are unprunable)."""
    return Tracer(model).run().groups()


class Tracer:
    """Per-analysis state: channel spaces (union-find), tensor layouts and the members found so far."""

    def __init__(self, model: onnx.ModelProto):
        if any(not n.name for n in model.graph.node):
            raise ValueError("internal: the model's nodes must be named first (io.graph.name_nodes, done at load)")
        self.model = model
        self.inits = initializer_map(model)
        self.shapes = _shapes(model)
        self.opset = opset(model)
        self.layouts: dict[str, Layout] = {}
        self.flat_src: dict[str, str] = {}  # flattened features → the [N, C, H, W] tensor they came from
        self.parent: list[int] = []
        self.sizes: list[int] = []
        self.reasons: list[str] = []
        self.origin: list[str] = []
        self.members: list[list[Member]] = []
        self.producers: list[list[str]] = []
        self.bns: list[list[str]] = []
        self.consumed: list[list[str]] = []

    # --- queries used by the rules
    def layout(self, t: str) -> Layout | None:
        return self.layouts.get(t)

    def const(self, t: str) -> np.ndarray | None:
        return self.inits.get(t)

    def shape(self, t: str) -> list | None:
        if t in self.inits:
            return list(self.inits[t].shape)
        return self.shapes.get(t)

    def rank(self, t: str) -> int | None:
        s = self.shape(t)
        return None if s is None else len(s)

    # --- spaces
    def _space(self, size: int, origin: str, reason: str = "") -> int:
        for lst in (self.members, self.producers, self.bns, self.consumed):
            lst.append([])
        self.parent.append(len(self.parent))
        self.sizes.append(size)
        self.reasons.append(reason)
        self.origin.append(origin)
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def produce(self, node: str, size: int) -> Layout:
        s = self._space(size, node)
        self.producers[s].append(node)
        return (Seg(s, 0, size),)

    def opaque(self, size: int, reason: str) -> Layout:
        return (Seg(self._space(size, reason, reason), 0, size),)

    def stop(self, layout: Layout, reason: str) -> None:
        for seg in layout:
            r = self.find(seg.space)
            self.reasons[r] = self.reasons[r] or reason

    def couple(self, layouts: list[Layout], node: str) -> Layout:
        """Operands of an elementwise op share channels: merge their spaces segment by segment."""
        first = layouts[0]
        for other in layouts[1:]:
            if [(s.width, s.repeat) for s in first] != [(s.width, s.repeat) for s in other]:
                for lay in layouts:
                    self.stop(lay, f"operands with different channel layouts coupled at node '{node}'")
                continue
            for a, b in zip(first, other):
                ra, rb = self.find(a.space), self.find(b.space)
                if (ra, a.lo, a.hi) == (rb, b.lo, b.hi):
                    continue
                if self._full(a) and self._full(b):
                    lo, hi = min(ra, rb), max(ra, rb)
                    self.parent[hi] = lo
                    self.reasons[lo] = self.reasons[lo] or self.reasons[hi]
                else:
                    self.stop((a, b), f"partial channel ranges coupled at node '{node}'")
        return first

    def _full(self, seg: Seg) -> bool:
        return seg.lo == 0 and seg.hi == self.sizes[seg.space]

    # --- recording
    def attach(self, tensor: str, axis: int, layout: Layout, role: str, node: str) -> None:
        for p, seg in positions(layout):
            self.members[seg.space].append(
                Member(tensor, axis, role, p - seg.lo * seg.repeat, seg.repeat, node, seg.lo, seg.hi))

    def bn(self, layout: Layout, node: str) -> None:
        for seg in layout:
            self.bns[seg.space].append(node)

    def consume(self, tensor: str, layout: Layout) -> None:
        for seg in layout:
            self.consumed[seg.space].append(tensor)

    def set(self, t: str, layout: Layout, like: str | None = None, flat_src: str | None = None) -> None:
        shape = self.shape(t)
        if shape is not None and len(shape) >= 2 and isinstance(shape[1], int) and shape[1] != width(layout):
            raise Unsupported(f"inferred {shape[1]} channels for '{t}', rules say {width(layout)}")
        self.layouts[t] = layout
        src = flat_src if flat_src is not None else self.flat_src.get(like or "")
        if src:
            self.flat_src[t] = src

    # --- the walk
    def run(self) -> Tracer:
        g = self.model.graph
        for inp in g.input:
            c = self._channels(inp.name)
            if inp.name not in self.inits and c is not None:
                self.layouts[inp.name] = self.opaque(c, f"channels of the model input '{inp.name}'")
        for node in g.node:
            name = node.name
            feats = [t for t in node.input if t in self.layouts]
            if not feats:
                continue  # computes on constants only
            rule = RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            try:
                if rule is None:
                    raise Unsupported(f"unsupported op {node.domain + '.' if node.domain else ''}{node.op_type}")
                rule.trace(self, node, name)
            except Unsupported as e:
                self._block(node, name, feats, str(e))
            except Exception as e:  # a rule bug must not crash the analysis: be conservative instead
                self._block(node, name, feats, f"analysis failed ({type(e).__name__}: {e})")
        for out in g.output:
            if out.name in self.layouts:
                self.stop(self.layouts[out.name], f"reaches the graph output '{out.name}'")
        return self

    def _block(self, node: onnx.NodeProto, name: str, feats: list[str], why: str) -> None:
        reason = f"{why} at node '{name}'" if "at node" not in why else why
        for t in feats:
            self.stop(self.layouts[t], reason)
        for out in node.output:
            c = self._channels(out)
            if c is not None:
                self.layouts[out] = self.opaque(c, f"channels made by node '{name}' ({why})")
            else:
                self.layouts.pop(out, None)

    def _channels(self, t: str) -> int | None:
        s = self.shapes.get(t)
        return s[1] if s is not None and len(s) >= 2 and isinstance(s[1], int) else None

    # --- results
    def groups(self) -> list[ChannelGroup]:
        by_root: dict[int, list[int]] = {}
        for s in range(len(self.parent)):
            by_root.setdefault(self.find(s), []).append(s)
        out, seen = [], set()
        self.group_root: dict[str, int] = {}
        for root, spaces in by_root.items():
            members = [m for s in spaces for m in self.members[s]]
            producers = [p for s in spaces for p in self.producers[s]]
            if not members and not producers:
                continue
            reason = self.reasons[root]
            if not reason and not producers:
                reason = "no layer produces these channels"
            if not reason and not any(m.role == "consumer" for m in members):
                reason = "no layer consumes these channels (dead branch)"
            gid = producers[0] if producers else self.origin[root]
            base, k = gid, 2
            while gid in seen:
                gid, k = f"{base}#{k}", k + 1
            seen.add(gid)
            self.group_root[gid] = root
            acts, offs = self._activations(root, [t for s in spaces for t in self.consumed[s]])
            out.append(ChannelGroup(gid, self.sizes[root], members, producers,
                                    list(dict.fromkeys(b for s in spaces for b in self.bns[s])),
                                    acts, not reason, reason, offs))
        return out

    def _activations(self, root: int, consumed: list[str]) -> tuple[list[str], list[int]]:
        acts, offs = [], []
        for t in dict.fromkeys(consumed):
            src = self.flat_src.get(t, t)
            for p, seg in positions(self.layouts.get(src, ())):
                if self.find(seg.space) == root and seg.repeat == 1 and (src, p - seg.lo) not in zip(acts, offs):
                    acts.append(src)
                    offs.append(p - seg.lo)
        return acts, offs


def _shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Tensor name → dims (int, symbolic name, or None), from non-strict shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        inferred = model
    g = inferred.graph
    shapes = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
    return shapes


WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def protected_nodes(model: onnx.ModelProto, protect: tuple[str, ...] | list[str]) -> set[str]:
    """Nodes named by --protect: `first` / `last` are the first / last weighted layer; other names match a node or
    one of its inputs (a weight); an unknown name is an error."""
    weighted = [n.name for n in model.graph.node if n.op_type in WEIGHTED_OPS]
    out: set[str] = set()
    for p in protect:
        if p == "first" and weighted:
            out.add(weighted[0])
        elif p == "last" and weighted:
            out.add(weighted[-1])
        else:
            hits = {n.name for n in model.graph.node if n.name == p or p in n.input}
            if not hits:
                raise OnnxPruneError(f"--protect {p}: no node or weight of that name")
            out |= hits
    return out
