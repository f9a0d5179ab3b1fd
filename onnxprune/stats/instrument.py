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

`instrument` hands the taps one by one to a `_TapGraph`, the copy under construction: one short method per building
block (constants, reductions, pooling), per map reduction (the `REDUCTIONS` table) and per step of the class sums.
Each shared tensor is made once, so the graph, and its serialised bytes, depend only on the taps and their order
(`tests/stats/test_instrument.py` pins them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import OnnxPruneError
from ..io.graph import FLOAT_TYPES, opset, without_weights


PREFIX = "onnxprune_stats"
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
    # tokens [N, .., F], features last: "tokens" = the per-sample mean over tokens (`tmean`), "heads" = the
    # per-sample mean of x² over tokens and each head's `block` features (`tenergy`)
    block: int = 1  # `tenergy` and the "heads" view: features per unit (head dim)

    @property
    def output(self) -> str:
        if self.what == "raw":
            return self.tensor
        if self.what in CLASS_TAPS:
            view = self.view if self.block == 1 else f"{self.view}{self.block}"
            return f"{PREFIX}/{self.what}/{view}/{self.tensor}"
        if self.block > 1:
            return f"{PREFIX}/{self.what}{self.block}/{self.tensor}"
        return f"{PREFIX}/{self.what}/{self.tensor}"

    @property
    def per_sample(self) -> bool:
        """One row per sample (False for the per-batch class taps)."""
        return self.what not in CLASS_TAPS and self.what != "rows"

    @property
    def shift_input(self) -> str:
        """Class taps: the graph input holding the shift the sums are taken about, (1, F) or broadcastable."""
        view = self.view if self.block == 1 else f"{self.view}{self.block}"
        return f"{PREFIX}/shift/{view}/{self.tensor}"


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
        inferred = onnx.shape_inference.infer_shapes(without_weights(model), strict_mode=False)
    except Exception:  # noqa: BLE001 - fall back to whatever the file declares
        inferred = model
    out: dict[str, TensorInfo] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if not tt.elem_type:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
                      for d in tt.shape.dim) if tt.HasField("shape") else ()
        out[vi.name] = TensorInfo(tt.elem_type, len(shape) if tt.HasField("shape") else None, shape)
    for t in g.initializer:
        out[t.name] = TensorInfo(t.data_type, len(t.dims), tuple(t.dims))
    missing = [o for n in model.graph.node for o in n.output if o and (o not in out or out[o].rank is None)]
    if missing:  # inference stopped (an op it does not know, e.g. com.microsoft.Gelu): one onnxruntime run fills in
        from ..io.shapes import runtime_types

        for t, (shape, elem) in runtime_types(model, missing).items():
            out[t] = TensorInfo(elem, len(shape), (None, *shape[1:]) if shape else ())
    return out


def mask_inputs(graph: onnx.GraphProto) -> list[str]:
    """The graph inputs that may be an attention mask [B, T] (padded tokens 0): named `*mask*`, rank 2."""
    inits = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in inits and "mask" in i.name.lower()
            and i.type.tensor_type.HasField("shape") and len(i.type.tensor_type.shape.dim) == 2]


def token_mask(graph: onnx.GraphProto, info: TensorInfo) -> str | None:
    """The attention mask input whose tokens a token tensor's line up with, or None.

    [B, T, F]: the first mask input whose token dim x may share (equal, or either not known by name: TorchScript
    exports lose the symbol); a [B, 1, F] x broadcasts to its own mean. [B·T, F] rows (GPT-2's Conv1D): the mask
    when the model has exactly one (with several, e.g. encoder and decoder masks, which one the rows are is not
    known) and its B·T does not contradict a static row count. Other ranks: None."""
    dims = {i.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in i.type.tensor_type.shape.dim] for i in graph.input}
    names = mask_inputs(graph)
    if info.rank == 2:
        if len(names) != 1:
            return None
        rows, (b, t) = (info.shape[0] if info.shape else None), dims[names[0]]
        return None if isinstance(rows, int) and isinstance(b, int) and isinstance(t, int) and rows != b * t \
            else names[0]
    if info.rank != 3:
        return None
    tx = info.shape[1] if info.shape else None
    for name in names:
        t = dims[name][1]
        known = [v for v in (t, tx) if v is not None and v != 0 and not str(v).startswith("unk__")]
        if len(known) == 2 and t != tx:
            continue
        return name
    return None


# ---------------------------------------------------------------- building the instrumented model
def instrument(model: onnx.ModelProto, taps: list[Tap], infos: dict[str, TensorInfo] | None = None,
               keep_outputs: bool = True, classes: Classes | None = None) -> onnx.ModelProto:
    """A copy of `model` whose graph outputs are (the original outputs +) one output per tap, plus CLASS_COUNT when
    there are class taps (their labels come from `classes`)."""
    graph = _TapGraph(model, tensor_infos(model) if infos is None else infos, keep_outputs, classes)
    for tap in taps:
        graph.add(tap)
    return graph.model


class _TapGraph:
    """The instrumented copy under construction. Every tensor it adds is made once (`made`) and shared by all taps
    that need it, every scalar constant once per (type, value): so the graph holds no duplicate node and its bytes
    depend only on the taps and their order."""

    def __init__(self, model: onnx.ModelProto, infos: dict[str, TensorInfo], keep_outputs: bool,
                 classes: Classes | None) -> None:
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.g = self.model.graph
        if not keep_outputs:
            del self.g.output[:]
        self.infos, self.classes, self.opset = infos, classes, opset(self.model)
        self.exposed = {o.name for o in self.g.output}
        self.made: set[str] = set()  # every tensor, initializer and input this builder has added
        self.scalars: dict[tuple[int, float], str] = {}

    # ---- one tap
    def add(self, tap: Tap) -> None:
        """Check `tap`, build its value and make it a graph output (with CLASS_COUNT next to class sums)."""
        elem = self.checked(tap).elem_type
        self.expose(self.build(tap), sum_type(elem) if tap.what in CLASS_TAPS else elem)
        if tap.what in CLASS_SUMS:
            self.expose(self.class_count(), TensorProto.FLOAT)

    def checked(self, tap: Tap) -> TensorInfo:
        """The tapped tensor's type: it must be known and floating-point, and class sums need `classes`."""
        info = self.infos.get(tap.tensor)
        if info is None:
            raise OnnxPruneError(f"tensor '{tap.tensor}': not found in the model (or its type cannot be inferred)")
        if info.elem_type not in FLOAT_TYPES:
            raise OnnxPruneError(f"tensor '{tap.tensor}': statistics need a floating-point tensor, "
                                 f"it is {TensorProto.DataType.Name(info.elem_type)}")
        if tap.what in CLASS_SUMS and self.classes is None:  # pragma: no cover - internal
            raise ValueError("class sums need `classes`")
        return info

    def build(self, tap: Tap) -> str:
        """The tensor holding `tap`'s value: the tapped tensor itself for `raw`, else made on first request."""
        if tap.what == "raw":
            return tap.tensor
        if self.fresh(tap.output):
            self.make(tap, tap.output)
        return tap.output

    def make(self, tap: Tap, out: str) -> None:
        """Add the nodes computing `tap` into `out`: class taps as class sums, the rest as a (B, C) map reduction."""
        info = self.infos[tap.tensor]
        if tap.what in CLASS_TAPS:
            self.class_tap(tap, sum_type(info.elem_type), out)
            return
        if tap.what in self.TOKEN_REDUCTIONS:
            self.TOKEN_REDUCTIONS[tap.what](self, tap, info, out)
            return
        if info.rank is None or info.rank < 3:
            raise OnnxPruneError(f"tensor '{tap.tensor}': a channel map needs rank >= 3 (N, C, ...), "
                                 f"got {'unknown rank' if info.rank is None else f'rank {info.rank}'}")
        if tap.what not in self.REDUCTIONS:  # pragma: no cover - internal
            raise ValueError(tap.what)
        self.REDUCTIONS[tap.what](self, tap, info, out)

    def expose(self, name: str, elem: int) -> None:
        """Make `name` a graph output, once (a raw tap of an existing output is already one)."""
        if name not in self.exposed:
            self.g.output.append(helper.make_tensor_value_info(name, elem, None))
            self.exposed.add(name)

    # ---- building blocks: nodes, shared tensors, graph inputs and constants
    def fresh(self, name: str) -> bool:
        """True the first time `name` is asked for — the caller then adds it; afterwards it exists and is shared."""
        if name in self.made:
            return False
        self.made.add(name)
        return True

    def node(self, op: str, inputs: list[str], out: str, **attrs) -> None:
        """Append a one-output node (unconditionally: for the intermediates private to one tap's output)."""
        self.g.node.append(helper.make_node(op, inputs, [out], **attrs))

    def derived(self, op: str, inputs: list[str], out: str, **attrs) -> str:
        """`out` = op(inputs), added on first request only (for tensors several taps share)."""
        if self.fresh(out):
            self.node(op, inputs, out, **attrs)
        return out

    def graph_input(self, name: str, elem: int, shape: list | None) -> str:
        """A tensor the caller feeds (true labels, shifts), declared once."""
        if self.fresh(name):
            self.g.input.append(helper.make_tensor_value_info(name, elem, shape))
        return name

    def initializer(self, name: str, value: np.ndarray) -> str:
        """A constant named by its value, so equal constants are one initializer."""
        if self.fresh(name):
            self.g.initializer.append(numpy_helper.from_array(value, name))
        return name

    def ints(self, values: tuple[int, ...]) -> str:
        """An int64 constant named by its values (axes, indices, depths)."""
        return self.initializer(f"{PREFIX}/ints/{'_'.join(map(str, values))}", np.array(values, np.int64))

    def floats(self, values: tuple[float, ...]) -> str:
        """A float32 constant named by its values (OneHot's off/on values)."""
        return self.initializer(f"{PREFIX}/floats/{'_'.join(map(str, values))}", np.array(values, np.float32))

    def scalar(self, elem: int, value: float) -> str:
        """A scalar of the tapped tensor's type to compare it with; numbered (a float's repr is a poor name)."""
        key = (elem, value)
        if key not in self.scalars:
            name = self.scalars[key] = f"{PREFIX}/const/{len(self.scalars)}"
            dtype = helper.tensor_dtype_to_np_dtype(elem)
            self.g.initializer.append(numpy_helper.from_array(np.array(value, dtype), name))
        return self.scalars[key]

    def reduce(self, op: str, x: str, axes: tuple[int, ...], out: str) -> None:
        """A Reduce* without kept dims; `axes` is an input from opset 18 (ReduceSum: 13), an attribute before."""
        if self.opset >= 18 or (op == "ReduceSum" and self.opset >= 13):
            self.node(op, [x, self.ints(axes)], out, keepdims=0)
        else:
            self.node(op, [x], out, axes=list(axes), keepdims=0)

    def pool(self, x: str, out: str, op: str = "GlobalAveragePool") -> None:
        """(B, C) via Global*Pool + Flatten, not Reduce*: ORT pools on its NCHWc layout, no full reorder of the map."""
        self.node(op, [x], f"{out}/gap")
        self.node("Flatten", [f"{out}/gap"], out, axis=1)

    # ---- per-sample map reductions, (B, C) each: the `REDUCTIONS` table below
    def mean(self, tap: Tap, info: TensorInfo, out: str) -> None:
        """Spatial mean (also the `channels` view of the class taps)."""
        self.pool(tap.tensor, out)

    def sqsum(self, tap: Tap, info: TensorInfo, out: str) -> None:
        """Σx² over the spatial axes, exact whatever the (dynamic) map size."""
        self.reduce("ReduceSumSquare", tap.tensor, tuple(range(2, info.rank)), out)

    def sqmean(self, tap: Tap, info: TensorInfo, out: str) -> None:
        """Mean of x² (× positions = Σx²) through the NCHWc-friendly pooling."""
        self.node("Mul", [tap.tensor, tap.tensor], f"{out}/sq")
        self.pool(f"{out}/sq", out)

    def zfrac(self, tap: Tap, info: TensorInfo, out: str) -> None:
        """Fraction of exact zeros per channel (APoZ)."""
        self.node("Equal", [tap.tensor, self.scalar(info.elem_type, 0.0)], f"{out}/eq")
        self.node("Cast", [f"{out}/eq"], f"{out}/cast", to=info.elem_type)
        self.pool(f"{out}/cast", out)

    def active(self, tap: Tap, info: TensorInfo, out: str) -> None:
        """1 where the channel is anywhere inside the activation's non-blind (lo, hi), else 0; ReLU: just the max."""
        if tap.lo == 0.0 and tap.hi == math.inf:
            self.pool(tap.tensor, out, "GlobalMaxPool")
            return
        self.node("Cast", [self.in_interval(tap, info, out)], f"{out}/cast", to=info.elem_type)
        self.pool(f"{out}/cast", out, "GlobalMaxPool")

    def in_interval(self, tap: Tap, info: TensorInfo, out: str) -> str:
        """The boolean map lo < x < hi, a bound at ±inf left out."""
        parts = []
        if tap.lo > -math.inf:
            parts.append(self.compare("Greater", tap, info, tap.lo, f"{out}/gt"))
        if tap.hi < math.inf:
            parts.append(self.compare("Less", tap, info, tap.hi, f"{out}/lt"))
        if not parts:
            raise OnnxPruneError(f"tensor '{tap.tensor}': empty blind range for an activity tap")
        if len(parts) == 1:
            return parts[0]
        self.node("And", parts, f"{out}/and")
        return f"{out}/and"

    def compare(self, op: str, tap: Tap, info: TensorInfo, value: float, out: str) -> str:
        """The boolean map `x op value`, with the bound in x's own type (no upcast of the map)."""
        self.node(op, [tap.tensor, self.scalar(info.elem_type, value)], out)
        return out

    REDUCTIONS = {"mean": mean, "sqsum": sqsum, "sqmean": sqmean, "zfrac": zfrac, "active": active}

    # ---- per-sample token reductions (transformers): tokens [N, T.., F] with features last → (B, F) or (B, H)
    def tokens(self, x: str, info: TensorInfo, out: str) -> tuple[str, tuple[int, ...], str | None]:
        """x as [B, T.., F], its token axes and the attention mask [B, T, 1] over them (None: every token counts).

        A rank-2 [B·T, F] tensor (GPT-2's Conv1D exports flatten the tokens into the rows) is reshaped to [B, T, F]
        with B read from the model input's first axis; under the model's attention mask (`token_mask`) its rows are
        weighed by it when they are its tokens (`rows_mask`)."""
        if info.rank is None or info.rank < 2:
            raise OnnxPruneError(f"tensor '{x}': a token tensor needs rank >= 2 (rows, features)")
        if info.rank >= 3:
            axes = tuple(range(1, info.rank - 1))
            return x, axes, self.mask_tokens(token_mask(self.g, info), info) if axes == (1,) else None
        f = info.shape[-1]
        first = next(i.name for i in self.g.input if i.name not in {t.name for t in self.g.initializer})
        shape = self.derived("Shape", [first], f"{PREFIX}/input_shape")
        b = self.derived("Gather", [shape, self.ints((0,))], f"{PREFIX}/input_batch", axis=0)
        if isinstance(f, int):
            target = self.derived("Concat", [b, self.ints((-1, f))], f"{PREFIX}/tokens_shape/{f}", axis=0)
        else:  # a dynamic sequence length leaves F symbolic here: read it from x's own shape in the graph
            own = self.derived("Shape", [x], f"{out}/shape")
            f_ = self.derived("Slice", [own, self.ints((-1,)), self.ints((2 ** 62,))], f"{out}/features")
            target = self.derived("Concat", [b, self.ints((-1,)), f_], f"{out}/tokens_shape", axis=0)
        self.node("Reshape", [x, target], f"{out}/bt")
        mask = token_mask(self.g, info)
        return f"{out}/bt", (1,), None if mask is None else self.rows_mask(f"{out}/bt", mask, info, out)

    def rows_mask(self, x: str, mask: str, info: TensorInfo, out: str) -> str:
        """Weights [B, T', 1] for rows put back as x = [B, T', F]: the attention mask when T' is its token count
        (GPT-2's Conv1D rows), else ones — a [B, F] tensor (BERT's pooler: one row a sample) or rows of another
        length are averaged over all their rows, as before. Chosen at run time (an If): the row count is rarely
        known statically."""
        tokens = self.mask_tokens(mask, info)
        t_mask = self.derived("Gather", [self.derived("Shape", [mask], f"{PREFIX}/mask_shape/{mask}"),
                                         self.ints((1,))], f"{PREFIX}/mask_tokens/{mask}", axis=0)
        self.node("Shape", [x], f"{out}/bt_shape")
        self.node("Gather", [f"{out}/bt_shape", self.ints((1,))], f"{out}/bt_tokens", axis=0)
        self.node("Equal", [f"{out}/bt_tokens", t_mask], f"{out}/is_masked")
        self.node("Slice", [f"{out}/bt_shape", self.ints((0,)), self.ints((2,))], f"{out}/bt_lead")
        self.node("Concat", [f"{out}/bt_lead", self.ints((1,))], f"{out}/ones_shape", axis=0)
        branch = {}
        for which, node in (("then", helper.make_node("Identity", [tokens], [f"{out}/w_then"])),
                            ("else", helper.make_node("Expand", [self.scalar(info.elem_type, 1.0), f"{out}/ones_shape"],
                                                      [f"{out}/w_else"]))):
            branch[which] = helper.make_graph([node], f"{out}/{which}", [], [
                helper.make_tensor_value_info(node.output[0], info.elem_type, None)])
        self.node("If", [f"{out}/is_masked"], f"{out}/w", then_branch=branch["then"], else_branch=branch["else"])
        return f"{out}/w"

    def token_mean(self, x: str, axes: tuple[int, ...], mask: str | None, info: TensorInfo, out: str) -> None:
        """Mean over the token axes; over the real tokens only under an attention mask [B, T, 1] (padding would
        otherwise dilute every statistic by the padded fraction)."""
        if mask is None:
            return self.reduce("ReduceMean", x, axes, out)
        self.node("Mul", [x, mask], f"{out}/masked")
        self.reduce("ReduceSum", f"{out}/masked", axes, f"{out}/sum")
        count = self.derived("ReduceSum", [mask, self.ints((1,))], f"{mask}/count", keepdims=0)
        self.node("Div", [f"{out}/sum", self.derived("Max", [count, self.scalar(info.elem_type, 1.0)],
                                                     f"{count}/at_least_1")], out)

    def mask_tokens(self, mask: str | None, info: TensorInfo) -> str | None:
        """The mask input as [B, T, 1] in x's type (padded tokens 0); None stays None."""
        if mask is None:
            return None
        cast = self.derived("Cast", [mask], f"{PREFIX}/mask/{info.elem_type}", to=info.elem_type)
        return self.derived("Unsqueeze", [cast, self.ints((2,))], f"{cast}/tokens") if self.opset >= 13 else \
            self.derived("Unsqueeze", [cast], f"{cast}/tokens", axes=[2])

    def tmean(self, tap: Tap, info: TensorInfo, out: str) -> None:
        """Per-sample mean over the (real) tokens: (B, F)."""
        x, axes, mask = self.tokens(tap.tensor, info, out)
        self.token_mean(x, axes, mask, info, out)

    def tzfrac(self, tap: Tap, info: TensorInfo, out: str) -> None:
        """Per-sample fraction of exact zeros over the (real) tokens (APoZ): (B, F)."""
        x, axes, mask = self.tokens(tap.tensor, info, out)
        self.node("Equal", [x, self.scalar(info.elem_type, 0.0)], f"{out}/eq")
        self.node("Cast", [f"{out}/eq"], f"{out}/cast", to=info.elem_type)
        self.token_mean(f"{out}/cast", axes, mask, info, out)

    def tenergy(self, tap: Tap, info: TensorInfo, out: str) -> None:
        """Per-sample mean of x² over the (real) tokens and each block of `tap.block` features (a head):
        (B, F/block)."""
        x, axes, mask = self.tokens(tap.tensor, info, out)
        self.node("Mul", [x, x], f"{out}/sq")
        self.token_mean(f"{out}/sq", axes, mask, info, f"{out}/tok")
        self.node("Reshape", [f"{out}/tok", self.ints((0, -1, tap.block))], f"{out}/blocks")
        self.reduce("ReduceMean", f"{out}/blocks", (2,), out)

    def rows(self, tap: Tap, info: TensorInfo, out: str) -> None:
        """The tensor itself, every token a row (not checked for a leading batch axis: [B·T, F] is fine)."""
        self.node("Identity", [tap.tensor], out)

    TOKEN_REDUCTIONS = {"tmean": tmean, "tzfrac": tzfrac, "tenergy": tenergy, "rows": rows}

    # ---- class sums: labels → one-hot (K, B) → per-class sums of the centred (B, F) values, all in-graph
    def class_tap(self, tap: Tap, elem: int, out: str) -> None:
        """`class_first` (v[0]), `class_sum` (onehot · (v − shift)) or `class_sumsq` (ones · (v − shift)²)."""
        x = self.values(tap, elem)
        if tap.what == "class_first":
            self.node("Gather", [x, self.ints((0,))], out, axis=0)
            return
        d = self.derived("Sub", [x, self.graph_input(tap.shift_input, elem, None)], f"{x}/centred")
        if tap.what == "class_sum":
            self.node("MatMul", [self.onehot(elem), d], out)
        else:
            self.node("MatMul", [self.ones(elem), self.derived("Mul", [d, d], f"{d}/sq")], out)

    def values(self, tap: Tap, elem: int) -> str:
        """v: the tap's view of x as (B, F) in the accumulation type `elem`; a new tensor only where needed."""
        x = self.build(Tap(tap.tensor, "mean")) if tap.view == "channels" else tap.tensor
        if tap.view in ("tokens", "heads"):
            x = self.build(Tap(tap.tensor, "tmean") if tap.view == "tokens" else Tap(tap.tensor, "tenergy",
                                                                                        block=tap.block))
        if tap.view == "features" and self.infos[tap.tensor].rank != 2:
            x = self.derived("Flatten", [tap.tensor], f"{PREFIX}/flat/{tap.tensor}", axis=1)
        return x if self.infos[tap.tensor].elem_type == elem else self.cast(x, elem)

    def cast(self, x: str, elem: int) -> str:
        """x in the accumulation type (16-bit maps would overflow their squares; double sums for the one-hot)."""
        return self.derived("Cast", [x], f"{x}/{TensorProto.DataType.Name(elem)}", to=elem)

    def labels(self) -> str:
        """(B,) int64: the fed true labels, or the argmax of the model's (flattened) prediction output."""
        if self.classes.predicted is None:
            return self.graph_input(LABELS, TensorProto.INT64, [None])
        return self.derived("ArgMax", [self.prediction()], f"{PREFIX}/predicted", axis=1, keepdims=0)

    def prediction(self) -> str:
        """The prediction output as (B, K), whatever its rank."""
        return self.derived("Flatten", [self.classes.predicted], f"{PREFIX}/prediction", axis=1)

    def depth(self) -> str:
        """K for OneHot: `classes.k`, or (predicted mode, k = 0) the prediction's width, read at run time."""
        if self.classes.k:
            return self.ints((self.classes.k,))
        shape = self.derived("Shape", [self.prediction()], f"{PREFIX}/prediction/shape")
        return self.derived("Gather", [shape, self.ints((1,))], f"{PREFIX}/prediction/width", axis=0)

    def onehot(self, elem: int = TensorProto.FLOAT) -> str:
        """(K, B) one-hot of the labels in `elem` (onnxruntime's OneHot makes float32; double is cast from it)."""
        if self.opset < 9:
            raise OnnxPruneError(f"class statistics need opset >= 9 (OneHot); the model is opset {self.opset} — "
                                 f"upgrade it with onnx.version_converter")
        hot = self.derived("OneHot", [self.labels(), self.depth(), self.floats((0.0, 1.0))], f"{PREFIX}/onehot", axis=0)
        return hot if elem == TensorProto.FLOAT else self.cast(hot, elem)

    def ones(self, elem: int) -> str:
        """(B,) ones: Σ over the batch as a matrix-vector product (onnxruntime's ReduceSum over axis 0 is slower)."""
        shape = self.derived("Shape", [self.labels()], f"{PREFIX}/batch_shape")
        return self.derived("ConstantOfShape", [shape], f"{PREFIX}/ones/{TensorProto.DataType.Name(elem)}",
                            value=helper.make_tensor("one", elem, [1], [1.0]))

    def class_count(self) -> str:
        """CLASS_COUNT, (K,): the batch's samples per class, one per graph."""
        if self.fresh(CLASS_COUNT):
            self.reduce("ReduceSum", self.onehot(), (1,), CLASS_COUNT)
        return CLASS_COUNT
