"""Graph instrumentation: expose the tensors a statistic needs as typed graph outputs, reducing them in-graph.

A *tap* is one extra graph output computed from an existing tensor x:

| what           | graph                                                          | shape  |
|----------------|----------------------------------------------------------------|--------|
| `raw`          | the tensor itself                                              | as is  |
| `mean`         | GlobalAveragePool → Flatten (spatial mean)                     | (B, C) |
| `zfrac`        | GlobalAveragePool(Cast(Equal(x, 0))) → Flatten                 | (B, C) |
| `sqmean`       | GlobalAveragePool(x·x) → Flatten (× positions = Σx²)           | (B, C) |
| `sqsum`        | ReduceSumSquare over the spatial axes (dynamic sizes)          | (B, C) |
| `active`       | GlobalMaxPool of [x in the activation's non-blind              | (B, C) |
|                | interval] (for ReLU simply GlobalMaxPool(x))                   |        |
| `class_first`  | Gather(v, [0]): the batch's first sample                       | (1, F) |
| `class_sum`    | MatMul(onehot, v − shift): per-class sums                      | (K, F) |
| `class_sumsq`  | MatMul(ones, (v − shift)²): sum of squares, all classes        | (F,)   |
| CLASS_COUNT    | ReduceSum(onehot, axis 1): samples per class (one per graph)   | (K,)   |

So only (B, C) arrays cross into numpy for conv maps. Global pooling is used instead of ReduceMean/ReduceMax because
onnxruntime runs it on its blocked NCHWc layout: the tapped map of a fused NCHWc Conv is then not reordered back to
NCHW in full (measured: ~1.15× instead of ~1.5× plain inference on ResNet-20 for the F-screen taps). Opset ≥ 18
reductions take `axes` as an input, older ones as an attribute; both are handled.

Class sums are per *batch*, not per sample: one batch's per-class sums and sum of squares about a fixed shift (the
input of `ClassMoments.add_sums`, added up across batches in float64), so the (B, F) values never leave the graph —
fetching them and doing the one-hot GEMMs in numpy float64 cost as much as the inference itself on an MLP. v is the
tap's `view` of x as (B, F) in the accumulation type: "features" = x itself (rank 2) or Flatten(x), "channels" = the
`mean` tap — a copy only where x is not already that. shift is a graph input per tensor view (`Tap.shift_input`),
fed with the first sample's values, which the collector reads once from `class_first` (see `collect._shifts`; a
graph output that forced a copy of v, or an in-graph choice between v[0] and the fed shift, cost more per batch).
onehot = OneHot(labels, K, axis=0), (K, B); labels are the true labels fed as the graph input LABELS, or
ArgMax(Flatten(model output)) computed in-graph (label-free mode), as `Classes` says. The sum of squares is over all
classes together — the F statistic needs only the total within-class sum of squares (`ClassMoments`) — and a
ones-vector MatMul is cheaper than a second one-hot one. Sums are taken in float32 (float64 for double tensors:
`sum_type`); 16-bit tensors are upcast first, their squares would overflow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import OnnxPruneError

PREFIX = "onnxprune_stats"
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
LAYER_OPS = ("Gemm", "MatMul", "Conv")


CLASS_SUMS = ("class_sum", "class_sumsq")
CLASS_TAPS = ("class_first", *CLASS_SUMS)
LABELS = f"{PREFIX}/labels"  # graph input of the true labels, (B,) int64, when class taps use them
CLASS_COUNT = f"{PREFIX}/class_count"  # graph output: samples per class in the batch, (K,) float32


@dataclass(frozen=True)
class Tap:
    tensor: str
    what: str  # see the table above
    lo: float = -math.inf  # `active` only: the activation's non-blind interval (lo, hi)
    hi: float = math.inf
    view: str = "features"  # class taps only: over Flatten(x) ("features") or the spatial means ("channels")

    @property
    def output(self) -> str:
        if self.what == "raw":
            return self.tensor
        if self.what in CLASS_TAPS:
            return f"{PREFIX}/{self.what}/{self.view}/{self.tensor}"
        return f"{PREFIX}/{self.what}/{self.tensor}"

    @property
    def per_sample(self) -> bool:
        """One row per sample (False for the per-batch class taps)."""
        return self.what not in CLASS_TAPS

    @property
    def shift_input(self) -> str:
        """Class taps: the graph input holding the shift the sums are taken about, (1, F) or broadcastable."""
        return f"{PREFIX}/shift/{self.view}/{self.tensor}"


@dataclass(frozen=True)
class Classes:
    """Where the class taps' labels come from: the fed graph input LABELS (`predicted` None), or the argmax of the
    graph output `predicted`. `k` classes; 0 = the width of that output, read at run time."""

    k: int
    predicted: str | None = None


def sum_type(elem: int) -> int:
    """Element type class sums are accumulated in: double for double tensors, else float32."""
    return TensorProto.DOUBLE if elem == TensorProto.DOUBLE else TensorProto.FLOAT


@dataclass(frozen=True)
class TensorInfo:
    elem_type: int
    rank: int | None
    shape: tuple  # dims: int, str (symbolic) or None


def tensor_infos(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Element type and rank of every tensor that shape inference can type (inputs, outputs, intermediates)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_without_weights(model), strict_mode=False)
    except Exception:  # noqa: BLE001 - fall back to whatever the file declares
        inferred = model
    out: dict[str, TensorInfo] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if not tt.elem_type:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim) \
            if tt.HasField("shape") else ()
        out[vi.name] = TensorInfo(tt.elem_type, len(shape) if tt.HasField("shape") else None, shape)
    for t in g.initializer:
        out[t.name] = TensorInfo(t.data_type, len(t.dims), tuple(t.dims))
    return out


def _without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose large float initializers keep their type and dims but not their data.

    Shape inference needs no more (small constants such as Reshape shapes or Resize scales keep their values), and
    passing megabytes of weights in and out of onnx's C++ inference was most of its cost: 2.7 of 3 ms on
    LeNet-300-100, a noticeable share of its whole statistics pass.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        if t.data_type in FLOAT_TYPES and math.prod(t.dims) > 1024:
            for f in ("raw_data", "float_data", "double_data", "int32_data"):
                t.ClearField(f)
    return m


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    c: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            c.setdefault(i, []).append(n)
    return c


def node_id(node: onnx.NodeProto) -> str:
    """A node's name, or its first output when the exporter left it unnamed."""
    return node.name or node.output[0]


def find_node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    for n in model.graph.node:
        if n.name == name or (not n.name and n.output and n.output[0] == name):
            return n
    for n in model.graph.node:  # also accept the first output name of a named node
        if n.output and n.output[0] == name:
            return n
    raise OnnxPruneError(f"no node named '{name}' in the model")


def _const(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    return None


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    return 1


# ---------------------------------------------------------------- layers and the activation that follows them
def following_activation(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[str, str, float, float] | None:
    """(activation output tensor, activation op, lo, hi) for the activation right after a layer, or None.

    Walks single-consumer chains through BatchNormalization and elementwise Add/Sub/Mul/Div with a constant operand
    (bias / per-channel affine), then expects a ReLU-like op. A residual Add (non-constant second operand) or any
    other op ends the walk: None, and every sample is kept.

    The blind range is tested on the activation's *output* y, which is equivalent and cheaper than fetching the
    pre-activation p: the derivative is non-zero exactly when lo < y < hi — ReLU y > 0 ⇔ p > 0; Clip(min, max)
    min < y < max ⇔ min < p < max; HardSigmoid 0 < y < 1 ⇔ p unsaturated. The output is usually tapped anyway (it is
    the next layer's input), and tapping the pre-activation would stop onnxruntime fusing Conv+ReLU.
    """
    cons = consumers(model)
    inits = {t.name for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    t = node.output[0]
    for _ in range(8):
        nxt = cons.get(t, [])
        if len(nxt) != 1 or t in outputs:
            return None
        n = nxt[0]
        if n.op_type == "Relu":
            return n.output[0], "Relu", 0.0, math.inf
        if n.op_type == "Clip":
            if opset(model) < 11:
                lo, hi = _attr(n, "min", None), _attr(n, "max", None)
            else:
                has_lo, has_hi = len(n.input) > 1 and n.input[1], len(n.input) > 2 and n.input[2]
                lo = _const(model, n.input[1]) if has_lo else None
                hi = _const(model, n.input[2]) if has_hi else None
                if (has_lo and lo is None) or (has_hi and hi is None):
                    return None  # dynamic bounds: unknown blind range
            lo_f = -math.inf if lo is None else float(np.asarray(lo).reshape(-1)[0])
            hi_f = math.inf if hi is None else float(np.asarray(hi).reshape(-1)[0])
            return n.output[0], "Clip", lo_f, hi_f
        if n.op_type == "HardSigmoid":
            return n.output[0], "HardSigmoid", 0.0, 1.0
        if n.op_type == "BatchNormalization" or (
                n.op_type in ("Add", "Sub", "Mul", "Div") and len(n.input) == 2
                and all(i == t or i in inits for i in n.input) and any(i in inits for i in n.input)):
            t = n.output[0]
            continue
        return None
    return None


@dataclass
class Layer:
    node: onnx.NodeProto
    name: str
    input: str
    weight: np.ndarray  # (out, in) float64; Conv: kernel summed over spatial axes → (out, in/groups)
    bias: np.ndarray | None
    groups: int
    kind: str  # "features" (Gemm/MatMul) | "channels" (Conv)


def layer_info(model: onnx.ModelProto, name: str) -> Layer:
    """The weight of a Gemm / MatMul (constant weight) / Conv node as an (out, in) matrix, plus bias and groups."""
    node = find_node(model, name)
    if node.op_type not in LAYER_OPS:
        raise OnnxPruneError(f"layer '{name}' is a {node.op_type}; contributions need a Gemm, MatMul or Conv node")
    if node.op_type == "Gemm":
        w = _const(model, node.input[1])
        if w is None:
            raise OnnxPruneError(f"layer '{name}': Gemm weight '{node.input[1]}' is not a constant")
        if _attr(node, "transA", 0):
            raise OnnxPruneError(f"layer '{name}': Gemm with transA=1 is not supported")
        w = w.astype(np.float64) * float(_attr(node, "alpha", 1.0))
        w = w if _attr(node, "transB", 0) else w.T
        bias = None
        if len(node.input) > 2 and node.input[2]:
            c = _const(model, node.input[2])
            if c is None:
                raise OnnxPruneError(f"layer '{name}': Gemm bias '{node.input[2]}' is not a constant")
            bias = np.broadcast_to(c.astype(np.float64).reshape(-1) * float(_attr(node, "beta", 1.0)),
                                   (w.shape[0],)).copy() if c.size in (1, w.shape[0]) else None
            if bias is None:
                raise OnnxPruneError(f"layer '{name}': Gemm bias of shape {c.shape} is not per output neuron")
        return Layer(node, name, node.input[0], w, bias, 1, "features")
    if node.op_type == "MatMul":
        w = _const(model, node.input[1])
        if w is None or w.ndim != 2:
            raise OnnxPruneError(f"layer '{name}': MatMul needs a constant 2-D weight as its second input")
        w = w.astype(np.float64).T
        bias = None
        nxt = consumers(model).get(node.output[0], [])
        if len(nxt) == 1 and nxt[0].op_type == "Add":
            other = [i for i in nxt[0].input if i != node.output[0]]
            c = _const(model, other[0]) if other else None
            if c is not None and c.size == w.shape[0]:
                bias = c.astype(np.float64).reshape(-1)
        return Layer(node, name, node.input[0], w, bias, 1, "features")
    w = _const(model, node.input[1])
    if w is None:
        raise OnnxPruneError(f"layer '{name}': Conv weight '{node.input[1]}' is not a constant")
    bias = _const(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    w2 = w.astype(np.float64).reshape(w.shape[0], w.shape[1], -1).sum(-1)
    return Layer(node, name, node.input[0], w2, None if bias is None else bias.astype(np.float64).reshape(-1),
                 int(_attr(node, "group", 1)), "channels")


# ---------------------------------------------------------------- building the instrumented model
def instrument(model: onnx.ModelProto, taps: list[Tap], infos: dict[str, TensorInfo] | None = None,
               keep_outputs: bool = True, classes: Classes | None = None) -> onnx.ModelProto:
    """A copy of `model` whose graph outputs are (the original outputs +) one output per tap, plus CLASS_COUNT when
    there are class taps (their labels come from `classes`)."""
    infos = tensor_infos(model) if infos is None else infos
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    if not keep_outputs:
        del g.output[:]
    have = {o.name for o in g.output}
    v = opset(m)
    made: set[str] = set()  # every tensor this function has already produced (nodes are shared, never duplicated)
    made_consts: dict[tuple[int, float], str] = {}

    def once(out: str, make) -> str:
        if out not in made:
            make(out)
            made.add(out)
        return out

    def node(op: str, inputs: list[str], out: str, **attrs) -> None:
        g.node.append(helper.make_node(op, inputs, [out], **attrs))

    def ints(values: tuple[int, ...]) -> str:
        return once(f"{PREFIX}/ints/{'_'.join(map(str, values))}",
                    lambda o: g.initializer.append(numpy_helper.from_array(np.array(values, np.int64), o)))

    def floats(values: tuple[float, ...]) -> str:
        return once(f"{PREFIX}/floats/{'_'.join(map(str, values))}",
                    lambda o: g.initializer.append(numpy_helper.from_array(np.array(values, np.float32), o)))

    def scalar(elem: int, value: float) -> str:
        key = (elem, value)
        if key not in made_consts:
            name = f"{PREFIX}/const/{len(made_consts)}"
            dtype = helper.tensor_dtype_to_np_dtype(elem)
            g.initializer.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
            made_consts[key] = name
        return made_consts[key]

    def reduce(op: str, x: str, axes: tuple[int, ...], out: str) -> None:
        if v >= 18 or (op == "ReduceSum" and v >= 13):  # axes as an input
            node(op, [x, ints(axes)], out, keepdims=0)
        else:
            node(op, [x], out, axes=list(axes), keepdims=0)

    def pool(x: str, out: str, op: str = "GlobalAveragePool") -> None:
        # Global{Average,Max}Pool + Flatten rather than ReduceMean/Max: onnxruntime runs global pooling on its blocked
        # NCHWc layout, so a tapped map produced by a fused NCHWc Conv is not reordered back to NCHW in full.
        node(op, [x], f"{out}/gap")
        node("Flatten", [f"{out}/gap"], out, axis=1)

    # ---- class sums: labels → one-hot (K, B) → per-class sums of the centred (B, F) values, all in-graph
    def labels() -> str:
        """(B,) int64: the fed true labels, or the argmax of the model's (flattened) prediction output."""
        if classes.predicted is None:
            return once(LABELS, lambda o: g.input.append(helper.make_tensor_value_info(o, TensorProto.INT64, [None])))
        return once(f"{PREFIX}/predicted", lambda o: node("ArgMax", [prediction()], o, axis=1, keepdims=0))

    def prediction() -> str:
        return once(f"{PREFIX}/prediction", lambda o: node("Flatten", [classes.predicted], o, axis=1))

    def depth() -> str:
        if classes.k:
            return ints((classes.k,))
        # predicted mode with a symbolic output width: that width, read at run time
        shape = once(f"{PREFIX}/prediction/shape", lambda o: node("Shape", [prediction()], o))
        return once(f"{PREFIX}/prediction/width", lambda o: node("Gather", [shape, ints((1,))], o, axis=0))

    def onehot(elem: int = TensorProto.FLOAT) -> str:
        """(K, B) one-hot of the labels in `elem` (onnxruntime's OneHot makes float32; double is cast from it)."""
        if v < 9:
            raise OnnxPruneError(f"class statistics need opset >= 9 (OneHot); the model is opset {v} — upgrade it "
                                 f"with onnx.version_converter")
        y = labels()
        hot = once(f"{PREFIX}/onehot", lambda o: node("OneHot", [y, depth(), floats((0.0, 1.0))], o, axis=0))
        if elem == TensorProto.FLOAT:
            return hot
        return once(f"{hot}/{TensorProto.DataType.Name(elem)}", lambda o: node("Cast", [hot], o, to=elem))

    def values(tap: Tap, elem: int) -> str:
        """v: the tap's view of x as (B, F) in the accumulation type `elem`; a new tensor only where needed."""
        x = build(Tap(tap.tensor, "mean")) if tap.view == "channels" else tap.tensor
        if tap.view == "features" and infos[tap.tensor].rank != 2:
            x = once(f"{PREFIX}/flat/{tap.tensor}", lambda o: node("Flatten", [tap.tensor], o, axis=1))
        if infos[tap.tensor].elem_type == elem:
            return x
        return once(f"{x}/{TensorProto.DataType.Name(elem)}", lambda o: node("Cast", [x], o, to=elem))

    def ones(elem: int) -> str:
        """(B,) ones: Σ over the batch as a matrix-vector product (onnxruntime's ReduceSum over axis 0 is slower)."""
        shape = once(f"{PREFIX}/batch_shape", lambda o: node("Shape", [labels()], o))
        value = helper.make_tensor("one", elem, [1], [1.0])
        return once(f"{PREFIX}/ones/{TensorProto.DataType.Name(elem)}",
                    lambda o: node("ConstantOfShape", [shape], o, value=value))

    def class_tap(tap: Tap, elem: int, out: str) -> None:
        x = values(tap, elem)
        if tap.what == "class_first":
            node("Gather", [x, ints((0,))], out, axis=0)
            return
        shift = once(tap.shift_input, lambda o: g.input.append(helper.make_tensor_value_info(o, elem, None)))
        d = once(f"{x}/centred", lambda o: node("Sub", [x, shift], o))
        if tap.what == "class_sum":
            node("MatMul", [onehot(elem), d], out)
        else:
            node("MatMul", [ones(elem), once(f"{d}/sq", lambda o: node("Mul", [d, d], o))], out)

    def build(tap: Tap) -> str:
        """The tensor holding `tap`'s value (made once)."""
        if tap.what == "raw":
            return tap.tensor
        return once(tap.output, lambda out: make(tap, out))

    def make(tap: Tap, out: str) -> None:
        info = infos[tap.tensor]
        if tap.what in CLASS_TAPS:
            class_tap(tap, sum_type(info.elem_type), out)
            return
        if info.rank is None or info.rank < 3:
            raise OnnxPruneError(f"tensor '{tap.tensor}': a channel map needs rank >= 3 (N, C, ...), "
                                 f"got {'unknown rank' if info.rank is None else f'rank {info.rank}'}")
        axes = tuple(range(2, info.rank))
        if tap.what == "mean":
            pool(tap.tensor, out)
        elif tap.what == "sqsum":
            reduce("ReduceSumSquare", tap.tensor, axes, out)
        elif tap.what == "sqmean":
            node("Mul", [tap.tensor, tap.tensor], f"{out}/sq")
            pool(f"{out}/sq", out)
        elif tap.what == "zfrac":
            eq, cast = f"{out}/eq", f"{out}/cast"
            node("Equal", [tap.tensor, scalar(info.elem_type, 0.0)], eq)
            node("Cast", [eq], cast, to=info.elem_type)
            pool(cast, out)
        elif tap.what == "active":
            if tap.lo == 0.0 and tap.hi == math.inf:  # ReLU: active somewhere iff max > 0
                pool(tap.tensor, out, "GlobalMaxPool")
                return
            parts = []
            if tap.lo > -math.inf:
                parts.append((f"{out}/gt", "Greater", tap.lo))
            if tap.hi < math.inf:
                parts.append((f"{out}/lt", "Less", tap.hi))
            for nm, op, val in parts:
                node(op, [tap.tensor, scalar(info.elem_type, val)], nm)
            if len(parts) == 2:
                node("And", [parts[0][0], parts[1][0]], f"{out}/and")
                cond = f"{out}/and"
            elif parts:
                cond = parts[0][0]
            else:
                raise OnnxPruneError(f"tensor '{tap.tensor}': empty blind range for an activity tap")
            node("Cast", [cond], f"{out}/cast", to=info.elem_type)
            pool(f"{out}/cast", out, "GlobalMaxPool")
        else:  # pragma: no cover - internal
            raise ValueError(tap.what)

    def expose(name: str, elem: int) -> None:
        if name not in have:
            g.output.append(helper.make_tensor_value_info(name, elem, None))
            have.add(name)

    for tap in taps:
        info = infos.get(tap.tensor)
        if info is None:
            raise OnnxPruneError(f"tensor '{tap.tensor}': not found in the model (or its type cannot be inferred)")
        if info.elem_type not in FLOAT_TYPES:
            raise OnnxPruneError(f"tensor '{tap.tensor}': statistics need a floating-point tensor, "
                                 f"it is {TensorProto.DataType.Name(info.elem_type)}")
        if tap.what in CLASS_SUMS and classes is None:  # pragma: no cover - internal
            raise ValueError("class sums need `classes`")
        out = build(tap)
        expose(out, sum_type(info.elem_type) if tap.what in CLASS_TAPS else info.elem_type)
        if tap.what in CLASS_SUMS:
            expose(once(CLASS_COUNT, lambda o: reduce("ReduceSum", onehot(), (1,), o)), TensorProto.FLOAT)
    return m
