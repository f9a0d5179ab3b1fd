"""Tiny generated ONNX graphs for the recover/ tests (onnx.helper; deterministic weights)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]
MODELS = sorted((REPO / "models").glob("*.onnx"))


class _B:
    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.k = 0

    def w(self, shape, scale=None, name=None, dtype=np.float32):
        self.k += 1
        name = name or f"w{self.k}"
        fan = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = (1.0 / np.sqrt(fan)) if scale is None else scale
        self.inits.append(numpy_helper.from_array((self.rng.normal(size=shape) * scale).astype(dtype), name))
        return name

    def c(self, value, name=None):
        self.k += 1
        name = name or f"c{self.k}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def n(self, op, ins, nout=1, **attrs):
        self.k += 1
        outs = [f"t{self.k}_{i}" for i in range(nout)]
        self.nodes.append(helper.make_node(op, ins, outs, name=f"{op.lower()}{self.k}", **attrs))
        return outs[0] if nout == 1 else outs

    def conv(self, x, cin, cout, k=3, group=1, bn=True, act="Relu", **attrs):
        attrs.setdefault("pads", [k // 2] * 4)
        y = self.n("Conv", [x, self.w((cout, cin // group, k, k)), self.w((cout,), 0.1)], group=group,
                   kernel_shape=[k, k], **attrs)
        if bn:
            y = self.n("BatchNormalization", [y, self.c(self.rng.uniform(0.5, 1.5, cout).astype(np.float32)),
                                              self.w((cout,), 0.1),
                                              self.w((cout,), 0.1),
                                              self.c(self.rng.uniform(0.5, 2.0, cout).astype(np.float32))])
        if act:
            y = self.n(act, [y])
        return y

    def model(self, x_shape, out, opset=18) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                               ["batch", *x_shape[1:]])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 9
        return m


def _finish(b: _B, last: str, x_shape, opset=18, out_shape=None) -> onnx.ModelProto:
    b.nodes.append(helper.make_node("Identity", [last], ["out"], name="out_id"))
    m = b.model(x_shape, "out", opset)
    if out_shape is not None:
        m.graph.output[0].CopyFrom(helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape))
    else:
        inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
        out_vi = next(v for v in inferred.graph.value_info if v.name == last)
        m.graph.output[0].type.CopyFrom(out_vi.type)
    onnx.checker.check_model(m, full_check=True)
    return m


def _head(b: _B, y: str, c: int, classes: int = 5) -> str:
    y = b.n("GlobalAveragePool", [y])
    y = b.n("Flatten", [y], axis=1)
    return b.n("Gemm", [y, b.w((classes, c)), b.w((classes,), 0.1)], transB=1)


def conv_chain() -> onnx.ModelProto:
    b = _B(1)
    x = b.n("Mul", ["input", b.c(np.float32(1 / 255))])
    x = b.n("Add", [x, b.c(np.array([-0.5, -0.4, -0.3], np.float32).reshape(3, 1, 1))])
    y = b.conv(x, 3, 8, strides=[2, 2], pads=[0, 0, 1, 1])
    y = b.conv(y, 8, 8, dilations=[2, 2], pads=[2, 2, 2, 2])
    y = b.n("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    y = b.conv(y, 8, 6, k=1, pads=[0, 0, 0, 0], act="LeakyRelu")
    return _finish(b, _head(b, y, 6), (1, 3, 16, 16))


def residual() -> onnx.ModelProto:
    b = _B(2)
    x = b.conv("input", 3, 8)
    y = b.conv(x, 8, 8)
    y = b.conv(y, 8, 8, act=None)
    y = b.n("Relu", [b.n("Add", [x, y])])
    z = b.conv(y, 8, 8, strides=[2, 2])
    s = b.conv(y, 8, 8, k=1, strides=[2, 2], pads=[0, 0, 0, 0], act=None)
    y = b.n("Relu", [b.n("Add", [z, s])])
    return _finish(b, _head(b, y, 8), (1, 3, 12, 12))


def concat() -> onnx.ModelProto:
    b = _B(3)
    x = b.conv("input", 3, 6)
    y = b.conv(x, 6, 4)
    z = b.n("Concat", [x, y], axis=1)
    w = b.conv(z, 10, 4)
    z = b.n("Concat", [z, w], axis=1)
    z = b.n("AveragePool", [z], kernel_shape=[2, 2], strides=[2, 2])
    return _finish(b, _head(b, z, 14), (1, 3, 10, 10))


def depthwise_se() -> onnx.ModelProto:
    b = _B(4)
    x = b.conv("input", 3, 8, act="HardSwish")
    y = b.conv(x, 8, 8, group=8, act=None)
    y = b.n("Clip", [y, b.c(np.float32(0)), b.c(np.float32(6))])
    s = b.n("GlobalAveragePool", [y])
    s = b.conv(s, 8, 4, k=1, bn=False, pads=[0, 0, 0, 0])
    s = b.conv(s, 4, 8, k=1, bn=False, pads=[0, 0, 0, 0], act="HardSigmoid")
    y = b.n("Mul", [y, s])
    y = b.conv(y, 8, 6, k=1, pads=[0, 0, 0, 0], act=None)
    return _finish(b, _head(b, y, 6), (1, 3, 9, 9))


def flatten_gemm() -> onnx.ModelProto:
    b = _B(5)
    x = b.conv("input", 1, 4, strides=[2, 2])
    x = b.n("Flatten", [x], axis=1)
    x = b.n("Gemm", [x, b.w((64, 10)), b.w((10,), 0.1)], alpha=0.7, beta=1.3)
    x = b.n("Relu", [x])
    x = b.n("Gemm", [x, b.w((3, 10)), b.w((1, 3), 0.1)], transB=1)
    return _finish(b, x, (1, 1, 8, 8))


def grouped_conv() -> onnx.ModelProto:
    b = _B(6)
    x = b.conv("input", 4, 8, group=2)
    x = b.conv(x, 8, 12, group=4, strides=[2, 2], pads=[1, 0, 1, 2])
    x = b.n("PRelu", [x, b.c((np.linspace(0.05, 0.3, 12)).astype(np.float32).reshape(12, 1, 1))])
    return _finish(b, _head(b, x, 12), (1, 4, 9, 9))


def conv_transpose() -> onnx.ModelProto:
    b = _B(7)
    x = b.conv("input", 3, 6, strides=[2, 2])
    x = b.n("ConvTranspose", [x, b.w((6, 4, 3, 3)), b.w((4,), 0.1)], strides=[2, 2], pads=[1, 1, 1, 1],
            output_padding=[1, 1])
    x = b.n("ConvTranspose", [x, b.w((4, 2, 2, 2)), b.w((4,), 0.1)], group=2, strides=[2, 2],
            pads=[0, 1, 1, 0])
    x = b.n("Relu", [x])
    return _finish(b, _head(b, x, 4), (1, 3, 8, 8))


def reshape_transpose() -> onnx.ModelProto:
    b = _B(8)
    x = b.conv("input", 3, 8, act="Sigmoid")
    x = b.n("Reshape", [x, b.c(np.array([0, 2, 4, -1], np.int64))])
    x = b.n("Transpose", [x], perm=[0, 2, 1, 3])
    x = b.n("Reshape", [x, b.c(np.array([0, -1], np.int64))])
    x = b.n("MatMul", [x, b.w((8 * 36, 5))])
    x = b.n("Add", [x, b.w((5,), 0.1)])
    x = b.n("Softmax", [x], axis=-1)
    return _finish(b, x, (1, 3, 6, 6))


def op_zoo() -> onnx.ModelProto:
    """Shape plumbing and the less common ops in one graph."""
    b = _B(9)
    x = b.conv("input", 3, 8, act="Gelu")
    x = b.n("Pad", [x, b.c(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)), b.c(np.float32(0))], mode="reflect")
    a, c = b.n("Split", [x, b.c(np.array([3, 5], np.int64))], nout=2, axis=1)
    a = b.n("Elu", [a])
    c = b.n("Mish", [c])
    c = b.n("InstanceNormalization", [c, b.w((5,), 1.0), b.w((5,), 0.1)])
    x = b.n("Concat", [a, c], axis=1)
    x = b.n("Slice", [x, b.c(np.array([1, -1], np.int64)), b.c(np.array([-1, 0], np.int64)),
                      b.c(np.array([2, 3], np.int64)), b.c(np.array([1, -1], np.int64))])
    x = b.n("Resize", [x, "", b.c(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    x = b.n("Resize", [x, "", "", b.c(np.array([7, 9], np.int64))], mode="linear", axes=[2, 3])
    x = b.n("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1])
    x = b.n("AveragePool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)
    ln = b.n("LayerNormalization", [x, b.w((5,), 1.0), b.w((5,), 0.1)], axis=-1)
    x = b.n("Add", [ln, b.n("Tanh", [x])])
    shp = b.n("Shape", [x])
    n = b.n("Gather", [shp, b.c(np.array([0], np.int64))], axis=0)
    r = b.n("ReduceMean", [x, b.c(np.array([2, 3], np.int64))], keepdims=1)
    r = b.n("Reshape", [r, b.n("Concat", [n, b.c(np.array([-1], np.int64))], axis=0)])
    m = b.n("ReduceMax", [x, b.c(np.array([-1], np.int64))], keepdims=0)
    m = b.n("ReduceSum", [m, b.c(np.array([2], np.int64))], keepdims=0)
    y = b.n("Sum", [r, m, b.n("Softplus", [r])])
    y = b.n("Clip", [y, b.c(np.float32(-3)), ""])
    y = b.n("Unsqueeze", [y, b.c(np.array([1], np.int64))])
    y = b.n("Squeeze", [y, b.c(np.array([1], np.int64))])
    g = b.n("Greater", [y, b.c(np.float32(0.1))])
    y = b.n("Where", [g, y, b.n("Neg", [b.n("Abs", [y])])])
    y = b.n("Gemm", [y, b.w((8, 4))])
    e = b.n("Expand", [b.n("Max", [y, b.c(np.float32(0))]), b.c(np.array([1, 4], np.int64))])
    y = b.n("LogSoftmax", [b.n("Mean", [y, e])], axis=1)
    return _finish(b, y, (1, 3, 10, 10), opset=20, out_shape=["batch", 4])


GENERATED = {"conv_chain": conv_chain, "residual": residual, "concat": concat, "depthwise_se": depthwise_se,
             "flatten_gemm": flatten_gemm, "grouped_conv": grouped_conv, "conv_transpose": conv_transpose,
             "reshape_transpose": reshape_transpose, "op_zoo": op_zoo}


def input_shape(model: onnx.ModelProto, batch: int) -> tuple[int, ...]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return (batch, *[d.dim_value for d in dims[1:]])


def tiny_data(model: onnx.ModelProto, n: int, seed: int = 0, labels: int | None = 5):
    """A duck-typed dataset (inputs / labels / subset / batches) of random inputs in [0, 255]."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, size=input_shape(model, n)).astype(np.float32)
    y = rng.integers(0, labels, n) if labels else None
    return ArrayData({model.graph.input[0].name: x}, y)


class ArrayData:
    def __init__(self, inputs: dict[str, np.ndarray], labels: np.ndarray | None):
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def subset(self, idx):
        return ArrayData({k: v[idx] for k, v in self.inputs.items()}, None if self.labels is None else self.labels[idx])

    def batches(self, batch_size: int):
        for i in range(0, len(self), batch_size):
            yield {k: np.ascontiguousarray(v[i:i + batch_size], dtype=np.float32) for k, v in self.inputs.items()}
