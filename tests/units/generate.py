"""A seeded generator of small random CNN graphs, built with onnx.helper, for the equivalence tests.

Each model is a stem (per-channel input normalisation + conv) followed by random blocks — conv chains, residual
blocks, DenseNet-like concat blocks, MobileNet-like depthwise + squeeze-excitation blocks, split/slice blocks,
pooling, an op the analysis does not support — and a head (global pool or flatten → Gemm / MatMul). Shapes are
tiny so a hundred graphs build, prune and run in seconds.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18


class Builder:
    def __init__(self, rng: np.random.Generator, batch: int | str = 2, channels: int = 3, hw: int = 8):
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.extra_outputs: list[str] = []
        self.k = 0
        self.batch = batch
        self.input = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, hw, hw])
        self.x, self.c, self.hw = "x", channels, hw

    # --- primitives
    def name(self, op: str) -> str:
        self.k += 1
        return f"{op.lower()}{self.k}"

    def const(self, value: np.ndarray, hint: str = "c") -> str:
        name = f"{hint}{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op: str, inputs: list[str], n_out: int = 1, domain: str = "", **attrs) -> list[str]:
        name = self.name(op)
        outs = [f"{name}_out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, domain=domain, **attrs))
        return outs

    def weight(self, *shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[1:])) or 1
        return (self.rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    def conv(self, x: str, cin: int, cout: int, k: int = 3, group: int = 1, bias: bool | None = None) -> str:
        bias = bool(self.rng.integers(2)) if bias is None else bias
        ins = [x, self.const(self.weight(cout, cin // group, k, k), "w")]
        if bias:
            ins.append(self.const(self.weight(cout, 1)[:, 0], "b"))
        return self.op("Conv", ins, kernel_shape=[k, k], pads=[k // 2] * 4, group=group)[0]

    def bn(self, x: str, c: int) -> str:
        r = self.rng
        p = [r.uniform(0.5, 1.5, c), r.normal(0, 0.1, c), r.normal(0, 0.1, c), r.uniform(0.5, 1.5, c)]
        return self.op("BatchNormalization", [x] + [self.const(v.astype(np.float32), "bn") for v in p])[0]

    def act(self, x: str) -> str:
        kind = self.rng.choice(["Relu", "Clip", "HardSigmoid", "Sigmoid", "LeakyRelu", "Tanh"])
        if kind == "Clip":
            return self.op("Clip", [x, self.const(np.float32(0), "lo"), self.const(np.float32(6), "hi")])[0]
        return self.op(kind, [x])[0]

    def channel_const(self, x: str, c: int) -> str:
        """Mul/Add by a per-channel ([C,1,1] or [1,C,1,1]) or scalar constant."""
        shape = [(c, 1, 1), (1, c, 1, 1), ()][self.rng.integers(3)]
        v = self.rng.uniform(0.5, 1.5, shape).astype(np.float32)
        return self.op(self.rng.choice(["Mul", "Add"]), [x, self.const(v, "k")])[0]

    # --- blocks: each maps (self.x, self.c) to a new (self.x, self.c)
    def stem(self) -> None:
        x = self.op("Mul", [self.x, self.const(self.rng.uniform(0.5, 2, (1, self.c, 1, 1)).astype(np.float32))])[0]
        x = self.op("Add", [x, self.const(self.rng.normal(0, 0.5, (self.c, 1, 1)).astype(np.float32))])[0]
        c = int(self.rng.integers(4, 9))
        self.x, self.c = self.act(self.bn(self.conv(x, self.c, c), c)), c

    def conv_chain(self) -> None:
        c = int(self.rng.integers(3, 11))
        y = self.conv(self.x, self.c, c, k=int(self.rng.choice([1, 3])))
        if self.rng.random() < 0.7:
            y = self.bn(y, c)
        if self.rng.random() < 0.4:
            y = self.channel_const(y, c)
        self.x, self.c = self.act(y), c

    def residual(self) -> None:
        c = int(self.rng.choice([self.c, self.rng.integers(3, 11)]))
        y = self.act(self.bn(self.conv(self.x, self.c, c), c))
        y = self.bn(self.conv(y, c, c), c)
        skip = self.x if c == self.c else self.bn(self.conv(self.x, self.c, c, k=1), c)
        out = self.op(self.rng.choice(["Add", "Add", "Sub", "Max"]), [y, skip])[0]
        self.x, self.c = self.act(out), c

    def dense(self) -> None:
        for _ in range(int(self.rng.integers(1, 3))):
            g = int(self.rng.integers(2, 6))
            new = self.conv(self.act(self.bn(self.x, self.c)), self.c, g)
            ins = [self.x, new] if self.rng.random() < 0.7 else [new, self.x]
            self.x, self.c = self.op("Concat", ins, axis=1)[0], self.c + g
        c = int(self.rng.integers(3, 9))  # transition
        self.x, self.c = self.conv(self.act(self.bn(self.x, self.c)), self.c, c, k=1), c

    def depthwise_se(self) -> None:
        c = int(self.rng.integers(4, 13))
        y = self.act(self.bn(self.conv(self.x, self.c, c, k=1), c))
        y = self.act(self.bn(self.conv(y, c, c, group=c), c))
        r = max(1, c // 4)
        s = self.op("GlobalAveragePool", [y])[0]
        s = self.op("Relu", [self.conv(s, c, r, k=1, bias=True)])[0]
        s = self.op(self.rng.choice(["HardSigmoid", "Sigmoid"]), [self.conv(s, r, c, k=1, bias=True)])[0]
        y = self.op("Mul", [y, s] if self.rng.random() < 0.5 else [s, y])[0]
        out = self.bn(self.conv(y, c, self.c, k=1), self.c) if self.rng.random() < 0.5 else None
        if out is not None:
            self.x = self.op("Add", [self.x, out])[0]
        else:
            self.x, self.c = y, c

    def split_block(self) -> None:
        a, b = int(self.rng.integers(2, 6)), int(self.rng.integers(2, 6))
        equal = self.rng.random() < 0.5
        if equal:
            a = b = (a + b) // 2
        y = self.conv(self.x, self.c, a + b)
        if equal:  # equal halves via num_outputs: the rewrite must turn this into explicit sizes
            p, q = self.op("Split", [y], n_out=2, axis=1, num_outputs=2)
        else:
            p, q = self.op("Split", [y, self.const(np.array([a, b], dtype=np.int64), "split")], n_out=2, axis=1)
        self.x, self.c = self.op("Concat", [self.act(q), self.act(p)], axis=1)[0], a + b

    def slice_block(self) -> None:
        c = int(self.rng.integers(4, 10))
        y = self.act(self.conv(self.x, self.c, c))
        lo, hi = 1, c - int(self.rng.integers(0, 2))
        ends = hi if self.rng.random() < 0.5 else (hi - c if hi < c else 2**62)
        ins = [y, self.const(np.array([lo], np.int64), "s"), self.const(np.array([ends], np.int64), "e"),
               self.const(np.array([1], np.int64), "a")]
        self.x, self.c = self.op("Slice", ins)[0], hi - lo

    def pool(self) -> None:
        if self.hw >= 4:
            op = self.rng.choice(["MaxPool", "AveragePool"])
            self.x, self.hw = self.op(op, [self.x], kernel_shape=[2, 2], strides=[2, 2])[0], self.hw // 2
        else:
            self.x = self.op("Pad", [self.x, self.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")])[0]
            self.x = self.op("MaxPool", [self.x], kernel_shape=[3, 3])[0]

    def grouped(self) -> None:
        """ResNeXt / RegNet: 1×1 → grouped conv (1 < group < C, sometimes C_out ≠ C_in) → 1×1, residual."""
        g, cg = int(self.rng.integers(2, 4)), int(self.rng.integers(2, 4))
        cg_out = cg if self.rng.random() < 0.6 else int(self.rng.integers(1, 4))
        y = self.act(self.bn(self.conv(self.x, self.c, g * cg, k=1), g * cg))
        y = self.act(self.bn(self.conv(y, g * cg, g * cg_out, group=g), g * cg_out))
        if self.rng.random() < 0.3:  # grouped conv straight into another grouped conv with other groups
            g2 = int(self.rng.choice([d for d in (1, 2, 3) if (g * cg_out) % d == 0]))
            y = self.act(self.conv(y, g * cg_out, g * cg_out, group=g2))
        out = self.bn(self.conv(y, g * cg_out, self.c, k=1), self.c)
        self.x = self.act(self.op("Add", [self.x, out])[0])

    def transpose_chain(self) -> None:
        """ConvTranspose → ConvTranspose (plain, grouped or depthwise), then a pool back to the size."""
        c1 = int(self.rng.integers(3, 8))
        w = self.const(self.weight(self.c, c1, 2, 2), "wt")
        y = self.act(self.op("ConvTranspose", [self.x, w], kernel_shape=[2, 2], strides=[2, 2])[0])
        g = int(self.rng.choice([d for d in (1, 2, 3, c1) if c1 % d == 0]))
        c2 = c1 if g == c1 else g * int(self.rng.integers(1, 4))
        ins = [y, self.const(self.weight(c1, c2 // g, 3, 3), "wt")]
        if self.rng.random() < 0.5:
            ins.append(self.const(self.weight(c2, 1)[:, 0], "b"))
        y = self.act(self.op("ConvTranspose", ins, kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=g)[0])
        self.x, self.c = self.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])[0], c2

    def shared_weight(self) -> None:
        """One kernel read by two convs (weight tying): their channels must go together, the weight not copied."""
        c = self.c
        w = self.const(self.weight(c, c, 3, 3), "tied")
        y = self.act(self.op("Conv", [self.x, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])[0])
        self.x = self.act(self.op("Conv", [y, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])[0])

    def identity_reshape(self) -> None:
        """A Reshape that keeps [N, C, H, W] but spells C out: [0, C, H, W] or [-1, C, H, W]."""
        first = 0 if self.rng.random() < 0.5 else -1
        shape = self.const(np.array([first, self.c, self.hw, self.hw], np.int64), "rs")
        self.x = self.act(self.op("Reshape", [self.act(self.conv(self.x, self.c, self.c)), shape])[0])

    def resize(self) -> None:
        """Resize (opset 18) with `axes`: scales on H, W only, or sizes over [C, H, W], then a pool back."""
        y = self.conv(self.x, self.c, self.c)
        if self.rng.random() < 0.5:
            y = self.op("Resize", [y, "", self.const(np.array([2, 2], np.float32), "sc")], mode="nearest",
                        axes=[2, 3])[0]
        else:
            sizes = self.const(np.array([self.c, 2 * self.hw, 2 * self.hw], np.int64), "sz")
            y = self.op("Resize", [y, "", "", sizes], mode="nearest", axes=[1, 2, 3])[0]
        self.x = self.op("MaxPool", [self.act(y)], kernel_shape=[2, 2], strides=[2, 2])[0]

    def shuffle(self) -> None:
        """ShuffleNetV2: a unit with two branches on the whole input, then 1–3 units that halve the channels (Slice
        at bounds computed from Shape as torch.chunk exports, or Split), run 1×1 → depthwise → 1×1 on one half, Concat
        and shuffle: Reshape [N, 2, C/2, H, W] → Transpose [0, 2, 1, 3, 4] → Reshape back, with constant targets or
        targets computed from Shape. Channels passed through are tied to the branch outputs pair by pair; a later
        unit may cut inside a tied pair (then its groups are refused)."""
        h = 2 * int(self.rng.integers(1, 3))
        c = 2 * h
        a = self.act(self.conv(self.x, self.c, h, k=1))
        b = self.act(self.bn(self.conv(self.x, self.c, h, k=1), h))
        self.x, self.c = self._shuffle(self.op("Concat", [a, b], axis=1)[0], c), c
        for _ in range(int(self.rng.integers(1, 4))):
            x1, x2 = self._halves(self.x, c)
            y = self.act(self.bn(self.conv(x2, h, h, k=1), h))
            y = self.bn(self.conv(y, h, h, group=h), h)
            y = self.act(self.conv(y, h, h, k=1))
            self.x = self._shuffle(self.op("Concat", [x1, y], axis=1)[0], c)

    def _dim(self, shape: str, i: int) -> str:
        d = self.op("Gather", [shape, self.const(np.array(i, np.int64), "i")], axis=0)[0]
        return self.op("Unsqueeze", [d, self.const(np.array([0], np.int64), "ax")])[0]

    def _halves(self, x: str, c: int) -> tuple[str, str]:
        kind = self.rng.integers(3)
        if kind == 0:  # torch.chunk: bounds from Shape (C + 1) / 2
            cdim = self._dim(self.op("Shape", [x])[0], 1)
            half = self.op("Div", [self.op("Add", [cdim, self.const(np.array([1], np.int64), "one")])[0],
                                   self.const(np.array([2], np.int64), "two")])[0]
            ax = self.const(np.array([1], np.int64), "ax1")
            return (self.op("Slice", [x, self.const(np.array([0], np.int64), "s0"), half, ax])[0],
                    self.op("Slice", [x, half, self.const(np.array([2**62], np.int64), "big"), ax])[0])
        if kind == 1:
            return tuple(self.op("Split", [x], n_out=2, axis=1, num_outputs=2))
        return tuple(self.op("Split", [x, self.const(np.array([c // 2, c // 2], np.int64), "split")], n_out=2, axis=1))

    def _shuffle(self, x: str, c: int) -> str:
        if self.rng.random() < 0.5:
            first = self.const(np.array([0, 2, c // 2, self.hw, self.hw], np.int64), "shp")
            back = self.const(np.array([0, c, self.hw, self.hw], np.int64), "shp")
        else:  # computed from Shape, as torch exports view(n, g, c // g, h, w) with a dynamic batch
            shape = self.op("Shape", [x])[0]
            n, cd, hh, ww = (self._dim(shape, i) for i in range(4))
            half = self.op("Div", [cd, self.const(np.array([2], np.int64), "two")])[0]
            first = self.op("Concat", [n, self.const(np.array([2], np.int64), "g"), half, hh, ww], axis=0)[0]
            back = self.op("Concat", [n, cd, hh, ww], axis=0)[0]
        t = self.op("Transpose", [self.op("Reshape", [x, first])[0]], perm=[0, 2, 1, 3, 4])[0]
        return self.op("Reshape", [t, back])[0]

    def unsupported(self) -> None:
        """An op that mixes channels: the groups around it must become unprunable, nothing must crash."""
        if self.rng.random() < 0.5:
            self.x = self.op("Softmax", [self.x], axis=1)[0]
        else:
            self.x = self.op("LRN", [self.x], size=3)[0]

    def side_output(self) -> None:
        self.extra_outputs.append(self.x)

    # --- heads
    def head(self, classes: int = 5) -> str:
        kind = self.rng.integers(4)
        if kind == 0:  # global pool → flatten → gemm
            f = self.op("Flatten", [self.op("GlobalAveragePool", [self.x])[0]], axis=1)[0]
            feats = self.c
        elif kind == 1 or (kind == 3 and not isinstance(self.batch, int)):  # flatten with hw > 1 → gemm
            f, feats = self.op("Flatten", [self.x], axis=1)[0], self.c * self.hw * self.hw
        elif kind == 2:  # reduce mean → matmul + bias
            f = self.op("ReduceMean", [self.x, self.const(np.array([2, 3], np.int64), "ax")], keepdims=0)[0]
            h = self.op("MatMul", [f, self.const(self.weight(classes, self.c).T.copy(), "mm")])[0]
            return self.op("Add", [h, self.const(self.weight(classes, 1)[:, 0], "mb")])[0]
        else:  # reshape with a literal feature count
            feats = self.c * self.hw * self.hw
            f = self.op("Reshape", [self.x, self.const(np.array([self.batch, feats], np.int64), "shape")])[0]
        if self.rng.random() < 0.5:  # hidden layer
            hidden = int(self.rng.integers(4, 10))
            f = self.op("Relu", [self._gemm(f, feats, hidden)])[0]
            feats = hidden
        return self._gemm(f, feats, classes)

    def seg_head(self, classes: int = 4) -> str:
        """A segmentation head: conv → BN → act → 1×1 conv to per-position class scores (N, classes, H, W)."""
        c = int(self.rng.integers(6, 12))
        y = self.act(self.bn(self.conv(self.x, self.c, c), c))
        return self.conv(y, c, classes, k=1, bias=True)

    def _gemm(self, f: str, k: int, m: int) -> str:
        trans = int(self.rng.integers(2))
        w = self.weight(m, k) if trans else self.weight(m, k).T.copy()
        return self.op("Gemm", [f, self.const(w, "fc"), self.const(self.weight(m, 1)[:, 0], "fb")], transB=trans)[0]

    def model(self, out: str) -> onnx.ModelProto:
        outputs = [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)]
        outputs += [helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in self.extra_outputs]
        graph = helper.make_graph(self.nodes, "generated", [self.input], outputs, self.inits)
        domains = sorted({n.domain for n in self.nodes} - {""})
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]
                              + [helper.make_opsetid(d, 1) for d in domains])
        m.ir_version = 9
        return onnx.shape_inference.infer_shapes(m)


BLOCKS = ["conv_chain", "residual", "dense", "depthwise_se", "split_block", "slice_block", "pool", "grouped",
          "transpose_chain", "shared_weight", "identity_reshape", "resize"]
# `shuffle` is built by its own tests (tests/rewrite/test_channel_rules.py), not drawn here: adding a block to this
# list changes every seeded model, and other tests rely on what a seed builds


def random_model(seed: int, unsupported: bool | None = None) -> onnx.ModelProto:
    """A random CNN: stem, 2–5 random blocks, sometimes an unsupported op or a side output, and a head."""
    rng = np.random.default_rng(seed)
    b = Builder(rng, batch=2 if rng.random() < 0.8 else "N")
    b.stem()
    blocks = list(rng.choice(BLOCKS, size=int(rng.integers(2, 6))))
    if unsupported if unsupported is not None else rng.random() < 0.15:
        blocks.insert(int(rng.integers(len(blocks) + 1)), "unsupported")
    if rng.random() < 0.1:
        blocks.insert(int(rng.integers(len(blocks) + 1)), "side_output")
    for name in blocks:
        getattr(b, name)()
    return b.model(b.head())


def random_keep(groups, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random kept subsets for every prunable group, keeping ≥ 1 channel in every range a member sees."""
    keep = {}
    for g in groups:
        if not g.prunable or g.size < 2:
            continue
        k = set(rng.choice(g.size, int(rng.integers(1, g.size)), replace=False).tolist())  # remove ≥ 1
        for m in g.members:
            if not k & set(range(m.lo, m.hi)):
                k.add(int(rng.integers(m.lo, m.hi)))
        keep[g.id] = np.array(sorted(k))
    return keep
