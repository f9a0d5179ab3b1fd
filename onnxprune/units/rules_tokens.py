"""Channel rules for transformer graphs: tokens [N, T, F] with the features on the LAST axis, attention heads.

The rest of the tool follows channels on axis 1 (NCHW). Here every tensor may carry its channels on another axis:
the tracer keeps that axis per tensor (`Tracer.axes`, read and written through `axis` / `set_axis`; an op that
keeps the layout keeps the axis). The table below wraps every rule of `rules.RULES`: a node whose feature inputs
are all on axis 1 goes to the original rule unchanged; a node that reads features on another axis goes to a
token-aware rule here, or (ops that are safe element by element) through unchanged, or is refused with a reason.

What is followed
  MLP width           MatMul/Gemm with a constant 2-D weight on [.., F] features → bias Add → activation (Gelu, Relu,
                      the Erf form of GELU) → MatMul: the hidden width is one group (producer columns, bias, consumer
                      rows), whatever the rank of the token tensor ([N, T, F] ViT/BERT, [N, H, W, C] Swin/ConvNeXt).
  attention heads     a projection whose output is reshaped into heads ([.., H·dh] → [.., H, dh], or the packed
                      [.., 3·H·dh] → [.., 3, H, dh]) opens H channels of dh features each (`Seg.repeat` = dh), so a
                      channel is a whole head. Transpose moves the head axis, Gather picks q / k / v out of the packed
                      tensor, q·kᵀ and attn·v couple q, k and v head by head (MatMul of two feature tensors whose
                      channels sit on a batch axis), Softmax over keys passes, the merge Reshape [.., H, dh] →
                      [.., H·dh] turns heads back into dh-feature blocks read by the output projection (consumer).
                      The Reshape targets holding H (or H·dh) are rewritten (`fix_token_reshape`), also when the
                      target is a Concat (nested ones followed) of constant pieces (HF-style `x.size()[:-1] + (H, dh)`;
                      a Concat several Reshapes share, as dynamo exports, is copied per Reshape) or of values computed
                      from Shape at run time: the entry on the channel axis must then be the channel count at batch 1
                      and 2 (replaced by the kept count) or batch × the count through `Mul(B, H)` (that Mul, copied,
                      multiplies by the kept count) — told apart by one onnxruntime run at batch 2 (`_at_batch_2`).
  Hugging Face        dynamic sequence length (shapes taken at TOKENS tokens, `groups._token_lengths`), embedding
                      Gathers as sources; GPT-2's Conv1D: tokens flattened into rows [B·T, F] → Gemm → rows back, its
                      `x.view(-1, x.size(-1))` target read from the tensor's own Shape, q / k / v `Split` out of one
                      projection, the causal mask's `Where`.
  nn.MultiheadAttention  packed in-projection unflattened to [T, B, 3, E], picked apart by Gather, heads as
                      [T, B·H, dh]: with a fixed batch (dynamo's static export) B·H is H; with a dynamic batch
                      (TorchScript) the targets compute B·H = Mul(B, H) and E from Shape, rewritten as above. Where
                      the heads go back to [B, H, T, dh] by constant targets (dynamo before the Attention op, at any
                      fixed batch — target B·H — or a dynamic one — target -1), the Reshape → Transpose → Reshape is
                      traced as one step (`_merged_chain`).
  ONNX Attention      the fused op (opset 23; torch's exporter writes scaled_dot_product_attention as it): q, k, v
                      4-D [B, H, T, dh] (the packed q/k/v picked apart by Slice + Squeeze, `unbind`) or 3-D
                      [B, T, H·dh] with `q_num_heads` / `kv_num_heads` (seen as the head split by the projection
                      that feeds it, rewritten to the kept counts): head h of q, k, v couple into head h of its
                      output; grouped-query attention ties each key/value head to its query heads (multi-query:
                      query heads alone); a per-head mask / bias is cut with the heads (a constant) or read
                      through a Gather of the kept heads (computed at run time) (`attention`).
  channel-last MLPs   ConvNeXt: Transpose [N, C, H, W] → [N, H, W, C] moves the channel axis to 3, LayerNorm, Linear →
                      GELU → Linear, Transpose back (axis 1 again), layer scale Mul, residual Add.
  residual stream     LayerNormalization over the feature axis is a hard stop: it reads every feature (mean and
                      variance), so removing one changes all others; its output is a fresh unprunable space.
Refused with a reason: heads merged with a dynamic batch axis where the target's head entry is not Mul(B, H) (or the
model cannot run at batch 2 to tell), an attention bias computed at run time per head (Swin's relative position
bias — the Attention op's attn_mask is picked by a Gather instead), the Attention op's key/value cache, slicing the
feature axis.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Protocol

import numpy as np
import onnx

from ..io.graph import attr
from .layout import Layout, Seg, flatten, positions, sub, width
from .rules import (FixContext, OpRule, TraceContext, Unsupported, _axis, _bias, _maybe_const, fix_reshape,
                    pass_through)


class TokenTraceContext(TraceContext, Protocol):
    """TraceContext plus the channel axis of each tensor (transformer hook in `groups.Tracer`)."""

    model: onnx.ModelProto

    def axis(self, t: str) -> object: ...
    def set_axis(self, t: str, axis: object) -> None: ...


class TokenFixContext(FixContext, Protocol):
    model: onnx.ModelProto
    uses: dict[str, int]

    def axis(self, t: str) -> object: ...
    def producer(self, t: str) -> onnx.NodeProto | None: ...


class Parts(tuple):
    """Channel axis descriptor of a packed tensor: `n` equal parts (q, k, v) on `part` axis, channels on `ch` axis."""

    __slots__ = ()

    def __new__(cls, part: int, ch: int, n: int):
        return super().__new__(cls, (part, ch, n))

    part = property(lambda s: s[0])
    ch = property(lambda s: s[1])
    n = property(lambda s: s[2])


SAFE_UNARY = {"Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Elu", "Selu", "Celu",
              "Softplus", "Softsign", "Gelu", "Mish", "Erf", "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal",
              "Floor", "Ceil", "Round", "Sign", "ThresholdedRelu", "Identity", "Dropout", "Cast"}

_CONSUMERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------------------------------------------- helpers
def _consumers(ctx: TokenTraceContext) -> dict[str, list[onnx.NodeProto]]:
    c = _CONSUMERS.get(ctx)
    if c is None:
        c = {}
        for n in ctx.model.graph.node:
            for t in n.input:
                if t:
                    c.setdefault(t, []).append(n)
        _CONSUMERS[ctx] = c
    return c


_PRODUCERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _producers(ctx: TokenTraceContext) -> dict[str, onnx.NodeProto]:
    p = _PRODUCERS.get(ctx)
    if p is None:
        p = _PRODUCERS[ctx] = {o: n for n in ctx.model.graph.node for o in n.output}
    return p


def _axis_of(ctx: TokenTraceContext, t: str) -> object:
    return ctx.axis(t) if hasattr(ctx, "axis") else 1


def _ints(shape: list | None) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape[1:])


def _prod(v) -> int:
    if any(not isinstance(d, (int, np.integer)) for d in v):  # a symbolic dim (dynamo's '4*batch')
        raise Unsupported(f"dims [{', '.join(map(str, v))}] are not all known numbers")
    return int(np.prod(v, dtype=np.int64)) if len(v) else 1


def _put(ctx: TokenTraceContext, t: str, layout: Layout, axis: object) -> None:
    """Set t's layout on `axis` (an int, or a `Parts` descriptor), checking the axis length against the layout."""
    shape = ctx.shape(t)
    if isinstance(axis, int):
        if shape is not None and len(shape) > axis and isinstance(shape[axis], int) and shape[axis] != width(layout):
            raise Unsupported(f"inferred {shape[axis]} channels on axis {axis} of '{t}', rules say {width(layout)}")
    elif shape is not None and isinstance(shape[axis.ch], int) and shape[axis.ch] * axis.n != width(layout):
        raise Unsupported(f"packed tensor '{t}': axis {axis.ch} has {shape[axis.ch]} channels, rules say "
                          f"{width(layout)} in {axis.n} parts")
    ctx.set_axis(t, axis)
    ctx.set(t, layout)


def _parts(layout: Layout, n: int) -> list[Layout]:
    w = width(layout) // n
    try:
        return [sub(layout, i * w, (i + 1) * w) for i in range(n)]
    except ValueError as e:
        raise Unsupported(f"packed parts cut inside a channel ({e})") from None


def _coarsen(layout: Layout, q: int) -> Layout | None:
    """Channels of `q` features each → one index each (heads): every segment's repeat must be a multiple of q."""
    if any(s.repeat % q for s in layout):
        return None
    return tuple(Seg(s.space, s.lo, s.hi, s.repeat // q) for s in layout)


def _feature_inputs(ctx: TokenTraceContext, node: onnx.NodeProto) -> list[str]:
    return [t for t in node.input if t and ctx.layout(t) is not None]


def _is_token(ctx: TokenTraceContext, node: onnx.NodeProto) -> bool:
    return any(_axis_of(ctx, t) != 1 for t in _feature_inputs(ctx, node))


def _int_axis(ctx: TokenTraceContext, t: str, what: str) -> int:
    a = _axis_of(ctx, t)
    if not isinstance(a, int):
        raise Unsupported(f"{what} of the packed q/k/v tensor '{t}' is not followed")
    return a


# ---------------------------------------------------------------------------------------------------- heads
def head_split(ctx: TokenTraceContext, t: str, features: int) -> tuple[int, int, int] | None:
    """Look ahead from a projection's output t (`features` wide): through bias Add / scalar Mul, Div, a Reshape that
    only regroups the tokens ([B·T, F] ↔ [B, T, F], GPT-2's Conv1D), to a Reshape that splits the last axis into
    [H, dh] or [P, H, dh], or a Split of the last axis into P equal parts each reshaped into [H, dh] (GPT-2's
    c_attn). Returns (P, H, dh) or None."""
    consumers = _consumers(ctx)
    for _ in range(5):
        nodes = [n for n in consumers.get(t, []) if n.op_type != "Shape"]  # x.view(*x.size()[:-1], H, dh)
        if len(nodes) != 1:
            return None
        n = nodes[0]
        if n.op_type in ("Add", "Sub", "Mul", "Div") and len(n.input) == 2:
            other = n.input[1] if n.input[0] == t else n.input[0]
            if ctx.const(other) is None:
                return None
            t = n.output[0]
            continue
        if n.op_type == "Split":
            return _split_heads(ctx, n, features)
        if n.op_type == "Attention" and n.domain in ("", "ai.onnx"):  # 3-D form: [B, T, H·dh], H an attribute
            i = list(n.input).index(t)
            h = attr(n, "q_num_heads" if i == 0 else "kv_num_heads")
            ok = i < 3 and ctx.rank(t) == 3 and isinstance(h, int) and h > 0 and features % h == 0
            return (1, h, features // h) if ok else None
        if n.op_type != "Reshape":
            return None
        chain = _merged_chain(ctx, n)
        if chain is not None:
            return 1, chain[2], chain[3]
        si, so = ctx.shape(t), ctx.shape(n.output[0])
        if si is None or so is None or not _ints(so) or si[-1] != features:
            return None
        if so[-1] == features:  # the tokens regrouped, the features kept last
            t = n.output[0]
            continue
        tail = _head_tail(ctx, si, so, features, n)
        if tail is None:
            return None
        if len(tail) == 2:
            return _packed_heads(ctx, n.output[0], tail) or (1, tail[0], tail[1])
        return tail[0], tail[1], tail[2]
    return None


def _head_tail(ctx: TokenTraceContext, si: list, so: list, features: int, node: onnx.NodeProto | None = None
               ) -> list | None:
    """The trailing [H, dh] or [P, H, dh] of `so` that the last axis of `si` (`features` wide) is split into, the
    leading axes unchanged. With a fixed batch, axes of size 1 may come or go (nn.MultiheadAttention's
    [T, 1, E] → [T, H, dh] at batch 1); with a dynamic batch they may not — the shapes seen here are at batch 1, where
    [T, B, E] → [T, B·H, dh] looks the same — unless the Reshape `node`'s target computes that head entry as
    batch × H (nn.MultiheadAttention's TorchScript form; `_target_entry`)."""
    drop = _fixed_batch(ctx)
    for k in (2, 3):
        if len(so) < k or _prod(so[-k:]) != features or so[-1] < 2 or so[-2] < 2:
            continue
        lead_i, lead_o = list(si[1:-1]), list(so[1:len(so) - k])
        if drop:
            lead_i, lead_o = [d for d in lead_i if d != 1], [d for d in lead_o if d != 1]
        first = drop or si[0] == so[0] or not isinstance(si[0], int) or not isinstance(so[0], int)
        if lead_i == lead_o and first:
            return list(so[-k:])
        if (first and node is not None and lead_i == lead_o + [1]
                and _target_entry(ctx, node, len(so) - k, so[-k])[0] == "batch"):
            return list(so[-k:])  # [.., B, H·dh] → [.., B·H, dh]: the batch is the outer factor of the head axis
    return None


def _fixed_batch(ctx: TokenTraceContext) -> bool:
    """Every model input declares a fixed first (batch) dimension."""
    inits = {t.name for t in ctx.model.graph.initializer}
    dims = [i.type.tensor_type.shape.dim for i in ctx.model.graph.input if i.name not in inits]
    return bool(dims) and all(len(d) and d[0].HasField("dim_value") and d[0].dim_value > 0 for d in dims)


_PLUMBING = ("Unsqueeze", "Squeeze", "Transpose", "Identity")


def _packed_heads(ctx: TokenTraceContext, t: str, tail: list) -> tuple[int, int, int] | None:
    """[.., P, E] packed q / k / v (nn.MultiheadAttention's in-projection `unflatten(-1, (3, E))`), picked apart by
    Gather after axis plumbing, each part then split into heads: (P, H, dh); None when the parts are not heads."""
    consumers = _consumers(ctx)
    for _ in range(4):
        nodes = consumers.get(t, [])
        if len(nodes) == 1 and nodes[0].op_type in _PLUMBING:
            t = nodes[0].output[0]
            continue
        break
    if not nodes or any(n.op_type != "Gather" or ctx.const(n.input[1]) is None or ctx.const(n.input[1]).ndim
                        for n in nodes):
        return None
    found = {head_split(ctx, n.output[0], tail[1]) for n in nodes}
    if len(found) != 1 or None in found or next(iter(found))[0] != 1:
        return None
    _, h, dh = found.pop()
    return tail[0], h, dh


def _split_heads(ctx: TokenTraceContext, node: onnx.NodeProto, features: int) -> tuple[int, int, int] | None:
    """A Split of the last axis into P equal parts, each split into the same [H, dh] heads: (P, H, dh)."""
    r = ctx.rank(node.input[0])
    if r is None or _axis(attr(node, "axis", 0), r) != r - 1 or features % len(node.output):
        return None
    part = features // len(node.output)
    found = set()
    for o in node.output:
        s = ctx.shape(o)
        if s is None or s[-1] != part:
            return None
        found.add(head_split(ctx, o, part))
    if len(found) != 1 or None in found or next(iter(found))[0] != 1:
        return None
    _, h, dh = found.pop()
    return len(node.output), h, dh


def _heads(ctx: TokenTraceContext, name: str, split: tuple[int, int, int]) -> Layout:
    """The producer layout of P parts of H heads of dh features: one space per part (q, k, v are coupled later)."""
    p, h, dh = split
    return tuple(Seg(ctx.produce(name, h)[0].space, 0, h, dh) for _ in range(p))


# ---------------------------------------------------------------------------------------------------- rules
def gemm(ctx: TokenTraceContext, node: onnx.NodeProto, name: str, orig: OpRule) -> None:
    """[N, K] features × a constant weight (the channels-first rule), unless the output is split into heads
    (GPT-2's Conv1D on [B·T, F] rows): then the output channels are whole heads."""
    a, b = node.input[0], node.input[1]
    w, la = ctx.const(b), ctx.layout(a)
    trans = attr(node, "transB", 0) if node.op_type == "Gemm" else 0
    split = None
    if w is not None and w.ndim == 2 and la is not None and ctx.rank(a) == 2 and not attr(node, "transA", 0):
        split = head_split(ctx, node.output[0], w.shape[0 if trans else 1])
    if split is None:
        return orig.trace(ctx, node, name)
    in_axis, out_axis = (1, 0) if trans else (0, 1)
    if w.shape[in_axis] != width(la):
        raise Unsupported("weight does not match the input features")
    ctx.attach(b, in_axis, la, "consumer", name)
    ctx.consume(a, la)
    out = _heads(ctx, name, split)
    ctx.attach(b, out_axis, out, "producer", name)
    if node.op_type == "Gemm":
        _bias(ctx, node, 2, out, "producer", name)
    _put(ctx, node.output[0], out, 1)


def matmul(ctx: TokenTraceContext, node: onnx.NodeProto, name: str, orig: OpRule) -> None:
    """Features × constant weight on the last axis (any rank): a producer; features × features: attention."""
    a, b = node.input[0], node.input[1]
    la, lb = ctx.layout(a), ctx.layout(b)
    if la is not None and lb is not None:
        return attention_matmul(ctx, node, name)
    if node.op_type == "Gemm" or (la is not None and ctx.rank(a) == 2 and _axis_of(ctx, a) == 1):
        return gemm(ctx, node, name, orig)
    if la is None:
        raise Unsupported("a constant is multiplied by the features from the left")
    w = ctx.const(b)
    if w is None or w.ndim != 2:
        raise Unsupported("the weight is not a constant matrix")
    r = ctx.rank(a)
    if r is None or r < 2:
        raise Unsupported("rank of the features unknown")
    ax = _axis_of(ctx, a)
    k, m = w.shape
    if ax == r - 1 and width(la) == k:
        inp = la
    else:
        ctx.stop(la, f"node '{name}' contracts axis {r - 1} but the channels lie on axis {ax}")
        inp = ctx.opaque(k, f"features read by node '{name}' come from channels laid out on another axis")
    ctx.attach(b, 0, inp, "consumer", name)
    ctx.consume(a, inp)
    split = head_split(ctx, node.output[0], m)
    out = ctx.produce(name, m) if split is None else _heads(ctx, name, split)
    ctx.attach(b, 1, out, "producer", name)
    _put(ctx, node.output[0], out, r - 1)


def attention_matmul(ctx: TokenTraceContext, node: onnx.NodeProto, name: str) -> None:
    """q·kᵀ, attn·v: both operands carry heads on the same batch axis; they are coupled head by head."""
    a, b, out = node.input[0], node.input[1], node.output[0]
    ra, rb, ro = ctx.rank(a), ctx.rank(b), ctx.rank(out)
    if None in (ra, rb, ro):
        raise Unsupported("ranks unknown")
    aa, ab = _int_axis(ctx, a, "MatMul"), _int_axis(ctx, b, "MatMul")
    if aa >= ra - 2 or ab >= rb - 2:
        raise Unsupported("multiplies two feature tensors along their channel axis")
    oa, ob = aa + ro - ra, ab + ro - rb
    if oa != ob or width(ctx.layout(a)) != width(ctx.layout(b)):
        raise Unsupported("operands carry different channels on their batch axes")
    _put(ctx, out, ctx.couple([ctx.layout(a), ctx.layout(b)], name), oa)


def _attention_form(ctx: TokenTraceContext | TokenFixContext, node: onnx.NodeProto) -> tuple[int, int, int, int]:
    """(rank, q heads, kv heads, v head size) of an ONNX `Attention` node's inputs: 4-D [B, H, T, dh] (heads on axis
    1) or 3-D [B, T, H·dh] with the head counts in the `q_num_heads` / `kv_num_heads` attributes."""
    q, k, v = node.input[:3]
    sq, sk, sv = ctx.shape(q), ctx.shape(k), ctx.shape(v)
    if sq is None or sk is None or sv is None or not len(sq) == len(sk) == len(sv) or len(sq) not in (3, 4):
        raise Unsupported("query, key and value are not all 4-D [B, H, T, dh] or all 3-D [B, T, H·dh] of known rank")
    if len(sq) == 4:
        hq, hkv, dv = sq[1], sk[1], sv[3]
    else:
        hq, hkv = attr(node, "q_num_heads"), attr(node, "kv_num_heads")
        dv = sv[2] // hkv if isinstance(sv[2], int) and hkv else None
    if not all(isinstance(d, int) and d > 0 for d in (hq, hkv, dv)):
        raise Unsupported("head counts or head sizes unknown")
    return len(sq), hq, hkv, dv


def attention(ctx: TokenTraceContext, node: onnx.NodeProto, name: str, orig: OpRule | None) -> None:
    """The ONNX `Attention` op (opset 23, what torch's exporter makes of scaled_dot_product_attention): output head h
    is softmax(scale · q_h k_hᵀ + mask_h) v_h, so with as many key/value heads as query heads (multi-head attention)
    head h of Q, K and V are coupled and become head h of the output — 4-D [B, H, T, dh] on axis 1, or 3-D
    [B, T, H·dh] where each head is dh features (the `q_num_heads` / `kv_num_heads` attributes then become the kept
    count, `fix_attention`). Grouped-query attention (g = q_num_heads / kv_num_heads query heads per key/value head,
    query head i reading key/value head i // g): a channel is a key/value head with its g query heads — the query
    space is tied to the key/value space g to 1 (`TraceContext.tie`), so the ratio g stays; with one key/value head
    (multi-query) the query heads are free on their own. `scale` (default 1/√dh) is untouched: dh does not change.
    A mask broadcast over the heads passes; one with a slice per (query) head loses the removed heads' slices
    (`_attention_mask`). Refused with a reason: the key/value cache (past / present), grouped query heads not made by
    a projection of their own (they cannot be tied)."""
    q, k, v = node.input[:3]
    extra = [t for t in node.input[4:6] if t]
    graph_out = {o.name for o in ctx.model.graph.output}
    cache = [o for o in node.output[1:3] if o and (_consumers(ctx).get(o) or o in graph_out)]
    if extra or cache:
        raise Unsupported("key / value cache (past_key / past_value inputs or present_key / present_value outputs "
                          "used): its heads would change for the model's callers too")
    if len(node.input) > 6 and node.input[6] and ctx.layout(node.input[6]) is not None:
        raise Unsupported("nonpad_kv_seqlen depends on the feature maps")
    lays = [ctx.layout(t) for t in (q, k, v)]
    if any(lay is None for lay in lays):
        which = ", ".join(n for n, lay in zip("QKV", lays) if lay is None)
        raise Unsupported(f"{which} of the attention carry no heads the analysis follows (computed from constants)")
    rank, hq, hkv, dv = _attention_form(ctx, node)
    if hq % hkv:
        raise Unsupported(f"{hq} query heads do not divide into {hkv} key/value heads")
    heads = []
    for t, lay, n in zip((q, k, v), lays, (hq, hkv, hkv)):
        if n == 1 < hq:  # multi-query: every query head reads the one key/value head, so each is free on its own
            ctx.stop(lay, f"the one key/value head every query head reads at node '{name}'")
            continue
        a, s = _axis_of(ctx, t), ctx.shape(t)
        if rank == 4:
            if a != 1:
                raise Unsupported(f"the channels of '{t}' lie on axis {a}, not on the head axis 1")
            heads.append(lay)
            continue
        if a != 2:
            raise Unsupported(f"the channels of '{t}' lie on axis {a}, not on the features axis 2")
        dh = s[2] // n
        coarse = _coarsen(lay, dh)
        if coarse is None or width(coarse) != n:
            raise Unsupported(f"the {s[2]} features of '{t}' are not {n} whole heads of {dh} features each "
                              "(no head split seen at its projection)")
        heads.append(coarse)
    if hq == hkv:
        layout = ctx.couple(heads, name)
    elif hkv == 1:
        layout = heads[0]
    else:  # query head i reads key/value head i // g: one channel = a key/value head and its g query heads
        g = hq // hkv
        kv = ctx.couple(heads[1:], name)
        try:
            layout = ctx.tie([heads[0], flatten(kv, g)], name)
        except Unsupported as e:
            raise Unsupported(f"grouped-query attention ({hq} query heads share {hkv} key/value heads): the query "
                              f"heads cannot be tied to their key/value head ({e})") from None
    mask = node.input[3] if len(node.input) > 3 else ""
    if mask:
        _attention_mask(ctx, mask, layout, hq, name)
    if rank == 4:
        _put(ctx, node.output[0], layout, 1)
    else:
        _put(ctx, node.output[0], flatten(layout, dv), 2)
        ctx.attach("q_num_heads", -1, layout, "shape", name)  # the head-count attributes: `fix_attention`
    if len(node.output) > 3 and node.output[3]:  # qk_matmul_output [B, H, Tq, Tk]
        _put(ctx, node.output[3], layout, 1)


def _attention_mask(ctx: TokenTraceContext, mask: str, layout: Layout, heads: int, name: str) -> None:
    """attn_mask broadcasts to [B, H, Tq, Tk]: its head axis (third from the right) of size 1 passes; of size H it
    loses the removed heads' slices — cut from a constant (a learned per-head bias), picked by a Gather the rewrite
    puts in front of the op when computed at run time (`fix_attention`; a relative position bias, ALiBi)."""
    s = ctx.shape(mask)
    if s is None:
        raise Unsupported(f"shape of the attention mask '{mask}' unknown")
    hax = len(s) - 3
    per_head = hax >= 0 and s[hax] != 1
    if per_head and s[hax] != heads:
        raise Unsupported(f"the attention mask '{mask}' has {s[hax]} slices on the head axis, not {heads}")
    lm = ctx.layout(mask)
    if lm is not None:  # computed from the inputs: its own channels stay, whatever it is
        ctx.stop(lm, f"read as the attention mask by node '{name}'")
    if not per_head:
        return
    if ctx.const(mask) is not None:
        ctx.attach(mask, hax, layout, "const", name)
    else:
        ctx.attach("attn_mask", -1, layout, "shape", name)


def fix_attention(fx: TokenFixContext, node: onnx.NodeProto) -> None:
    """3-D form: `q_num_heads` / `kv_num_heads` := the kept head counts (grouped-query: kept groups × g and kept
    groups). A per-head attn_mask computed at run time is read through a Gather of the kept heads' slices."""
    rank, hq, _, dv = _attention_form(fx, node)
    if rank == 3:
        for i, key in ((0, "q_num_heads"), (1, "kv_num_heads")):
            t = node.input[i]
            fx.set_attr(node, key, int(fx.kept(t).sum()) * attr(node, key) // fx.shape(t)[2])
    mask = node.input[3] if len(node.input) > 3 else ""
    s = fx.shape(mask) if mask else None
    if not s or len(s) < 3 or s[-3] == 1 or _maybe_const(fx, mask) is not None:
        return
    kept = fx.kept(node.output[0])
    kept = kept if rank == 4 else kept.reshape(hq, dv)[:, 0]
    nodes = fx.model.graph.node
    out = f"{mask}__{node.name}__kept_heads"
    pick = onnx.helper.make_node("Gather", [mask, ""], [out], name=f"{node.name}__kept_heads", axis=len(s) - 3)
    nodes.insert(list(nodes).index(node), pick)
    pick = next(n for n in nodes if n.name == pick.name)  # the graph holds a copy
    fx.set_input(pick, 1, np.flatnonzero(kept).astype(np.int64), new_name=f"{node.name}__kept_heads")
    node.input[3] = out
    fx.uses[out] = 1


def _merged_chain(ctx: TokenTraceContext, r1: onnx.NodeProto) -> tuple | None:
    """nn.MultiheadAttention's heads through the batch as dynamo exports it (the sequence first): Reshape
    [T, B, H·dh] → [T, B·H, dh] → Transpose [1, 0, 2] → Reshape [B, H, T, dh], each read by the next only, both
    targets constants (B·H is B·H at a fixed batch, -1 at a dynamic one; TorchScript's computed targets go the
    `_target_entry` way). Returns (Transpose, last Reshape, H, dh, B) or None. The chain as a whole moves the heads
    from the features to axis 1; the middle tensors mix them with the batch (B·H), which no layout describes."""
    si, s1 = ctx.shape(r1.input[0]), ctx.shape(r1.output[0])
    if si is None or s1 is None or len(si) != 3 or len(s1) != 3 or not all(isinstance(d, int) for d in (*si, *s1)):
        return None
    t_, b, e = si
    dh = s1[2]
    if s1[0] != t_ or dh < 1 or e % dh or e // dh < 2 or s1[1] != b * (e // dh):
        return None
    nxt = ctx.consumers(r1.output[0]) if hasattr(ctx, "consumers") else _consumers(ctx).get(r1.output[0], [])
    if len(nxt) != 1 or nxt[0].op_type != "Transpose" or attr(nxt[0], "perm") != [1, 0, 2]:
        return None
    last = ctx.consumers(nxt[0].output[0]) if hasattr(ctx, "consumers") else _consumers(ctx).get(nxt[0].output[0], [])
    so = ctx.shape(last[0].output[0]) if len(last) == 1 and last[0].op_type == "Reshape" else None
    if so is None or len(so) != 4 or so[1:] != [e // dh, t_, dh] or isinstance(so[0], int) and so[0] != b:
        return None  # (a symbolic so[0]: the batch is dynamic, B·H an entry -1 in the first target)
    if any(_maybe_const(ctx, r.input[1]) is None for r in (r1, last[0])):  # computed targets: `_target_entry`'s way
        return None
    return nxt[0], last[0], e // dh, dh, b


_MERGED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tracer → {Reshape name: (the chain's last, B)}


def reshape(ctx: TokenTraceContext, node: onnx.NodeProto, name: str, orig: OpRule) -> None:
    """Keep / merge / split the channel axis: [N,C,H,W]→[N,C,HW]; [N,T,H,dh]→[N,T,H·dh]; [N,T,D]→[N,T,H,dh];
    packed [N,T,3D]→[N,T,3,H,dh]. Heads merged with the batch axis are refused."""
    x, out = node.input[0], node.output[0]
    layout = ctx.layout(x)
    a = _axis_of(ctx, x)
    chain = _merged_chain(ctx, node) if a == 2 else None
    if chain is not None:
        tr, last, h, dh, b = chain
        coarse = _coarsen(layout, dh)
        if coarse is None or width(coarse) != h:
            raise Unsupported(f"splits the features of '{x}' into {h} heads of {dh}, but they are not whole heads")
        for r in (node, last):
            _MERGED.setdefault(ctx, {})[r.name] = (last.output[0], b)
            ctx.attach(r.input[1], 0, coarse, "shape", r.name)
        ctx.claim([tr.name, last.name])
        return _put(ctx, last.output[0], coarse, 1)
    if a == 1:
        try:
            return orig.trace(ctx, node, name)
        except Unsupported as e:
            first = e
    else:
        first = None
    if not isinstance(a, int):
        raise Unsupported("reshapes the packed q/k/v tensor")
    si, so = ctx.shape(x), ctx.shape(out)
    if not (_ints(si) and _ints(so)):
        raise first or Unsupported("shapes unknown")
    w, inner = si[a], _prod(si[a + 1:])
    new = None
    for b in range(1, len(so)):  # kept: the same axis length with the same inner size
        if so[b] == w and _prod(so[b + 1:]) == inner:
            new = (layout, b)
            break
    if new is None:
        for b in range(1, len(so)):  # merged with inner axes: channel c ↔ a block of features
            for a1 in range(a + 1, len(si)):
                if so[b] == _prod(si[a:a1 + 1]) and _prod(so[b + 1:]) == _prod(si[a1 + 1:]):
                    new = (flatten(layout, _prod(si[a + 1:a1 + 1])), b)
                    break
            if new:
                break
    if new is None:
        # split into [H, dh] or [P, H, dh]; the right-most fit first ([T, 1, 3E] → [T, 1, 3, E] splits the last axis)
        fits = [(k, b) for k in (2, 3) for b in range(len(so) - k, 0, -1)
                if _prod(so[b:b + k]) == w and _prod(so[b + k:]) == inner]
        if fits:
            k, b = fits[0]
            q = _prod(so[b + 1:b + k])
            coarse = _coarsen(layout, q)
            if k == 2 and coarse is not None:
                new = (coarse, b)
            elif k == 2 and so[b] > 1 and len(layout) == so[b]:  # packed parts: [.., 3D] → [.., 3, D]
                parts = _parts(layout, so[b])
                new = (tuple(s for p in parts for s in p), Parts(b, b + 1, so[b]))
            elif k == 3:
                parts = [_coarsen(p, so[b + 2]) for p in _parts(layout, so[b])]
                if all(p is not None for p in parts):
                    new = (tuple(s for p in parts for s in p), Parts(b, b + 1, so[b]))
            if new is None:
                raise Unsupported(f"splits the {w} channels of '{x}' into {' × '.join(map(str, so[b:b + k]))}"
                                  " but they are single features, not whole heads")
    if new is None:
        if first is not None:
            raise first
        raise Unsupported(f"reshapes the channel axis {a} ({_shape(si)} → {_shape(so)}): merges it with another "
                          "axis (e.g. heads with the batch axis, [B·H, T, dh])")
    _attach_target(ctx, node, new[0], name, new[1])
    _put(ctx, out, new[0], new[1])


def _shape(s: list) -> str:
    return "[" + ", ".join("N" if i == 0 else str(d) for i, d in enumerate(s)) + "]"


def _attach_target(ctx: TokenTraceContext, node: onnx.NodeProto, layout: Layout, name: str, axis: object) -> None:
    """The target entry on the output's channel axis must be one `fix_token_reshape` can rewrite: a constant, or a
    value computed at run time that is the channel count whatever the batch (replaced by the kept count) or batch ×
    the channel count through a `Mul` by a constant (that constant rewritten). Other entries are left as they are:
    they do not hold the channel count (a Shape read of a pruned tensor's channel axis is refused by `shape_`)."""
    t = node.input[1]
    if ctx.const(t) is None:
        pos = axis.ch if isinstance(axis, Parts) else axis
        kind, why = _target_entry(ctx, node, pos, ctx.shape(node.output[0])[pos])
        if kind is None:
            raise Unsupported(f"target shape is computed at run time and may hold the channel count ({why})")
        _KINDS.setdefault(ctx, {})[node.name] = kind
    ctx.attach(t, 0, layout, "shape", name)


_ENTRY_OPS = ("Unsqueeze", "Squeeze", "Cast", "Identity", "Reshape")  # carry one shape value along unchanged
_BATCH2: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_KINDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tracer → {Reshape name: how its entry is made}


def _entry_path(ctx: TokenTraceContext, target: str, pos: int) -> tuple[str, int] | None:
    """Where entry `pos` of a Reshape target lives, through (nested) Concats: the tensor holding it (a constant or a
    computed piece) and the index there; None when a piece's length is unknown."""
    t = target
    while _maybe_const(ctx, t) is None:
        n = ctx.producer(t)
        if n is None or n.op_type != "Concat":
            break
        off = 0
        for piece in n.input:
            v = _maybe_const(ctx, piece)
            size = v.size if v is not None else (ctx.shape(piece) or [None])[0]
            if not isinstance(size, int):
                return None
            if off <= pos < off + size:
                t, pos = piece, pos - off
                break
            off += size
        else:
            return None
    return t, pos


def _scale_chain(ctx: TokenTraceContext | TokenFixContext, t: str, count: int) -> list[onnx.NodeProto] | None:
    """The nodes computing the 1-element t as `Mul(x, count)` (count a constant; x computed), through Unsqueeze /
    Squeeze / Cast / Identity / Reshape: [t's producer, …, the Mul]; None otherwise."""
    chain = []
    for _ in range(6):
        n = ctx.producer(t)
        if n is None:
            return None
        chain.append(n)
        if n.op_type == "Mul" and len(n.input) == 2:
            vals = [_maybe_const(ctx, i) for i in n.input]
            ok = [v is not None and v.size == 1 and int(v.reshape(-1)[0]) == count for v in vals]
            return chain if sum(ok) == 1 and sum(v is None for v in vals) == 1 else None
        if n.op_type not in _ENTRY_OPS:
            return None
        t = n.input[0]
    return None


def _at_batch_2(ctx: TokenTraceContext, t: str) -> np.ndarray | None:
    """The value of t, a computed piece of a Reshape target, when the batch is 2: one onnxruntime run for every such
    piece of the model, made the first time one is asked for; None with a fixed batch or when the run fails."""
    values = _BATCH2.get(ctx)
    if values is None:
        values = {}
        shapes = ctx.input_shapes(2) if hasattr(ctx, "input_shapes") else None
        if shapes is not None:
            from ..io.shapes import random_feed, runtime_values

            pieces: dict[str, None] = {}
            for n in ctx.model.graph.node:
                todo = [n.input[1]] if n.op_type == "Reshape" and len(n.input) > 1 else []
                while todo:
                    u = todo.pop()
                    if u and ctx.const(u) is None and u not in pieces:
                        pieces[u] = None
                        p = ctx.producer(u)
                        todo.extend(p.input if p is not None and p.op_type == "Concat" else [])
            feed = random_feed(ctx.model, shapes)
            values = {} if feed is None else {
                k: np.asarray(v).reshape(-1) for k, v in runtime_values(ctx.model, list(pieces), feed).items()}
        _BATCH2[ctx] = values
    return values.get(t)


def _target_entry(ctx: TokenTraceContext, node: onnx.NodeProto, pos: int, count: object
                  ) -> tuple[str | None, str]:
    """How entry `pos` of Reshape `node`'s target (`count` at the traced batch-1 shapes) is made: "const" (a
    constant), "fixed" (a 1-element value computed at run time that stays `count` at batch 2, or the batch is fixed),
    "batch" (count × the batch: `Mul(B, count)`, nn.MultiheadAttention's [T, B·H, dh]); (None, why) otherwise."""
    found = _entry_path(ctx, node.input[1], pos) if isinstance(count, int) else None
    if found is None:
        return None, "its pieces' lengths are unknown"
    t = found[0]
    if ctx.const(t) is not None:
        return "const", ""
    if (ctx.shape(t) or [None])[0] != 1:
        return None, f"entry {pos} is part of the computed '{t}'"
    if _fixed_batch(ctx):
        return "fixed", ""
    v2 = _at_batch_2(ctx, t)
    if v2 is None or v2.size != 1:
        return None, f"entry {pos} could not be evaluated at batch 2"
    if int(v2[0]) == count:
        return "fixed", ""
    if int(v2[0]) == 2 * count and _scale_chain(ctx, t, count) is not None:
        return "batch", ""
    return None, f"entry {pos} is {int(v2[0])} at batch 2 and {count} at batch 1, not batch × a constant {count}"


def fix_token_reshape(fx: TokenFixContext, node: onnx.NodeProto) -> None:
    """The target entry on the output's channel axis := kept count (Parts: per part): a constant, a Concat piece
    (nested Concats followed; shared ones copied first), or `Mul(B, H)` → `Mul(B, kept)` for batch-merged heads."""
    out = node.output[0]
    tracer = getattr(fx, "tracer", None)
    merged = _MERGED.get(tracer, {}).get(node.name) if tracer is not None else None
    if merged is not None:  # heads through the batch: entry 1 is B·H ([T, B·H, dh]) or H ([B, H, T, dh])
        heads, b = merged
        kept = int(fx.kept(heads).sum())
        v = fx.const(node.input[1]).copy()
        if v[1] > 0:
            v[1] = kept * (b if node.output[0] != heads else 1)
            fx.set_input(node, 1, v)
        return
    a = fx.axis(out)
    if a == 1 and fx.axis(node.input[0]) == 1:
        try:
            fx.const(node.input[1])
        except KeyError:
            pass
        else:
            return fix_reshape(fx, node)
    kept = int(fx.kept(out).sum())
    pos, value = (a.ch, kept // a.n) if isinstance(a, Parts) else (a, kept)
    holder, k, p = node, 1, pos  # the node reading the tensor that holds the entry, which input, which index
    while True:
        t = holder.input[k]
        v = _maybe_const(fx, t)
        if v is not None:
            if v.reshape(-1)[p] > 0:
                flat = v.reshape(-1).copy()
                flat[p] = value
                fx.set_input(holder, k, flat.reshape(v.shape))
            return
        src = fx.producer(t)
        if src is None or src.op_type != "Concat":
            break
        holder = _own_input(fx, holder, k)
        off = 0
        for k, piece in enumerate(holder.input):
            pv = _maybe_const(fx, piece)
            size = pv.size if pv is not None else fx.shape(piece)[0]
            if off <= p < off + size:
                break
            off += size
        p -= off
    tracer = getattr(fx, "tracer", None)
    kind = _KINDS.get(tracer, {}).get(node.name) if tracer is not None else None
    if kind == "batch":  # Mul(B, H) → Mul(B, kept) on a private copy of the chain
        _scaled_copy(fx, holder, k, int(fx.shape(out)[pos]), value)
    elif kind == "fixed":  # e.g. Swin's C or nn.MultiheadAttention's E read from a Shape: the kept width is a constant
        fx.set_input(holder, k, np.array([value], np.int64), new_name=f"{holder.name}__kept")
    else:
        raise Unsupported(f"node '{node.name}': no rewrite known for its computed target entry")


def _scaled_copy(fx: TokenFixContext, holder: onnx.NodeProto, k: int, count: int, value: int) -> None:
    """Input k of `holder` is `Mul(x, count)` through a chain of Unsqueeze / Cast / …: it reads a copy of that chain
    whose Mul multiplies by `value` instead (the original chain may feed other targets)."""
    chain = _scale_chain(fx, holder.input[k], count)
    nodes = fx.model.graph.node
    at = list(nodes).index(holder)
    below = holder.input[k]
    copies = []
    for n in chain:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        c.name, c.output[0] = f"{n.name}__{holder.name}", f"{n.output[0]}__{holder.name}"
        copies.append(c)
    for c, nxt in zip(copies, copies[1:]):
        c.input[0] = nxt.output[0]
    for c in copies:  # each inserted before the one it reads: the Mul ends up first, at `at`
        nodes.insert(at, c)
    fx.uses[below] -= 1
    holder.input[k] = copies[0].output[0]
    for c in copies:
        for u in c.input:
            fx.uses[u] = fx.uses.get(u, 0) + 1
    mul = nodes[at]  # the graph holds copies: the Mul, inserted last, sits at `at`
    ci = next(j for j, u in enumerate(mul.input) if _maybe_const(fx, u) is not None)
    old = _maybe_const(fx, mul.input[ci])
    fx.set_input(mul, ci, np.full(old.shape, value, old.dtype), new_name=f"{mul.name}__kept")


def _own_input(fx: TokenFixContext, node: onnx.NodeProto, k: int) -> onnx.NodeProto:
    """The node computing input k of `node`, copied for `node` when other nodes read its output too (the dynamo
    exporter shares one shape computation between the blocks, whose kept counts differ)."""
    t = node.input[k]
    src = fx.producer(t)
    if fx.uses.get(t, 0) <= 1:
        return src
    own = onnx.NodeProto()
    own.CopyFrom(src)
    own.name, own.output[0] = f"{src.name}__{node.name}", f"{t}__{node.name}"
    nodes = fx.model.graph.node
    j = list(nodes).index(src) + 1
    nodes.insert(j, own)
    own = nodes[j]  # the graph holds a copy
    node.input[k] = own.output[0]
    fx.uses[t] -= 1
    fx.uses[own.output[0]] = 1
    for piece in own.input:
        fx.uses[piece] = fx.uses.get(piece, 0) + 1
    return own


def transpose(ctx: TokenTraceContext, node: onnx.NodeProto, name: str, orig: OpRule) -> None:
    x = node.input[0]
    r = ctx.rank(x)
    perm = attr(node, "perm") or list(range(r - 1, -1, -1))
    a = _axis_of(ctx, x)
    new = Parts(perm.index(a.part), perm.index(a.ch), a.n) if isinstance(a, Parts) else perm.index(a)
    _put(ctx, node.output[0], ctx.layout(x), new)


def layer_norm(ctx: TokenTraceContext, node: onnx.NodeProto, name: str, orig: OpRule) -> None:
    """Normalising over the channel axis is the residual-stream stop; over other axes it passes channels."""
    x = node.input[0]
    layout, r = ctx.layout(x), ctx.rank(x)
    a = _int_axis(ctx, x, "LayerNormalization")
    if any(o for o in node.output[1:]):
        raise Unsupported("LayerNormalization's mean / inverse std outputs are used")
    first = _axis(attr(node, "axis", -1), r)
    if a < first:
        for t in node.input[1:]:
            if t and ctx.layout(t) is not None:
                raise Unsupported("a parameter input depends on the feature maps")
        return _put(ctx, node.output[0], layout, a)
    why = (f"residual stream: LayerNormalization '{name}' normalises over these {width(layout)} features (its mean "
           "and variance read every one of them), so none can be removed exactly — the blocks' MLP widths (and "
           "attention heads) are what prunes here; a narrower stream needs a narrower model trained or distilled")
    ctx.stop(layout, why)
    _put(ctx, node.output[0], ctx.opaque(width(layout), why), a)


def softmax(ctx: TokenTraceContext, node: onnx.NodeProto, name: str, orig: OpRule) -> None:
    x = node.input[0]
    r = ctx.rank(x)
    a = _int_axis(ctx, x, node.op_type)
    ax = _axis(attr(node, "axis", -1 if ctx.opset >= 13 else 1), r)
    if (a == ax) if ctx.opset >= 13 else (a >= ax):
        raise Unsupported("normalises across channels")
    ctx.set(node.output[0], ctx.layout(x), like=x)


def elementwise(ctx: TokenTraceContext, node: onnx.NodeProto, name: str, orig: OpRule) -> None:
    """Operands broadcast from the right; features on the same output axis couple; constants along it are members.
    Channels-first operands go to the channels-first rule `orig` when there is one."""
    if orig is not None and not _is_token(ctx, node):
        return orig.trace(ctx, node, name)
    out = node.output[0]
    ro, so = ctx.rank(out), ctx.shape(out)
    if ro is None:
        raise Unsupported("output rank unknown")
    feats = []
    for t in _feature_inputs(ctx, node):
        a, s = _int_axis(ctx, t, node.op_type), ctx.shape(t)
        if s is None:
            raise Unsupported(f"shape of '{t}' unknown")
        feats.append((t, a + ro - len(s), s, ro - len(s)))
    # the output channel axis: one where every operand either carries its channels or is broadcast (size 1)
    cands = {o for _, o, s, d in feats if s[o - d] != 1 or so is None or so[o] == 1}
    ok = [o for o in cands if all(o2 == o or o - d < 0 or s[o - d] == 1 for _, o2, s, d in feats)]
    if len(ok) != 1:
        raise Unsupported("operands carry channels on different axes")
    oa = ok[0]
    main = []
    for t, o, s, d in feats:
        if o != oa or s[o - d] == 1 and (not isinstance(so[o], int) or so[o] != 1):
            ctx.stop(ctx.layout(t), f"broadcast over the channel axis at node '{name}'")
        else:
            main.append(ctx.layout(t))
    if not main:
        raise Unsupported("no operand carries the output channels")
    if len({width(m) for m in main}) > 1:
        raise Unsupported("operand channel counts differ")
    layout = ctx.couple(main, name)
    c = width(layout)
    for t in node.input:
        if not t or ctx.layout(t) is not None:
            continue
        v = ctx.const(t)
        if v is not None:
            ai = oa - (ro - v.ndim)
            if ai < 0 or v.shape[ai] == 1:
                continue
            if v.shape[ai] != c:
                raise Unsupported(f"constant '{t}' does not broadcast per channel")
            ctx.attach(t, ai, layout, "const", name)
        else:
            s = ctx.shape(t)
            ai = None if s is None else oa - (ro - len(s))
            if s is None or (ai >= 0 and s[ai] != 1):
                raise Unsupported(f"operand '{t}' varies along the channels but is computed at run time")
    _put(ctx, out, layout, oa)


def where(ctx: TokenTraceContext, node: onnx.NodeProto, name: str, orig: OpRule | None) -> None:
    """Where(condition, a, b) on token tensors (GPT-2's causal mask on the scores): a and b as an elementwise op;
    the condition must not vary along the channels."""
    if ctx.layout(node.input[0]) is not None:
        raise Unsupported("the condition of Where depends on the feature maps")
    elementwise(ctx, node, name, None)


def _axes_of(ctx: TokenTraceContext, node: onnx.NodeProto, i: int = 1) -> list[int] | None:
    axes = attr(node, "axes")
    if axes is None and len(node.input) > i and node.input[i]:
        v = ctx.const(node.input[i])
        if v is None:
            raise Unsupported("axes computed at run time")
        axes = v.reshape(-1).tolist()
    return axes


def reduce(ctx: TokenTraceContext, node: onnx.NodeProto, name: str, orig: OpRule) -> None:
    if not _is_token(ctx, node):
        return orig.trace(ctx, node, name)
    x = node.input[0]
    a, r = _int_axis(ctx, x, node.op_type), ctx.rank(x)
    axes = _axes_of(ctx, node)
    if not axes:
        raise Unsupported("reduces over all axes, including channels")
    axes = {_axis(v, r) for v in axes}
    if a in axes or 0 in axes:
        raise Unsupported("reduces over the batch or channel axis")
    keep = attr(node, "keepdims", 1)
    _put(ctx, node.output[0], ctx.layout(x), a if keep else a - sum(v < a for v in axes))


def squeeze(ctx: TokenTraceContext, node: onnx.NodeProto, name: str, orig: OpRule | None) -> None:
    x, out = node.input[0], node.output[0]
    r, ro = ctx.rank(x), ctx.rank(out)
    a = _axis_of(ctx, x)
    axes = _axes_of(ctx, node)
    if node.op_type == "Squeeze":
        if axes is None:
            s = ctx.shape(x)
            axes = [i for i, d in enumerate(s) if d == 1] if s else None
        if axes is None:
            raise Unsupported("squeezed axes unknown")
        axes = {_axis(v, r) for v in axes}

        def move(i: int) -> int:
            return i - sum(v < i for v in axes)
        if isinstance(a, Parts):
            if a.part in axes and a.n == 1:
                return _put(ctx, out, ctx.layout(x), move(a.ch))
            if a.ch in axes or a.part in axes:
                raise Unsupported("squeezes the channel axis")
            return _put(ctx, out, ctx.layout(x), Parts(move(a.part), move(a.ch), a.n))
        if a in axes:
            raise Unsupported("squeezes the channel axis")
        return _put(ctx, out, ctx.layout(x), move(a))
    if axes is None or ro is None:
        raise Unsupported("unsqueezed axes unknown")
    axes = {_axis(v, ro) for v in axes}
    kept = [i for i in range(ro) if i not in axes]
    new = Parts(kept[a.part], kept[a.ch], a.n) if isinstance(a, Parts) else kept[a]
    _put(ctx, out, ctx.layout(x), new)


def gather(ctx: TokenTraceContext, node: onnx.NodeProto, name: str, orig: OpRule | None) -> None:
    """q = qkv[0] (the packed part axis), x[:, 0] (a token), embedding rows (ids → opaque features)."""
    data, idx, out = node.input[0], node.input[1], node.output[0]
    ld = ctx.layout(data)
    if ld is None:  # embedding lookup: the gathered rows are features no rule follows back to the table
        s = ctx.shape(out)
        if s is None or not isinstance(s[-1], int) or ctx.const(data) is None or ctx.const(data).ndim != 2:
            raise Unsupported("gathers with computed indices")
        why = f"residual stream: embedding rows gathered by node '{name}'"
        return _put(ctx, out, ctx.opaque(s[-1], why), len(s) - 1)
    if ctx.layout(idx) is not None:
        raise Unsupported("indices depend on the feature maps")
    r = ctx.rank(data)
    g = _axis(attr(node, "axis", 0), r)
    iv = ctx.const(idx)
    ri = ctx.rank(idx)
    if ri is None:
        raise Unsupported("index rank unknown")
    a = _axis_of(ctx, data)

    def move(i: int) -> int:
        return i if i < g else i - 1 + ri
    if isinstance(a, Parts):
        if g == a.part:
            if iv is None or iv.ndim != 0:
                raise Unsupported("picks packed parts with computed or several indices")
            part = _parts(ld, a.n)[int(iv) % a.n]
            return _put(ctx, out, part, a.ch - 1 if a.ch > g else a.ch)
        if g == a.ch:
            raise Unsupported("gathers along the channel axis")
        return _put(ctx, out, ld, Parts(move(a.part), move(a.ch), a.n))
    if g == a:
        raise Unsupported("gathers along the channel axis")
    _put(ctx, out, ld, move(a))


def slice_(ctx: TokenTraceContext, node: onnx.NodeProto, name: str, orig: OpRule) -> None:
    if not _is_token(ctx, node):
        return orig.trace(ctx, node, name)
    x = node.input[0]
    if isinstance(_axis_of(ctx, x), Parts):
        return _slice_parts(ctx, node)
    a = _int_axis(ctx, x, "Slice")
    r = ctx.rank(x)
    if len(node.input) > 3 and node.input[3]:
        axes = ctx.const(node.input[3])
        if axes is None:
            raise Unsupported("slice axes computed at run time")
        axes = [_axis(int(v), r) for v in axes.reshape(-1)]
    else:
        starts = ctx.const(node.input[1])
        if starts is None:
            raise Unsupported("slice starts computed at run time")
        axes = list(range(starts.size))
    if a in axes:
        raise Unsupported("slices the feature axis of a token tensor")
    _put(ctx, node.output[0], ctx.layout(x), a)


def _slice_parts(ctx: TokenTraceContext, node: onnx.NodeProto) -> None:
    """q = qkv[0:1] (then Squeeze: `unbind` at opset 23): constant bounds on the part axis keep whole parts (q, k,
    v); the head axis must not be sliced; other axes pass. The bounds never hold a head count: nothing to rewrite."""
    x = node.input[0]
    a, r = _axis_of(ctx, x), ctx.rank(x)
    args = [ctx.const(t) if t else None for t in list(node.input[1:5]) + [""] * (5 - len(node.input))]
    if any(v is None for v, t in zip(args, node.input[1:5]) if t) or args[0] is None or args[1] is None:
        raise Unsupported(f"Slice of the packed q/k/v tensor '{x}' with bounds computed at run time")
    starts, ends = args[0].reshape(-1), args[1].reshape(-1)
    axes = [_axis(int(v), r) for v in args[2].reshape(-1)] if args[2] is not None else list(range(starts.size))
    steps = args[3].reshape(-1) if args[3] is not None else np.ones(starts.size, np.int64)
    if a.ch in axes:
        raise Unsupported(f"slices the head axis of the packed q/k/v tensor '{x}'")
    layout, n = ctx.layout(x), a.n
    if a.part in axes:
        k = axes.index(a.part)
        lo, hi = (max(0, min(int(v) + n if v < 0 else int(v), n)) for v in (starts[k], ends[k]))
        if steps[k] != 1 or hi <= lo:
            raise Unsupported(f"strided or empty Slice of the packed q/k/v parts of '{x}'")
        layout, n = tuple(s for p in _parts(layout, n)[lo:hi] for s in p), hi - lo
    _put(ctx, node.output[0], layout, Parts(a.part, a.ch, n))


def split(ctx: TokenTraceContext, node: onnx.NodeProto, name: str, orig: OpRule) -> None:
    if not _is_token(ctx, node):
        return orig.trace(ctx, node, name)
    x = node.input[0]
    a = _axis_of(ctx, x)
    g = _axis(attr(node, "axis", 0), ctx.rank(x))
    layout = ctx.layout(x)
    if isinstance(a, Parts) and g == a.part:
        parts = _parts(layout, a.n)
        if len(node.output) != a.n:
            raise Unsupported("splits the packed parts unevenly")
        for o, p in zip(node.output, parts):
            _put(ctx, o, p, Parts(a.part, a.ch, 1))
        return
    if isinstance(a, Parts) and g == a.ch:
        raise Unsupported("splits the feature axis of the packed q/k/v tensor")
    if g == a:  # sub-ranges of the features, as the channels-first Split (GPT-2's q, k, v out of one Conv1D)
        start = 0
        for o in node.output:
            s = ctx.shape(o)
            if s is None or len(s) <= a or not isinstance(s[a], int):
                raise Unsupported("split sizes unknown")
            try:
                _put(ctx, o, sub(layout, start, start + s[a]), a)
            except ValueError as e:
                raise Unsupported(f"splits the features inside a head ({e})") from None
            start += s[a]
        ctx.attach(node.input[1] if len(node.input) > 1 and node.input[1] else "split", 0, layout, "shape", name)
        return
    for o in node.output:
        if o:
            _put(ctx, o, layout, a)


def concat(ctx: TokenTraceContext, node: onnx.NodeProto, name: str, orig: OpRule) -> None:
    if not _is_token(ctx, node):
        return orig.trace(ctx, node, name)
    out = node.output[0]
    ro = ctx.rank(out)
    c = _axis(attr(node, "axis"), ro)
    axes = {_int_axis(ctx, t, "Concat") for t in _feature_inputs(ctx, node)}
    if len(axes) != 1:
        raise Unsupported("inputs carry their channels on different axes")
    a = axes.pop()
    if c == a:  # features end to end (Swin's patch merging): as the axis-1 Concat
        parts: list = []
        for t in node.input:
            lay = ctx.layout(t)
            if lay is None:
                s = ctx.shape(t)
                if s is None or not isinstance(s[a], int):
                    raise Unsupported(f"channel count of '{t}' unknown")
                lay = ctx.opaque(s[a], f"constant channels '{t}' concatenated at node '{name}'")
            parts.extend(lay)
        return _put(ctx, out, tuple(parts), a)
    feats = [ctx.layout(t) for t in _feature_inputs(ctx, node)]
    layout = ctx.couple(feats, name)
    for t in node.input:
        if t and ctx.layout(t) is None:
            v = ctx.const(t)
            if v is not None and v.ndim == ro and v.shape[a] == width(layout):
                ctx.attach(t, a, layout, "const", name)
            else:
                ctx.stop(layout, f"a computed constant (e.g. a class token) is concatenated along tokens at node "
                                 f"'{name}'")
    _put(ctx, out, layout, a)


def shape_(ctx: TokenTraceContext, node: onnx.NodeProto, name: str, orig: OpRule) -> None:
    """Shape of a token tensor read only at other axes (Gather of a constant index, Slice of a range) is harmless."""
    x = node.input[0]
    a = _axis_of(ctx, x)
    r = ctx.rank(x)
    ch = {a.part, a.ch} if isinstance(a, Parts) else {a}
    start, end = attr(node, "start", 0), attr(node, "end", r)
    start, end = _axis(start, r), min(_axis(end, r) if end is not None else r, r)
    read = set(range(start, end))
    if not (ch & read):
        return
    for n in _consumers(ctx).get(node.output[0], []):
        if n.op_type == "Gather" and ctx.const(n.input[1]) is not None:
            read_ = {start + int(i) % (end - start) for i in ctx.const(n.input[1]).reshape(-1)}
        elif n.op_type == "Slice" and all(ctx.const(i) is not None for i in n.input[1:3]):
            s0, e0 = int(ctx.const(n.input[1]).reshape(-1)[0]), int(ctx.const(n.input[2]).reshape(-1)[0])
            s0, e0 = (s0 + (end - start) if s0 < 0 else s0), (e0 + (end - start) if e0 < 0 else e0)
            read_ = {start + i for i in range(max(s0, 0), min(e0, end - start))}
        else:
            return orig.trace(ctx, node, name)
        if read_ & ch and not (read_ == {r - 1} == ch and _last_of_own_target(ctx, n.output[0], x)):
            return orig.trace(ctx, node, name)


def _last_of_own_target(ctx: TokenTraceContext, t: str, x: str) -> bool:
    """t (x's feature count, read from its Shape) only becomes the last entry of the target of a Reshape of x itself
    (`x.view(-1, x.size(-1))`, GPT-2's Conv1D): the target then follows the pruned width by itself."""
    consumers = _consumers(ctx)
    for _ in range(4):
        nodes = consumers.get(t, [])
        if len(nodes) != 1:
            return False
        n = nodes[0]
        if n.op_type in ("Squeeze", "Unsqueeze", "Cast"):
            t = n.output[0]
            continue
        if n.op_type != "Concat" or n.input[-1] != t or n.input[:-1].count(t):
            return False
        return all(r.op_type == "Reshape" and r.input[0] == x and r.input[1] == n.output[0]
                   for r in consumers.get(n.output[0], [])) and bool(consumers.get(n.output[0]))
    return False


def _guard(op: str, orig: OpRule) -> Callable:
    def trace(ctx: TokenTraceContext, node: onnx.NodeProto, name: str) -> None:
        if not _is_token(ctx, node):
            return orig.trace(ctx, node, name)
        if op in SAFE_UNARY:
            return pass_through(ctx, node, name)
        raise Unsupported(f"{op} on channels laid out on axis {_axis_of(ctx, _feature_inputs(ctx, node)[0])} "
                          "(tokens: features last) is not followed")
    return trace


TOKEN_TRACE = {"MatMul": matmul, "Gemm": matmul, "Reshape": reshape, "Transpose": transpose,
               "LayerNormalization": layer_norm, "Softmax": softmax, "LogSoftmax": softmax, "Slice": slice_,
               "Split": split, "Concat": concat, "Shape": shape_,
               **{op: elementwise for op in ("Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "PRelu", "Sum",
                                             "Mean")},
               **{op: reduce for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL1", "ReduceL2",
                                        "ReduceProd", "ReduceLogSumExp", "ReduceSumSquare")}}
NEW = {"Gather": ("index", gather), "Squeeze": ("index", squeeze), "Unsqueeze": ("index", squeeze),
       "Where": ("elementwise", where), "Attention": ("elementwise", attention)}
NEW_FIX = {"Attention": fix_attention}
KIND = {"Transpose": "index", "LayerNormalization": "stop", "Softmax": "pass", "LogSoftmax": "pass", "Shape": "pass"}


def _wrap(op: str, orig: OpRule) -> OpRule:
    fn = TOKEN_TRACE.get(op)
    if fn is None:
        return OpRule(orig.kind, _guard(op, orig), orig.fix)

    def trace(ctx, node, name, fn=fn, orig=orig):
        return fn(ctx, node, name, orig)
    fix = {"Reshape": fix_token_reshape, "Split": orig.fix}.get(op) or _fix_dispatch(orig.fix)  # split sizes: any axis
    return OpRule(KIND.get(op, orig.kind), trace, fix)


def _fix_dispatch(fix: Callable | None) -> Callable | None:
    if fix is None:
        return None

    def run(fx: TokenFixContext, node: onnx.NodeProto) -> None:
        if hasattr(fx, "axis") and any(fx.axis(t) != 1 for t in node.input[:1]):
            raise Unsupported(f"node '{node.name}': no shape fix for channels on a token axis")
        return fix(fx, node)
    return run


def token_rules(rules: dict[str, OpRule]) -> dict[str, OpRule]:
    """Every rule of `rules` wrapped for channel-last tensors, plus the ops only transformers need."""
    out = {op: _wrap(op, r) for op, r in rules.items()}
    for op, (kind, fn) in NEW.items():
        out[op] = OpRule(kind, lambda ctx, node, name, fn=fn: fn(ctx, node, name, None), NEW_FIX.get(op))
    return out


__all__ = ["token_rules", "head_split", "Parts", "TokenTraceContext", "TokenFixContext", "positions"]
