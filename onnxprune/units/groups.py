"""Coupled channel groups: the ONNX analogue of Torch-Pruning's dependency graph.

`analyse` walks the graph once in topological order. Each producer (Conv, ConvTranspose, Gemm, MatMul with a
constant weight) opens a new channel *space*; the per-op rules in `ops.RULES` carry layouts forward and record
every tensor slice that depends on a channel. Ops that couple feature maps (residual Add, SE Mul) merge spaces with
a union-find. A merged space is a `ChannelGroup`: channels that must be removed together. Anything the rules cannot
see through, the model input and the graph outputs make a group unprunable, with the reason recorded.

Grouped convolutions (1 < group < C) tie a space's channels every C/group (`Tracer.tile`; merged spaces keep the
gcd): such a group is offered as its `period` free channels, each standing for `tiles` channels (`Member.tiles`).
One weight read by several layers couples those layers' channels (`Tracer.attach`), so it is never copied. Where
ONNX shape inference leaves a tensor's rank or channel count unknown (shapes computed at run time), the shapes
onnxruntime produces on one input fill the gaps, so an op the rules cannot follow hides only its own groups.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from math import gcd

import numpy as np
import onnx

from ..errors import OnnxPruneError
from ..io.graph import initializer_map, opset
from .layout import Layout, Seg, positions, sub, width
from .rules import Unsupported
from .table import RULES


@dataclass
class Member:
    """One tensor slice affected when the group's channels change: channel c ↔ indices
    [offset + b·repeat, offset + (b+1)·repeat) on `axis` for every b = c + t·period, t < tiles, for lo ≤ c < hi.

    `tiles` > 1 only in groups whose channels are tied across the groups of a grouped convolution (ResNeXt, RegNet):
    group channel c then stands for the same position c in every one of the `tiles` blocks of `period` channels."""

    tensor: str  # initializer name, or "group" (role "attr": the node's group attribute)
    axis: int
    role: str  # producer | consumer | bn | const | depthwise | attr | shape
    offset: int = 0
    repeat: int = 1
    node: str = ""
    lo: int = 0  # channel range of the group that reaches this tensor (a Split/Slice may see only part)
    hi: int = -1
    tiles: int = 1
    period: int = 0
    step: int = 0  # indices between consecutive channels when not `repeat` (a branch tied k channels per unit by a
    # channel shuffle: k members, one filter per unit each, `step` = k filters apart — `Tracer._alias`)

    def indices(self, channels: np.ndarray) -> np.ndarray:
        """Axis indices of the given group channels (those outside [lo, hi) are ignored)."""
        c = np.asarray(channels, dtype=np.int64)
        c = c[(c >= self.lo) & (c < self.hi)]
        if self.tiles > 1:
            c = (c[:, None] + self.period * np.arange(self.tiles)).ravel()
        return (self.offset + c[:, None] * (self.step or self.repeat) + np.arange(self.repeat)).ravel()


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
    tiles: int = 1  # channel c stands for channels c + t·size, t < tiles, of every tensor (grouped convolutions)

    @property
    def channels(self) -> int:
        """Channels of the tensors the group spans (size × tiles)."""
        return self.size * self.tiles

    def expand(self, channels) -> np.ndarray:
        """Group channels → the channels of its spaces they stand for (identity unless tiles > 1)."""
        c = np.asarray(channels, dtype=np.int64)
        return np.sort((c[:, None] + self.size * np.arange(self.tiles)).ravel())

    def describe(self) -> str:
        state = "prunable" if self.prunable else f"skipped: {self.reason}"
        size = f"{self.size} ch" if self.tiles == 1 else f"{self.size} ch × {self.tiles} conv groups"
        return f"{self.id} ({size}, {len(self.producers)} producer(s)): {state}"


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
        self.producer_of = {o: n for n in model.graph.node for o in n.output}
        self._first_new = 0
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
        self.period: list[int] = []  # removal must repeat every `period` channels (grouped convolutions)
        self.readers: list[str] = []  # last node that read a tensor carrying the space
        self.weight_use: dict[tuple[str, int], tuple[str, Layout]] = {}  # (weight, axis) → first (node, layout)
        # transformer hook (units/rules_tokens.py): a tensor's channel axis when it is not 1 (tokens [N, T, F] carry
        # their features last); an int, or a rules_tokens descriptor (not an int) where the channels span two axes
        self.axes: dict[str, object] = {}
        self.claimed: set[str] = set()  # nodes a rule already traced as part of a pattern (the channel shuffle)
        self.views: list[tuple[str, Layout]] = []  # tensors holding whole spaces one channel each, read before a
        # Slice / Split / shuffle cuts them: a group's activation when no consumer reads it whole (`groups`)
        self._consumers: dict[str, list[onnx.NodeProto]] | None = None

    # --- queries used by the rules
    def layout(self, t: str) -> Layout | None:
        return self.layouts.get(t)

    def const(self, t: str) -> np.ndarray | None:
        return self.inits.get(t)

    def made_by(self, t: str) -> str:
        """'Op node' that computes tensor t ("" for graph inputs and initializers)."""
        n = self.producer_of.get(t)
        return f"{n.op_type} node '{n.name}'" if n is not None else ""

    def shape(self, t: str) -> list | None:
        if t in self.inits:
            return list(self.inits[t].shape)
        return self.shapes.get(t)

    def rank(self, t: str) -> int | None:
        s = self.shape(t)
        return None if s is None else len(s)

    def producer(self, t: str) -> onnx.NodeProto | None:
        return self.producer_of.get(t)

    def consumers(self, t: str) -> list[onnx.NodeProto]:
        if self._consumers is None:
            self._consumers = {}
            for n in self.model.graph.node:
                for i in dict.fromkeys(n.input):
                    if i:
                        self._consumers.setdefault(i, []).append(n)
        return self._consumers.get(t, [])

    def input_shapes(self, batch: int) -> dict[str, tuple[int, ...]] | None:
        """Concrete shapes of every input with a dynamic batch of `batch` (sequence lengths TOKENS, as in the shape
        run), or None when no input has a dynamic batch or some shape is still unknown (transformer hook: which
        shape values follow the batch)."""
        from ..io.shapes import concrete_inputs, declared

        dims = declared(self.model)
        if not any(d and d[0] is None for d in dims.values()):
            return None
        pinned = {**concrete_inputs(self.model, strict=False), **_token_lengths(self.model)}
        if set(pinned) != set(dims):
            return None
        return {k: ((batch, *v[1:]) if dims[k] and dims[k][0] is None else tuple(v)) for k, v in pinned.items()}

    def claim(self, nodes: list[str]) -> None:
        """A rule traced these later nodes with its own (a pattern): the walk skips them."""
        self.claimed.update(nodes)

    # --- spaces
    def _space(self, size: int, origin: str, reason: str = "") -> int:
        for lst in (self.members, self.producers, self.bns, self.consumed):
            lst.append([])
        self.parent.append(len(self.parent))
        self.sizes.append(size)
        self.period.append(size)
        self.readers.append("")
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
                    self.period[lo] = gcd(self.period[lo], self.period[hi])
                else:
                    self.stop((a, b), f"partial channel ranges coupled at node '{node}'")
        return first

    def tile(self, layout: Layout, period: int, node: str) -> None:
        """Grouped convolution: removal must take the same positions in every block of `period` channels."""
        for p, seg in positions(layout):
            if seg.repeat != 1 or not self._full(seg) or p % period or seg.width % period:
                raise Unsupported(f"channels [{p}, {p + seg.width}) of its input are not whole conv groups of "
                                  f"{period} channels")
            r = self.find(seg.space)
            self.period[r] = gcd(self.period[r], period)

    def _full(self, seg: Seg) -> bool:
        return seg.lo == 0 and seg.hi == self.sizes[seg.space]

    def tie(self, parts: list[Layout], node: str, tensor: str = "") -> Layout:
        """Channel shuffle: position i of every part must be kept or removed together, so the shuffle of the pruned
        tensor stays a permutation of equal parts. Returns the first part's layout, now standing for all of them.

        Parts are cut at every segment boundary and tied piece by piece: the same channels already; two whole
        spaces of one size are merged (as a residual Add merges them); a fresh whole space facing a sub-range (or
        repeated channels) of another is re-expressed over it (`_alias`) — a branch conv's outputs are tied to the
        channels that passed through, pair by pair, block after block (ShuffleNetV2). Anything else is refused.
        `tensor` (the shuffled tensor) is where the channels are read one by one when it holds whole spaces: the
        activation the statistics score them on."""
        w = width(parts[0])
        if any(width(p) != w for p in parts):
            raise Unsupported("channel shuffle of unequal parts")
        cuts = sorted({q for part in parts for q, _ in positions(part)} | {w})
        try:
            pieces = [[sub(part, a, b)[0] for a, b in zip(cuts, cuts[1:])] for part in parts]
        except ValueError as e:
            raise Unsupported(f"channel shuffle cuts inside a flattened channel ({e})") from None
        merges, aliases = [], {}
        for k, ref in enumerate(pieces[0]):
            for part in pieces[1:]:
                a, b = ref, part[k]
                if (self.find(a.space), a.lo, a.hi, a.repeat) == (self.find(b.space), b.lo, b.hi, b.repeat):
                    continue
                if a.repeat == b.repeat and self._full(a) and self._full(b) and a.hi == b.hi and a.space != b.space:
                    merges.append((a, b))
                elif self._fresh(b) and b.repeat == 1 and b.space not in {x.space for x in pieces[0]}:
                    aliases.setdefault(b.space, []).append((b.lo, b.hi, a))
                elif self._fresh(a) and a.repeat == 1 and all(p.space != a.space for p in part):
                    aliases.setdefault(a.space, []).append((a.lo, a.hi, b))
                else:
                    raise Unsupported(f"the channel shuffle ties channels [{a.lo}, {a.hi}) of one space with channels "
                                      f"[{b.lo}, {b.hi}) of another that cannot be removed at the same positions")
        for space, maps in aliases.items():
            if not _covers(sorted((lo, hi) for lo, hi, _ in maps), self.sizes[space]) or any(
                    a.space in aliases for _, _, a in maps):
                raise Unsupported(f"the channel shuffle ties only part of the channels made by "
                                  f"'{self.origin[space]}'")
            for m in self.members[space]:
                if any((max(m.lo, lo) - lo) % a.repeat or (min(m.hi, hi) - lo) % a.repeat
                       for lo, hi, a in maps if max(m.lo, lo) < min(m.hi, hi)):
                    raise Unsupported(f"node '{m.node}' sees channels [{m.lo}, {m.hi}) of a shuffled branch, which "
                                      "are tied in blocks")
            self._translate_all(space, maps, dry=True)
        for a, b in merges:
            self.couple([(a,), (b,)], node)
        for space, maps in aliases.items():
            self._alias(space, maps)
        if tensor in self.layouts:
            self.view(tensor)
        return self._translate(parts[0], aliases)

    def _fresh(self, seg: Seg) -> bool:
        """A whole space no other space was merged into and without conv-group ties: it may be re-expressed."""
        s = seg.space
        return (self.find(s) == s and self.period[s] == self.sizes[s] and not self.reasons[s]
                and not any(self.parent[o] == s for o in range(len(self.parent)) if o != s))

    def _alias(self, space: int, maps: list[tuple[int, int, Seg]]) -> None:
        """Re-express every member of `space` over the channels it is tied to: channels [lo, hi) of `space` ↔
        channels of segment a, `a.repeat` consecutive channels of `space` per channel of a (k members with
        `step`, one per filter of a unit)."""
        for m in self.members[space]:
            for lo, hi, a in maps:
                il, ih = max(m.lo, lo), min(m.hi, hi)
                if il >= ih:
                    continue
                k, q = a.repeat, m.step or m.repeat
                for t in range(k):  # one member per filter of a unit: criteria score filters, not blocks of k
                    self.members[a.space].append(replace(
                        m, offset=m.offset + (lo - a.lo * k + t) * q, step=k * q,
                        lo=a.lo + (il - lo) // k, hi=a.lo + (ih - lo) // k))
        targets = list(dict.fromkeys(a.space for _, _, a in maps))
        for t in targets:
            self.producers[t] += [p for p in self.producers[space] if p not in self.producers[t]]
            self.bns[t] += [b for b in self.bns[space] if b not in self.bns[t]]
        for lst in (self.members, self.producers, self.bns, self.consumed):
            lst[space] = []
        self._translate_all(space, maps)

    def _translate_all(self, space: int, maps: list[tuple[int, int, Seg]], dry: bool = False) -> None:
        """Every recorded layout over `space` rewritten over the channels it is tied to (`dry`: only check)."""
        for t, lay in list(self.layouts.items()):
            if any(s.space == space for s in lay):
                new = self._translate(lay, {space: maps})
                if not dry:
                    self.layouts[t] = new
        for key, (n, lay) in list(self.weight_use.items()):
            if any(s.space == space for s in lay):
                new = self._translate(lay, {space: maps})
                if not dry:
                    self.weight_use[key] = (n, new)

    @staticmethod
    def _translate(layout: Layout, aliases: dict[int, list[tuple[int, int, Seg]]]) -> Layout:
        out = []
        for seg in layout:
            if seg.space not in aliases:
                out.append(seg)
                continue
            for lo, hi, a in aliases[seg.space]:
                il, ih = max(seg.lo, lo), min(seg.hi, hi)
                if il >= ih:
                    continue
                k = a.repeat
                if (il - lo) % k or (ih - lo) % k:
                    raise Unsupported(f"a tensor reads channels [{il}, {ih}) of a shuffled branch, which are tied "
                                      f"{k} by {k}")
                out.append(Seg(a.space, a.lo + (il - lo) // k, a.lo + (ih - lo) // k, seg.repeat * k))
        return tuple(out)

    # --- recording
    def attach(self, tensor: str, axis: int, layout: Layout, role: str, node: str) -> None:
        if role in ("producer", "consumer", "depthwise") and tensor in self.inits and self.inits[tensor].ndim >= 2:
            # one weight read by several layers: their channels must be removed together (never duplicated)
            first = self.weight_use.setdefault((tensor, axis), (node, layout))
            if first[0] != node:
                if [(s.width, s.repeat) for s in first[1]] != [(s.width, s.repeat) for s in layout]:
                    why = (f"weight '{tensor}' is shared by nodes '{first[0]}' and '{node}' whose channels are laid "
                           "out differently")
                    for (t, _), (_, lay) in self.weight_use.items():
                        if t == tensor:
                            self.stop(lay, why)
                    raise Unsupported(why)
                self.couple([first[1], layout], node)
        for p, seg in positions(layout):
            self.members[seg.space].append(
                Member(tensor, axis, role, p - seg.lo * seg.repeat, seg.repeat, node, seg.lo, seg.hi))

    def bn(self, layout: Layout, node: str) -> None:
        for seg in layout:
            self.bns[seg.space].append(node)

    def consume(self, tensor: str, layout: Layout) -> None:
        for seg in layout:
            self.consumed[seg.space].append(tensor)

    def view(self, tensor: str) -> None:
        """`tensor` is about to be cut (Slice, Split, channel shuffle): where its channels are still seen whole."""
        self.views.append((tensor, self.layouts[tensor]))

    def axis(self, t: str) -> object:
        """The channel axis of t (transformer hook): 1 unless a rule said otherwise (`set_axis`)."""
        return self.axes.get(t, 1)

    def set_axis(self, t: str, axis: object) -> None:
        self.axes[t] = axis

    def set(self, t: str, layout: Layout, like: str | None = None, flat_src: str | None = None) -> None:
        if t not in self.axes and like in self.axes:  # an op that keeps the layout keeps the axis (transformer hook)
            self.axes[t] = self.axes[like]
        a = self.axes.get(t, 1)
        shape = self.shape(t)
        if isinstance(a, int) and shape is not None and len(shape) > a >= 1 and isinstance(shape[a], int) \
                and shape[a] != width(layout):
            raise Unsupported(f"inferred {shape[a]} channels for '{t}', rules say {width(layout)}")
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
            if name in self.claimed:
                continue
            feats = [t for t in node.input if t in self.layouts]
            if not feats and not self._embedding(node):
                continue  # computes on constants only
            for t in feats:
                for seg in self.layouts[t]:
                    self.readers[seg.space] = name
            rule = RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            self._first_new = len(self.parent)
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

    def _embedding(self, node: onnx.NodeProto) -> bool:
        """A constant float table gathered by run-time ids (token embeddings): a source of features even when the
        ids carry no layout (a dynamic sequence length)."""
        table = self.inits.get(node.input[0]) if node.op_type == "Gather" and node.input else None
        return (table is not None and table.ndim == 2 and table.dtype.kind == "f" and len(node.input) > 1
                and node.input[1] not in self.inits)

    def _block(self, node: onnx.NodeProto, name: str, feats: list[str], why: str) -> None:
        reason = f"{why} at node '{name}'" if "at node" not in why else why
        for t in feats:
            self.stop(self.layouts[t], reason)
        for s in range(self._first_new, len(self.parent)):  # spaces the rule opened before it gave up
            self.stop((Seg(s, 0, self.sizes[s]),), reason)
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
            size, tiles = self.sizes[root], 1
            if not reason and self.period[root] < size:
                members, reason = _tiled(members, self.period[root])
                size, tiles = self.period[root], self.sizes[root] // self.period[root]
            if not reason and not any(m.role == "consumer" for m in members):
                readers = [self.readers[s] for s in spaces if self.readers[s]]
                reason = (f"no weight layer reads these channels (last read by node '{readers[-1]}')" if readers
                          else "no layer consumes these channels (dead branch)")
            gid = producers[0] if producers else self.origin[root]
            base, k = gid, 2
            while gid in seen:
                gid, k = f"{base}#{k}", k + 1
            seen.add(gid)
            self.group_root[gid] = root
            acts, offs = self._activations(root, [t for s in spaces for t in self.consumed[s]])
            if not self._any_whole(root, acts, offs):  # consumers read parts only (after a Slice / Split / shuffle):
                acts, offs = self._whole_views(root) or (acts, offs)  # the tensor before the cut, where there is one
            out.append(ChannelGroup(gid, size, members, producers,
                                    list(dict.fromkeys(b for s in spaces for b in self.bns[s])),
                                    acts, not reason, reason, offs, tiles))
        return out

    def _whole_views(self, root: int) -> tuple[list[str], list[int]] | None:
        for t, lay in self.views:
            for p, seg in positions(lay):
                if self.find(seg.space) == root and seg.repeat == 1 and self._full(seg):
                    return [t], [p]
        return None

    def _any_whole(self, root: int, acts: list[str], offs: list[int]) -> bool:
        """Whether one of the activations holds the whole group at its offset (a Slice's part does not)."""
        for t, off in zip(acts, offs):
            if any(p == off and self.find(seg.space) == root and self._full(seg)
                   for p, seg in positions(self.layouts.get(t, ()))):
                return True
        return False

    def _activations(self, root: int, consumed: list[str]) -> tuple[list[str], list[int]]:
        acts, offs = [], []
        for t in dict.fromkeys(consumed):
            src = self.flat_src.get(t, t)
            for p, seg in positions(self.layouts.get(src, ())):
                if self.period[root] < self.sizes[root] and not self._full(seg):
                    continue
                if self.find(seg.space) == root and seg.repeat == 1 and (src, p - seg.lo) not in zip(acts, offs):
                    acts.append(src)
                    offs.append(p - seg.lo)
        return acts, offs


def _covers(ranges: list[tuple[int, int]], size: int) -> bool:
    """Sorted [lo, hi) ranges tile [0, size) exactly."""
    end = 0
    for lo, hi in ranges:
        if lo != end:
            return False
        end = hi
    return end == size


def _tiled(members: list[Member], period: int) -> tuple[list[Member], str]:
    """Members of a group tied every `period` channels, re-expressed over its `period` free channels."""
    out = []
    for m in members:
        if m.lo % period or m.hi % period:
            return members, (f"node '{m.node}' sees channels [{m.lo}, {m.hi}) of channels tied every {period} by "
                             "grouped convolutions")
        out.append(replace(m, offset=m.offset + m.lo * m.repeat, lo=0, hi=period, tiles=(m.hi - m.lo) // period,
                           period=period))
    return out, ""


def _shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Tensor name → dims (int, symbolic name, or None), from non-strict shape inference; where inference leaves a
    node output without a rank or with an unknown channel count (shapes computed at run time, e.g. a Slice whose
    bounds come from `Shape`), the shapes onnxruntime produces on one batch-1 input fill the gaps."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_skeleton(model), data_prop=True)
    except Exception:
        inferred = model
    g = inferred.graph
    shapes = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
    inits = {t.name for t in model.graph.initializer}
    missing = [o for n in model.graph.node for o in n.output if o and o not in inits and _unknown(shapes.get(o))]
    if missing:
        shapes.update(_runtime_shapes(model, missing))
    return shapes


_SKELETON_MIN = 4096  # initializers at least this large are declared, not copied, for shape inference


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its large initializers turned into typed graph inputs: shape inference reads only their dims
    (small ones — shape constants, biases — keep their values for data propagation), and serialising a 250 MB model
    for every inference call cost seconds per analysis (alexnet, vgg)."""
    g = model.graph
    big = [t for t in g.initializer if int(np.prod(t.dims, dtype=np.int64)) >= _SKELETON_MIN and t.data_type in
           (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)]
    if not big:
        return model
    names = {t.name for t in big}
    graph = onnx.helper.make_graph(
        list(g.node), g.name,
        [i for i in g.input if i.name not in names]
        + [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in big],
        list(g.output), [t for t in g.initializer if t.name not in names], value_info=list(g.value_info))
    return onnx.helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                                  functions=list(model.functions))


def _unknown(shape: list | None) -> bool:
    return shape is None or any(not isinstance(d, int) for d in shape[1:])


def _runtime_shapes(model: onnx.ModelProto, tensors: list[str]) -> dict[str, list]:
    """Shapes of `tensors` from one onnxruntime run (`io.shapes.runtime_shapes`) at the declared input shapes with a
    dynamic batch of 1; {} when that is not possible. Axis 0 keeps the input's batch symbol where the input's batch
    is dynamic and the tensor's axis 0 is 1, so the rules still see which axis is the batch."""
    from ..io.shapes import concrete_inputs, declared, runtime_shapes

    try:
        pinned = {**concrete_inputs(model, strict=False), **_token_lengths(model)}
        found = runtime_shapes(model, tensors, pinned)
    except Exception:  # best effort: without it the analysis is only more conservative
        return {}
    dynamic = [d for d in declared(model).values() if d and d[0] is None]
    symbol = "N" if dynamic else None
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if dynamic and len(dims) and dims[0].dim_param:
            symbol = dims[0].dim_param
            break
    out = {}
    for t, dims in found.items():
        dims = list(dims)
        if symbol is not None and dims and dims[0] == 1:
            dims[0] = symbol
        out[t] = dims
    return out


TOKENS = 7  # a dynamic non-batch dim (a sequence length) is pinned to this for the shape run: prime and small, so it
# is never mistaken for a channel count, a head count or a head width by the rules


def _token_lengths(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Integer inputs (token ids, attention masks [N, T]) with a dynamic dim after the batch axis: batch 1, TOKENS
    for the others. Float inputs (images with a dynamic size) are left as they were: no shape run."""
    from ..io.shapes import declared

    ints = {i.name for i in model.graph.input if i.type.tensor_type.elem_type in
            (onnx.TensorProto.INT64, onnx.TensorProto.INT32)}
    return {k: (d[0] or 1, *(TOKENS if x is None else x for x in d[1:])) for k, d in declared(model).items()
            if d and None in d[1:] and k in ints}


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
