"""The one table of per-op channel rules: how channels flow through each op type.

Every rule reads the channel layouts of a node's inputs from a `TraceContext` (implemented by `groups.Tracer`),
records which tensor slices depend on which channels (`ctx.attach`), and sets the layouts of the node's outputs. A rule that cannot see
through a node raises `Unsupported`; the tracer then makes every group touching that node unprunable and says why.
Ops missing from `RULES` are treated the same way, so an unknown op never crashes the analysis.

Kinds (one per rule, for the report and the docs):
  pass         channels flow through unchanged (activations, pooling, Cast, Dropout, Pad, Resize, spatial reductions)
  norm         pass-through with per-channel parameters (BatchNormalization: γ, β, mean, var)
  elementwise  feature-map operands are coupled into one group; per-channel constants are members
  producer     Conv / ConvTranspose / Gemm / MatMul: input channels are consumed, output channels start a new group
  (depthwise Conv / ConvTranspose, group == C_in == C_out, is handled by the producer rule: channels pass
               through; weight axis 0, bias and the `group` attribute are members. Grouped, 1 < group < C: `group`
               stays and every conv group keeps the same positions, so input and output groups are tied every
               C/group channels — `TraceContext.tile`; the analysis then offers C/group channels, each standing
               for one position in every conv group)
  index        Concat / Split / Slice on the channel axis, Flatten / Reshape to features: offsets and sub-ranges;
               the channel shuffle Reshape [N, g, C/g, …] → Transpose [0, 2, 1, …] → Reshape back: position i of every
               one of the g parts is tied (`TraceContext.tie`), so the pruned shuffle stays a permutation of equal
               parts; Slice bounds and Shape values computed from the channel count (torch.chunk) are evaluated and
               rewritten as constants
  stop         mixes or reduces the channel axis: groups touching it are unprunable

`fix` functions update shape constants (Split sizes, Slice bounds, Reshape targets — the feature count after
flattening, or C in a Reshape that keeps the shape —, Resize sizes, read against `axes`) after channels
are removed, through a `FixContext` (implemented by `rewrite.channels.Fixer`); they see `kept(tensor)`, the boolean
mask of surviving indices on a tensor's channel axis. The rules are written against these two small Protocols, so
this table imports neither the analysis nor the rewrite that use it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import onnx

from ..io.graph import attr
from .layout import Layout, Seg, flatten, sub, width


class TraceContext(Protocol):
    """What a rule's `trace` may ask and tell the channel analysis."""

    opset: int

    def layout(self, t: str) -> Layout | None: ...
    def const(self, t: str) -> np.ndarray | None: ...
    def made_by(self, t: str) -> str: ...
    def shape(self, t: str) -> list | None: ...
    def rank(self, t: str) -> int | None: ...
    def produce(self, node: str, size: int) -> Layout: ...
    def opaque(self, size: int, reason: str) -> Layout: ...
    def stop(self, layout: Layout, reason: str) -> None: ...
    def couple(self, layouts: list[Layout], node: str) -> Layout: ...
    def tile(self, layout: Layout, period: int, node: str) -> None: ...
    def tie(self, parts: list[Layout], node: str, tensor: str = "") -> Layout: ...
    def producer(self, t: str) -> onnx.NodeProto | None: ...
    def consumers(self, t: str) -> list[onnx.NodeProto]: ...
    def claim(self, nodes: list[str]) -> None: ...
    def view(self, tensor: str) -> None: ...
    def attach(self, tensor: str, axis: int, layout: Layout, role: str, node: str) -> None: ...
    def bn(self, layout: Layout, node: str) -> None: ...
    def consume(self, tensor: str, layout: Layout) -> None: ...
    def set(self, t: str, layout: Layout, like: str | None = None, flat_src: str | None = None) -> None: ...


class FixContext(Protocol):
    """What a rule's `fix` may ask and change when channels are removed."""

    opset: int

    def const(self, t: str) -> np.ndarray: ...
    def rank(self, t: str) -> int | None: ...
    def shape(self, t: str) -> list | None: ...
    def producer(self, t: str) -> onnx.NodeProto | None: ...
    def kept(self, t: str) -> np.ndarray: ...
    def set_input(self, node: onnx.NodeProto, i: int, value: np.ndarray, new_name: str | None = None) -> None: ...
    def set_attr(self, node: onnx.NodeProto, name: str, value) -> None: ...
    def del_attr(self, node: onnx.NodeProto, name: str) -> None: ...


class Unsupported(Exception):
    """This node cannot be seen through; its groups become unprunable with this message as the reason."""


@dataclass(frozen=True)
class OpRule:
    kind: str
    trace: Callable[[TraceContext, onnx.NodeProto, str], None]
    fix: Callable[[FixContext, onnx.NodeProto], None] | None = None




def _inp(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _x(ctx: TraceContext, node: onnx.NodeProto) -> Layout:
    layout = ctx.layout(node.input[0])
    if layout is None:
        raise Unsupported("its data input has no channel axis we can follow")
    return layout


def _const(ctx: TraceContext, name: str, what: str) -> np.ndarray:
    v = ctx.const(name)
    if v is None:
        by = ctx.made_by(name) if hasattr(ctx, "made_by") else ""
        raise Unsupported(f"{what} '{name}' is not a constant" + (f" (computed by {by})" if by else ""))
    return v


def _axis(axis: int, rank: int | None) -> int:
    if axis < 0:
        if rank is None:
            raise Unsupported("negative axis on a tensor of unknown rank")
        axis += rank
    return axis


# ---------------------------------------------------------------------------------------------------- pass-through
def pass_through(ctx: TraceContext, node: onnx.NodeProto, name: str) -> None:
    layout = _x(ctx, node)
    for t in node.input[1:]:
        if t and ctx.layout(t) is not None:
            raise Unsupported("a parameter input depends on the feature maps")
    for out in node.output:
        if out:
            ctx.set(out, layout, like=node.input[0])


def _norm(role: str, record_bn: bool) -> Callable:
    def trace(ctx: TraceContext, node: onnx.NodeProto, name: str) -> None:
        layout = _x(ctx, node)
        if any(o for o in node.output[1:]):
            raise Unsupported("training-mode normalisation")
        params = [t for t in node.input[1:] if t]
        for t in params:
            v = _const(ctx, t, "normalisation parameter")
            if v.ndim != 1 or v.shape[0] != width(layout):
                raise Unsupported(f"parameter '{t}' is not per-channel")
        for t in params:
            ctx.attach(t, 0, layout, role, name)
        if record_bn:
            ctx.bn(layout, name)
        ctx.set(node.output[0], layout, like=node.input[0])
    return trace


def reduce_spatial(ctx: TraceContext, node: onnx.NodeProto, name: str) -> None:
    """Reductions over spatial axes only (e.g. ReduceMean over H, W) keep the channel axis."""
    axes = attr(node, "axes")
    if axes is None and _inp(node, 1):
        axes = _const(ctx, node.input[1], "axes").tolist()
    if not axes:
        raise Unsupported("reduces over all axes, including channels")
    rank = ctx.rank(node.input[0])
    axes = {_axis(a, rank) for a in axes}
    if 0 in axes or 1 in axes:
        raise Unsupported("reduces over the batch or channel axis")
    ctx.set(node.output[0], _x(ctx, node), like=node.input[0])


def pad(ctx: TraceContext, node: onnx.NodeProto, name: str) -> None:
    layout = _x(ctx, node)
    rank = ctx.rank(node.input[0])
    pads = attr(node, "pads")
    if pads is None:
        pads = _const(ctx, node.input[1], "pads").tolist()
    axes = list(range(rank)) if not _inp(node, 3) else [_axis(a, rank) for a in _const(ctx, node.input[3], "axes")]
    if 1 in axes:
        k = axes.index(1)
        if pads[k] != 0 or pads[k + len(axes)] != 0:
            raise Unsupported("pads the channel axis")
    if _inp(node, 2) and ctx.layout(node.input[2]) is not None:
        raise Unsupported("pad value depends on the feature maps")
    ctx.set(node.output[0], layout, like=node.input[0])


def _resize_axes(ctx: TraceContext | FixContext, node: onnx.NodeProto) -> list[int]:
    """The axes `scales` / `sizes` refer to: the `axes` attribute (opset 18+), else every axis."""
    rank = ctx.rank(node.input[0])
    axes = attr(node, "axes")
    if axes is None:
        if rank is None:
            raise Unsupported("rank of the resized tensor unknown")
        return list(range(rank))
    return [_axis(int(a), rank) for a in axes]


def resize(ctx: TraceContext, node: onnx.NodeProto, name: str) -> None:
    layout = _x(ctx, node)
    scales = _inp(node, 2) if node.op_type == "Resize" else _inp(node, 1)
    sizes = _inp(node, 3) if node.op_type == "Resize" else ""
    if _inp(node, 1) and node.op_type == "Resize" and ctx.layout(node.input[1]) is not None:
        raise Unsupported("roi depends on the feature maps")
    axes = _resize_axes(ctx, node) if node.op_type == "Resize" else list(range(ctx.rank(node.input[0]) or 0))
    if 1 not in axes:  # the channel axis is not resized: nothing on it to check or rewrite
        return ctx.set(node.output[0], layout, like=node.input[0])
    k = axes.index(1)
    if scales:
        s = _const(ctx, scales, "scales")
        if s.size:
            if s.size != len(axes):
                raise Unsupported("scales do not match the resized axes")
            if s[k] != 1:
                raise Unsupported("resizes the channel axis")
    if sizes:
        v = _const(ctx, sizes, "sizes")
        if v.size != len(axes) or v[k] != width(layout):
            raise Unsupported("resizes the channel axis")
        ctx.attach(sizes, 0, layout, "shape", name)
    ctx.set(node.output[0], layout, like=node.input[0])


def fix_resize(fx: FixContext, node: onnx.NodeProto) -> None:
    if node.op_type == "Resize" and _inp(node, 3):
        axes = _resize_axes(fx, node)
        if 1 in axes:
            v = fx.const(node.input[3]).copy()
            v[axes.index(1)] = fx.kept(node.output[0]).sum()
            fx.set_input(node, 3, v)


# ---------------------------------------------------------------------------------------------------- elementwise
def elementwise(ctx: TraceContext, node: onnx.NodeProto, name: str) -> None:
    """Add/Sub/Mul/Div/...: feature operands couple (residual Add, SE Mul); constants are per-channel or not."""
    out = node.output[0]
    rank = ctx.rank(out)
    shape = ctx.shape(out)
    if rank is None or rank < 2 or not isinstance(shape[1], int):
        raise Unsupported("output rank or channel count unknown")
    c = shape[1]
    feats, consts = [], []
    for t in node.input:
        if not t:
            continue
        layout, value = ctx.layout(t), ctx.const(t)
        if layout is not None:
            if ctx.rank(t) != rank:
                raise Unsupported("operands of different rank")
            if width(layout) == c:
                feats.append((t, layout))
            elif width(layout) == 1:
                ctx.stop(layout, f"broadcast over the channel axis at node '{name}'")
            else:
                raise Unsupported("operand channel counts differ")
        elif value is not None:
            consts.append((t, value))
        else:  # computed from constants only: fine unless it varies along the channel axis
            s = ctx.shape(t)
            a = None if s is None else 1 - (rank - len(s))
            if s is None or (a >= 0 and s[a] != 1):
                raise Unsupported(f"operand '{t}' is per-channel but not a constant initializer")
    if not feats:
        raise Unsupported("no operand carries the output channels")
    layout = ctx.couple([f[1] for f in feats], name)
    for t, v in consts:
        a = 1 - (rank - v.ndim)
        if a < 0 or v.shape[a] == 1:
            continue  # scalar along channels
        if v.shape[a] != c:
            raise Unsupported(f"constant '{t}' does not broadcast per channel")
        ctx.attach(t, a, layout, "const", name)
    ctx.set(out, layout, like=feats[0][0])


# ---------------------------------------------------------------------------------------------------- producers
def _bias(ctx: TraceContext, node: onnx.NodeProto, i: int, layout: Layout, role: str, name: str) -> None:
    t = _inp(node, i)
    if not t:
        return
    v = _const(ctx, t, "bias")
    if v.ndim == 0 or (v.shape[-1] == 1 and width(layout) != 1):  # broadcast bias: nothing to slice
        return
    if v.shape[-1] != width(layout) or any(d != 1 for d in v.shape[:-1]):
        raise Unsupported(f"bias '{t}' is not per output channel")
    ctx.attach(t, v.ndim - 1, layout, role, name)


def conv(ctx: TraceContext, node: onnx.NodeProto, name: str) -> None:
    """Conv W [M, C/g, k...]; ConvTranspose W [C, M/g, k...]; any kernel rank (Conv1d / 2d / 3d).

    group == 1: input channels are consumed, output channels open a new group. Depthwise (group == C == M):
    channels pass through; weight axis 0, bias and `group` are members. Grouped (1 < group < C, ResNeXt, RegNet):
    `group` stays; every conv group keeps the same positions of its input and output channels, so input channel c
    is weight input slot c mod C/g and the input group (and likewise the output group) is tied every C/g (M/g)
    channels (`TraceContext.tile`)."""
    layout = _x(ctx, node)
    w = _const(ctx, node.input[1], "weight")
    g = attr(node, "group", 1)
    transposed = node.op_type == "ConvTranspose"
    cin = w.shape[0] if transposed else w.shape[1] * g
    m = w.shape[1] * g if transposed else w.shape[0]
    if cin != width(layout):
        raise Unsupported("weight does not match the input channels")
    in_axis, out_axis = (0, 1) if transposed else (1, 0)
    if g == 1:
        ctx.attach(node.input[1], in_axis, layout, "consumer", name)
        ctx.consume(node.input[0], layout)
        out = ctx.produce(name, m)
        ctx.attach(node.input[1], out_axis, out, "producer", name)
        _bias(ctx, node, 2, out, "producer", name)
    elif g == cin == m:
        out = layout
        ctx.attach(node.input[1], 0, out, "depthwise", name)
        _bias(ctx, node, 2, out, "depthwise", name)
        ctx.attach("group", -1, out, "attr", name)
    else:
        cg_in, cg_out = cin // g, m // g
        ctx.tile(layout, cg_in, name)
        if transposed:  # W [C, M/g, k]: input channel c is row c; output slot j of every group is column j
            ctx.attach(node.input[1], 0, layout, "consumer", name)
        else:  # input channel c (aligned to the groups) is weight column c mod C/g
            for seg in layout:
                ctx.attach(node.input[1], 1, (Seg(seg.space, seg.lo, seg.lo + cg_in),), "consumer", name)
        ctx.consume(node.input[0], layout)
        out = ctx.produce(name, m)
        ctx.tile(out, cg_out, name)
        if transposed:
            ctx.attach(node.input[1], 1, (Seg(out[0].space, 0, cg_out),), "producer", name)
        else:
            ctx.attach(node.input[1], 0, out, "producer", name)
        _bias(ctx, node, 2, out, "producer", name)
    ctx.set(node.output[0], out)


def gemm(ctx: TraceContext, node: onnx.NodeProto, name: str) -> None:
    """Gemm: A [N, K] features, B [K, M] (or [M, K] with transB); MatMul: 2-D features × constant [K, M]."""
    layout = _x(ctx, node)
    if ctx.rank(node.input[0]) != 2 or attr(node, "transA", 0):
        raise Unsupported("only [N, K] feature inputs are followed")
    if ctx.layout(node.input[1]) is not None:
        raise Unsupported("both operands are feature maps")
    w = _const(ctx, node.input[1], "weight")
    if w.ndim != 2:
        raise Unsupported("weight is not a matrix")
    trans = attr(node, "transB", 0) if node.op_type == "Gemm" else 0
    in_axis, out_axis = (1, 0) if trans else (0, 1)
    if w.shape[in_axis] != width(layout):
        raise Unsupported("weight does not match the input features")
    ctx.attach(node.input[1], in_axis, layout, "consumer", name)
    ctx.consume(node.input[0], layout)
    out = ctx.produce(name, w.shape[out_axis])
    ctx.attach(node.input[1], out_axis, out, "producer", name)
    if node.op_type == "Gemm":
        _bias(ctx, node, 2, out, "producer", name)
    ctx.set(node.output[0], out)


# ---------------------------------------------------------------------------------------------------- index mapping
def concat(ctx: TraceContext, node: onnx.NodeProto, name: str) -> None:
    """On the channel axis: output = input layouts end to end (DenseNet). Elsewhere: inputs are coupled."""
    rank = ctx.rank(node.output[0])
    if _axis(attr(node, "axis"), rank) != 1:
        feats = [ctx.layout(t) for t in node.input]
        if any(f is None for f in feats):
            raise Unsupported("concatenates constants with feature maps")
        ctx.set(node.output[0], ctx.couple(feats, name))
        return
    parts: list = []
    for t in node.input:
        layout = ctx.layout(t)
        if layout is None:  # constant channels: their own unprunable group
            shape = ctx.shape(t)
            if shape is None or not isinstance(shape[1], int):
                raise Unsupported(f"channel count of '{t}' unknown")
            layout = ctx.opaque(shape[1], f"constant channels '{t}' concatenated at node '{name}'")
        parts.extend(layout)
    ctx.set(node.output[0], tuple(parts))


def split(ctx: TraceContext, node: onnx.NodeProto, name: str) -> None:
    layout = _x(ctx, node)
    if _axis(attr(node, "axis", 0), ctx.rank(node.input[0])) != 1:
        return pass_through(ctx, node, name)
    ctx.view(node.input[0])
    start = 0
    for out in node.output:
        shape = ctx.shape(out)
        if shape is None or not isinstance(shape[1], int):
            raise Unsupported("split sizes unknown")
        try:
            ctx.set(out, sub(layout, start, start + shape[1]), like=node.input[0])
        except ValueError:
            raise Unsupported(_CUT_INSIDE) from None
        start += shape[1]
    ctx.attach(_inp(node, 1) or "split", 0, layout, "shape", name)


def fix_split(fx: FixContext, node: onnx.NodeProto) -> None:
    sizes = np.array([fx.kept(o).sum() for o in node.output], dtype=np.int64)
    if fx.opset < 13:
        fx.set_attr(node, "split", sizes.tolist())
        return
    fx.del_attr(node, "num_outputs")
    if _inp(node, 1):
        fx.set_input(node, 1, sizes)
    else:
        fx.set_input(node, 1, sizes, new_name=f"{node.output[0]}__split")


_CUT_INSIDE = ("cuts the channel axis inside a block of positions removed together (a flattened channel, or a unit "
               "tied by k channel shuffles, 2^k positions: a stage with more units than halvings of its width)")


def _slice_args(ctx: TraceContext | FixContext, node: onnx.NodeProto) -> list[np.ndarray]:
    """starts, ends, axes, steps; starts / ends may be computed from the channel count (`shape_value`)."""
    def arg(i: int) -> np.ndarray:
        v = shape_value(ctx, node.input[i]) if i in (1, 2) else None
        return v if v is not None else _const(ctx, node.input[i], "slice argument")
    n = len(arg(1))
    return [arg(i) if _inp(node, i) else (np.arange(n) if i == 3 else np.ones(n, dtype=np.int64))
            for i in (1, 2, 3, 4)]


def _maybe_const(ctx: TraceContext | FixContext, t: str) -> np.ndarray | None:
    try:
        return ctx.const(t)
    except KeyError:  # FixContext: not an initializer
        return None


_SHAPE_ARITH = ("Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Add", "Sub", "Mul", "Div", "Floor",
                "Ceil", "Identity", "Slice")


def shape_value(ctx: TraceContext | FixContext, t: str) -> np.ndarray | None:
    """The value of an integer tensor computed from constants and the channel counts of feature maps (torch.chunk's
    `Shape → Gather → Add → Div → Mul` bounds), or None: a constant's value as is; a computed value only when it
    does not change with the batch and spatial sizes (evaluated twice, once with every other dim replaced)."""
    v = _maybe_const(ctx, t)
    if v is not None or ctx.producer(t) is None:
        return v
    a, b = _evaluate(ctx, t, False, 0), _evaluate(ctx, t, True, 0)
    if a is None or b is None or a.shape != b.shape or not np.array_equal(a, b) or a.dtype.kind not in "iu":
        return None
    return a.astype(np.int64)


def _evaluate(ctx: TraceContext | FixContext, t: str, vary: bool, depth: int,
              channels: tuple[str, int] | None = None) -> np.ndarray | None:
    """`vary`: every dim but the channels replaced; `channels` (tensor, C): that tensor's channel count replaced."""
    v = _maybe_const(ctx, t)
    if v is not None:
        return np.asarray(v)
    n = ctx.producer(t)
    if n is None or depth > 32 or n.op_type not in _SHAPE_ARITH or n.domain not in ("", "ai.onnx"):
        return None
    if n.op_type == "Shape":
        dims = ctx.shape(n.input[0])
        if dims is None or len(dims) < 2 or not isinstance(dims[1], int):
            return None
        dims = [d if i == 1 else (13 + 2 * i if vary else d if isinstance(d, int) else 1) for i, d in enumerate(dims)]
        if channels is not None and n.input[0] == channels[0]:
            dims[1] = channels[1]
        start, end = attr(n, "start", 0), attr(n, "end", len(dims))
        return np.array(dims, dtype=np.int64)[start:end]
    ins = [_evaluate(ctx, i, vary, depth + 1, channels) if i else None for i in n.input]
    if ins[0] is None or any(x is None for x, i in zip(ins, n.input) if i):
        return None
    x = ins[0]
    op = n.op_type
    try:
        if op == "Identity":
            return x
        if op == "Cast":
            return x.astype(onnx.helper.tensor_dtype_to_np_dtype(attr(n, "to")))
        if op == "Gather":
            return np.take(x, ins[1], axis=attr(n, "axis", 0))
        if op in ("Unsqueeze", "Squeeze"):
            axes = attr(n, "axes") if len(n.input) < 2 else ins[1].tolist()
            if op == "Squeeze":
                return np.squeeze(x, axis=None if axes is None else tuple(axes))
            for a in sorted(_axis(int(a), x.ndim + len(axes)) for a in axes):
                x = np.expand_dims(x, a)
            return x
        if op == "Concat":
            return np.concatenate(ins, axis=attr(n, "axis"))
        if op == "Slice" and x.ndim == 1:
            s0, e0 = int(ins[1].reshape(-1)[0]), int(ins[2].reshape(-1)[0])
            step = int(ins[4].reshape(-1)[0]) if len(ins) > 4 and ins[4] is not None else 1
            return x[s0:e0:step]
        if op in ("Floor", "Ceil"):
            return np.floor(x) if op == "Floor" else np.ceil(x)
        y = ins[1]
        if op == "Div":
            return np.trunc(x / y).astype(np.result_type(x, y)) if x.dtype.kind in "iu" else x / y
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op](x, y)
    except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError):
        return None


def _slice_bounds(start: int, end: int, dim: int) -> tuple[int, int]:
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    return min(max(start, 0), dim), min(max(end, 0), dim)


def slice_(ctx: TraceContext, node: onnx.NodeProto, name: str) -> None:
    layout = _x(ctx, node)
    rank = ctx.rank(node.input[0])
    if _inp(node, 3) and ctx.const(node.input[3]) is not None:
        if 1 not in [_axis(int(a), rank) for a in ctx.const(node.input[3]).ravel()]:
            return pass_through(ctx, node, name)  # spatial slice: its bounds may be computed
    for i in (1, 2):
        if shape_value(ctx, node.input[i]) is None:
            by = ctx.made_by(node.input[i])
            raise Unsupported("slices the channel axis at bounds computed at run time from more than the channel "
                              f"count ('{node.input[i]}'{', computed by ' + by if by else ''})")
    starts, ends, axes, steps = _slice_args(ctx, node)
    axes = [_axis(int(a), rank) for a in axes]
    if 1 not in axes:
        return pass_through(ctx, node, name)
    k = axes.index(1)
    if steps[k] != 1:
        raise Unsupported("strided slice of the channel axis")
    ctx.view(node.input[0])
    s, e = _slice_bounds(int(starts[k]), int(ends[k]), width(layout))
    try:
        ctx.set(node.output[0], sub(layout, s, e), like=node.input[0])
    except ValueError:
        raise Unsupported(_CUT_INSIDE) from None
    for i in (1, 2):
        ctx.attach(node.input[i], 0, layout, "shape", name)


def fix_slice(fx: FixContext, node: onnx.NodeProto) -> None:
    starts, ends, axes, _ = _slice_args(fx, node)
    kept = fx.kept(node.input[0])
    k = [_axis(int(a), fx.rank(node.input[0])) for a in axes].index(1)
    s, e = _slice_bounds(int(starts[k]), int(ends[k]), len(kept))
    starts, ends = starts.copy(), ends.copy()
    starts[k], ends[k] = kept[:s].sum(), kept[:e].sum()
    for i, v in ((1, starts), (2, ends)):  # bounds computed from the channel count become constants
        computed = _maybe_const(fx, node.input[i]) is None
        fx.set_input(node, i, v, new_name=f"{node.name}__{'starts' if i == 1 else 'ends'}" if computed else None)


def flatten_(ctx: TraceContext, node: onnx.NodeProto, name: str) -> None:
    """Flatten(axis=1) / Reshape [N, C, H, W] → [N, C·H·W]: channel c ↔ features [c·hw, (c+1)·hw).
    A Reshape that keeps the shape passes channels through; when its target holds C (e.g. [0, C, H, W] or
    [-1, C, 7, 7]) that entry is rewritten."""
    layout = _x(ctx, node)
    src, out = ctx.shape(node.input[0]), ctx.shape(node.output[0])
    if src is None or out is None:
        raise Unsupported("shapes unknown")
    if node.op_type == "Flatten" and _axis(attr(node, "axis", 1), len(src)) != 1:
        raise Unsupported("flattens the channel axis into the batch axis")
    if node.op_type == "Reshape":
        if len(out) == len(src) and len(out) >= 2 and out[1] == src[1] and list(out[2:]) == list(src[2:]):
            target = ctx.const(node.input[1])
            if target is None:
                raise Unsupported("target shape is computed at run time and may hold the channel count")
            if target.size > 1 and target[1] > 0:
                ctx.attach(node.input[1], 0, layout, "shape", name)
            return ctx.set(node.output[0], layout, like=node.input[0])
        if len(out) == len(src) + 1 and all(isinstance(d, int) for d in (src[1], out[1], out[2])) \
                and out[1] * out[2] == src[1] and list(out[3:]) == list(src[2:]):
            chain = shuffle_chain(ctx, node)
            if chain is None:
                raise Unsupported(f"splits the channel axis into {out[1]} × {out[2]} ({_dims(src)} → {_dims(out)}) "
                                  "without the Transpose [0, 2, 1, …] → Reshape back of a channel shuffle")
            return _shuffle(ctx, node, name, layout, *chain)
        if len(out) != 2 or out[0] != src[0]:
            raise Unsupported(f"reshapes the channel axis ({_dims(src)} → {_dims(out)})")
        _const(ctx, node.input[1], "target shape")
        ctx.attach(node.input[1], 0, layout, "shape", name)
    if not all(isinstance(d, int) for d in src[2:]):
        raise Unsupported("spatial size unknown")
    hw = int(np.prod(src[2:], dtype=np.int64))
    ctx.set(node.output[0], flatten(layout, hw), like=node.input[0], flat_src=node.input[0])


def shuffle_chain(ctx: TraceContext, node: onnx.NodeProto) -> tuple[onnx.NodeProto, onnx.NodeProto, int] | None:
    """(Transpose, Reshape back, g) when `node` is the first Reshape of a channel shuffle: [N, C, …] → [N, g, C/g, …]
    → Transpose [0, 2, 1, …] → [N, C, …], each read by the next op only; else None."""
    src, out = ctx.shape(node.input[0]), ctx.shape(node.output[0])
    if src is None or out is None or len(out) != len(src) + 1 or len(src) < 3 or not all(
            isinstance(d, int) for d in (src[1], out[1], out[2])) or out[1] * out[2] != src[1] or out[1] < 2:
        return None
    nxt = ctx.consumers(node.output[0])
    if len(nxt) != 1 or nxt[0].op_type != "Transpose" or attr(nxt[0], "perm") != [0, 2, 1, *range(3, len(out))]:
        return None
    back = ctx.consumers(nxt[0].output[0])
    if len(back) != 1 or back[0].op_type != "Reshape" or back[0].input[0] != nxt[0].output[0]:
        return None
    shape = ctx.shape(back[0].output[0])
    if shape is None or list(shape[1:]) != list(src[1:]):
        return None
    return nxt[0], back[0], int(out[1])


def _shuffle(ctx: TraceContext, node: onnx.NodeProto, name: str, layout: Layout, transpose: onnx.NodeProto,
             back: onnx.NodeProto, g: int) -> None:
    """Channel shuffle: out[i·g + j] = in[j·C/g + i]. The g parts are tied position by position, so the output is
    the first part with every channel repeated g times; the Transpose and the Reshape back are traced here."""
    w = width(layout) // g
    other = width(layout) + 2 * g  # another channel count: a computed target must follow it
    try:
        for r, pos, value in ((node, 2, other // g), (back, 1, other)):
            if ctx.const(r.input[1]) is None:
                v = _evaluate(ctx, r.input[1], False, 0, (node.input[0], other))
                if v is None or v.ndim != 1 or len(v) <= pos or v[pos] != value:
                    raise Unsupported(f"the channel shuffle's Reshape '{r.name}' target is computed at run time "
                                      f"from more than the channel count of '{node.input[0]}'")
        part = ctx.tie([sub(layout, j * w, (j + 1) * w) for j in range(g)], name, node.input[0])
    except (Unsupported, ValueError) as e:
        ctx.stop(layout, f"{e} at node '{name}'")  # the reason the report gives, whatever other rule tries next
        raise Unsupported(str(e)) from None
    tied = ctx.layout(node.input[0])
    for r in (node, back):
        if ctx.const(r.input[1]) is not None:  # a constant target holds C / g or C: rewritten (fix_reshape)
            ctx.attach(r.input[1], 0, tied, "shape", r.name)
    ctx.claim([transpose.name, back.name])
    ctx.set(back.output[0], tuple(replace(s, repeat=s.repeat * g) for s in part), like=node.input[0])


def _dims(shape: list) -> str:
    return "[" + ", ".join("N" if i == 0 else str(d) if isinstance(d, int) else "?" for i, d in enumerate(shape)) + "]"


def fix_reshape(fx: FixContext, node: onnx.NodeProto) -> None:
    """Entry 1 of the target ([N, features] after flattening, or C of a reshape that keeps the channels); entry 2
    (C/g) of a channel shuffle's [N, g, C/g, …]."""
    shape = fx.const(node.input[1]).copy()
    if shape.size == (fx.rank(node.input[0]) or 0) + 1 and shape.size >= 4:  # the shuffle's first Reshape
        if shape[2] > 0:
            g = fx.shape(node.output[0])[1]
            shape[2] = fx.kept(node.input[0]).sum() // g
            fx.set_input(node, 1, shape)
        return
    if shape.size >= 2 and shape[1] > 0:
        shape[1] = fx.kept(node.output[0]).sum()
        fx.set_input(node, 1, shape)


def shape_of(ctx: TraceContext, node: onnx.NodeProto, name: str) -> None:
    """Shape of a feature map: harmless when its values only reach the bounds of a Slice of the same tensor
    (torch.chunk: evaluated and rewritten as constants) or the targets of a channel shuffle of it (the pruned
    shuffle keeps equal parts, so C and C/g read at run time stay right). Anything else may compute with C."""
    x = node.input[0]
    for n, i in _shape_sinks(ctx, node.output[0]):
        if n.op_type == "Slice" and i in (1, 2) and n.input[0] == x and _channel_only(ctx, n):
            continue
        if n.op_type == "Reshape" and i == 1 and _shuffles(ctx, n, x):
            continue
        raise Unsupported(_STOPS["Shape"] + f" (its value reaches input {i} of {n.op_type} node '{n.name}')")


def _channel_only(ctx: TraceContext, node: onnx.NodeProto) -> bool:
    """A Slice whose constant axes are the channel axis alone (its bounds are then rewritten by `fix_slice`)."""
    axes = ctx.const(_inp(node, 3)) if _inp(node, 3) else None
    return axes is not None and [_axis(int(a), ctx.rank(node.input[0])) for a in axes.ravel()] == [1]


def _shape_sinks(ctx: TraceContext, t: str) -> list[tuple[onnx.NodeProto, int]]:
    """(node, input index) where values computed from t stop being shape arithmetic."""
    out, todo, seen = [], [t], set()
    while todo and len(seen) < 256:
        u = todo.pop()
        if u in seen:
            continue
        seen.add(u)
        for n in ctx.consumers(u):
            for i, v in enumerate(n.input):
                if v != u:
                    continue
                arith = n.op_type in _SHAPE_ARITH and n.op_type != "Shape" and (
                    n.op_type not in ("Slice", "Gather") or i == 0)
                if arith and not any(ctx.layout(o) is not None for o in n.input if o and o != u):  # no feature map
                    todo.extend(o for o in n.output if o)
                else:
                    out.append((n, i))
    return out if not todo else [(ctx.producer(t), 0)]


def _shuffles(ctx: TraceContext, reshape: onnx.NodeProto, x: str) -> bool:
    """Whether `reshape` is the first or the last Reshape of a channel shuffle of x."""
    if reshape.input[0] == x and shuffle_chain(ctx, reshape) is not None:
        return True
    t = ctx.producer(reshape.input[0])
    first = ctx.producer(t.input[0]) if t is not None and t.op_type == "Transpose" else None
    chain = shuffle_chain(ctx, first) if first is not None and first.op_type == "Reshape" and first.input[0] == x \
        else None
    return chain is not None and chain[1].name == reshape.name


# ---------------------------------------------------------------------------------------------------- stops
def stop(why: str) -> Callable:
    def trace(ctx: TraceContext, node: onnx.NodeProto, name: str) -> None:
        raise Unsupported(why)
    return trace


_PASS = ("Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Elu", "Selu", "Celu",
         "Softplus", "Softsign", "Gelu", "Mish", "Erf", "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor",
         "Ceil", "Round", "Sign", "ThresholdedRelu", "Identity", "Dropout", "Cast",
         "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
_ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow", "PRelu")
_REDUCE = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL1", "ReduceL2", "ReduceProd",
           "ReduceLogSumExp", "ReduceSumSquare")
_STOPS = {
    "Softmax": "normalises across channels", "LogSoftmax": "normalises across channels",
    "Hardmax": "mixes channels", "LayerNormalization": "normalises across channels",
    "LRN": "normalises across neighbouring channels", "Transpose": "moves the channel axis",
    "Shape": "reads the channel count (Shape: the shape arithmetic after it sees C)",
    "DepthToSpace": "mixes channels with space",
    "SpaceToDepth": "mixes channels with space", "ArgMax": "reduces the channel axis",
}

RULES: dict[str, OpRule] = {
    **{op: OpRule("pass", pass_through) for op in _PASS},
    **{op: OpRule("pass", reduce_spatial) for op in _REDUCE},
    "Pad": OpRule("pass", pad),
    "Resize": OpRule("pass", resize, fix_resize),
    "Upsample": OpRule("pass", resize),
    "BatchNormalization": OpRule("norm", _norm("bn", record_bn=True)),
    "InstanceNormalization": OpRule("norm", _norm("const", record_bn=False)),
    **{op: OpRule("elementwise", elementwise) for op in _ELEMENTWISE},
    "Conv": OpRule("producer", conv),
    "ConvTranspose": OpRule("producer", conv),
    "Gemm": OpRule("producer", gemm),
    "MatMul": OpRule("producer", gemm),
    "Concat": OpRule("index", concat),
    "Split": OpRule("index", split, fix_split),
    "Slice": OpRule("index", slice_, fix_slice),
    "Flatten": OpRule("index", flatten_),
    "Reshape": OpRule("index", flatten_, fix_reshape),
    "Shape": OpRule("index", shape_of),
    **{op: OpRule("stop", stop(why)) for op, why in _STOPS.items() if op != "Shape"},
}
