"""An ONNX graph executed in PyTorch, its initializers trainable, the trained values written back by name.

`TorchGraph(model)` interprets the nodes of `model.graph` in their (topological) order with torch operators. Every
float initializer is held as a tensor keyed by its *initializer name*:

* weights, biases, BN scale/shift, PRelu slopes, per-channel Mul/Add constants on the feature path → trainable
  `nn.Parameter`s (float32 for computation whatever the stored float dtype);
* BatchNormalization running mean / variance → buffers (updated by torch in train mode);
* float constants that only shape data before any weight sees it (input preprocessing Mul/Add), Clip bounds,
  Pow exponents, Resize scales, Pad values, and single numbers read by an elementwise op (GELU's √2, 1 and 0.5, an
  attention scale, HardSwish's 3 and 6: part of the function, and trained they also stop onnxruntime's fusions)
  → frozen parameters (`requires_grad=False`);
* integer / bool initializers (shapes, indices, axes) → buffers, never trained.

`write_back(model)` returns a copy of `model` whose graph is untouched and whose initializers carry the current
values, same names, dtypes and shapes; an initializer whose value did not change keeps its original TensorProto
byte for byte (so zero epochs round-trips exactly).

Ops outside the interpreter's set (or with an attribute value it does not implement) raise `OnnxPruneError` at
construction, naming the op and the node, before anything is trained or written.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from ..errors import OnnxPruneError

Tensor = torch.Tensor

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                onnx.TensorProto.BFLOAT16}

_TORCH_DTYPE = {
    onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16, onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.INT8: torch.int8, onnx.TensorProto.UINT8: torch.uint8, onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT32: torch.int32, onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.BOOL: torch.bool,
}

# ops whose initializer inputs are weights: trainable even when their data input is the raw model input
_WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "InstanceNormalization",
             "LayerNormalization", "PRelu"}
# (op, input index) positions that hold a hyper-parameter rather than a weight: never trained
_FROZEN_POSITIONS = {("Clip", 1), ("Clip", 2), ("Pow", 1), ("Resize", 1), ("Resize", 2), ("Resize", 3),
                     ("Upsample", 1), ("Pad", 1), ("Pad", 2), ("Pad", 3), ("BatchNormalization", 3),
                     ("BatchNormalization", 4)}


def _numel(t: onnx.TensorProto) -> int:
    return int(np.prod(t.dims, dtype=np.int64))


def _i(t: Tensor | None) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _pads_torch(pads: Sequence[int]) -> list[int]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] → torch F.pad order (last axis first: b_last, e_last, ...)."""
    k = len(pads) // 2
    out: list[int] = []
    for a in reversed(range(k)):
        out += [int(pads[a]), int(pads[a + k])]
    return out


def _auto_pads(attrs: dict, x: Tensor, kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int]) -> list[int]:
    auto = attrs.get("auto_pad", "NOTSET")
    nsp = len(kernel)
    if auto in ("NOTSET", ""):
        return list(attrs.get("pads", [0] * (2 * nsp)))
    if auto == "VALID":
        return [0] * (2 * nsp)
    begin, end = [], []
    for d in range(nsp):
        n = x.shape[2 + d]
        out = -(-n // strides[d])
        total = max(0, (out - 1) * strides[d] + (kernel[d] - 1) * dilations[d] + 1 - n)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin + end


class TorchGraph(torch.nn.Module):
    """Run `model` in torch; initializers as parameters / buffers keyed by initializer name."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        g = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
        self.input_names = [i.name for i in g.input if i.name not in {t.name for t in g.initializer}]
        self.input_dtypes = {i.name: _TORCH_DTYPE.get(i.type.tensor_type.elem_type, torch.float32)
                             for i in g.input}
        self.output_names = [o.name for o in g.output]
        self.nodes = list(g.node)
        self.attrs: list[dict[str, Any]] = [{a.name: helper.get_attribute_value(a) for a in n.attribute}
                                            for n in self.nodes]
        for node, attrs in zip(self.nodes, self.attrs):
            self._check(node, attrs)
        # BN training momentum override (None: the node's own); used by `bn_momentum` context in distill
        self.bn_momentum: float | None = None
        # train-mode BN replacement (data-parallel: global-batch statistics, recover/parallel.py); None: F.batch_norm
        self.bn_train: Callable | None = None
        self._bn_collect: dict[str, list] | None = None

        inits = {t.name: t for t in g.initializer}
        self.init_names = [t.name for t in g.initializer]
        trainable = self._trainable(inits)
        bn_stats = {n.input[i] for n in self.nodes if n.op_type == "BatchNormalization" for i in (3, 4)
                    if len(n.input) > i}
        self.params = torch.nn.ParameterList()
        self._index: dict[str, tuple[str, int]] = {}  # name → ("p", i) parameter | ("b", i) buffer
        self._nbuf = 0
        for name, t in inits.items():
            if t.data_location == onnx.TensorProto.EXTERNAL:
                raise OnnxPruneError(f"cannot train this model in PyTorch: initializer '{name}' has external data "
                                     f"(load the model with its weights first)")
            arr = numpy_helper.to_array(t)
            if t.data_type in _FLOAT_TYPES and name not in bn_stats:
                p = torch.nn.Parameter(torch.from_numpy(np.array(arr, dtype=np.float32)),
                                       requires_grad=name in trainable)
                self._index[name] = ("p", len(self.params))
                self.params.append(p)
            else:
                dt = np.float32 if t.data_type in _FLOAT_TYPES else None
                buf = torch.from_numpy(np.array(arr, dtype=dt) if dt else np.array(arr))
                self.register_buffer(f"buf{self._nbuf}", buf)
                self._index[name] = ("b", self._nbuf)
                self._nbuf += 1
        # free each intermediate after its last consumer (inference passes keep memory flat)
        last: dict[str, int] = {}
        for k, n in enumerate(self.nodes):
            for i in n.input:
                last[i] = k
        self._last_use = last

    # ----------------------------------------------------------------- naming / state
    def tensor(self, name: str) -> Tensor:
        """The parameter or buffer holding initializer `name`."""
        kind, i = self._index[name]
        return self.params[i] if kind == "p" else getattr(self, f"buf{i}")

    def named_initializers(self) -> dict[str, Tensor]:
        return {n: self.tensor(n) for n in self.init_names}

    def trainable_names(self) -> list[str]:
        return [n for n in self.init_names if self._index[n][0] == "p" and self.tensor(n).requires_grad]

    def bn_nodes(self) -> list[onnx.NodeProto]:
        return [n for n in self.nodes if n.op_type == "BatchNormalization"]

    def write_back(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """A copy of `model` with every initializer set to the current value (same name, dtype, shape)."""
        out = copy.deepcopy(model)
        for k, t in enumerate(out.graph.initializer):
            if t.name not in self._index:
                continue
            orig = numpy_helper.to_array(t)
            new = self.tensor(t.name).detach().cpu().numpy()
            if new.shape != orig.shape:
                raise OnnxPruneError(f"initializer '{t.name}' changed shape {orig.shape} → {new.shape}")
            held = np.asarray(orig, dtype=new.dtype) if new.dtype != orig.dtype else orig
            if np.ascontiguousarray(new).tobytes() == np.ascontiguousarray(held).tobytes():
                continue  # untouched (as held in torch): keep the original TensorProto byte for byte
            new = new.astype(orig.dtype, copy=False)
            out.graph.initializer[k].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(new), t.name))
        return out

    # ----------------------------------------------------------------- construction-time checks
    def _unsupported(self, node: onnx.NodeProto, detail: str = "") -> OnnxPruneError:
        op = f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        extra = f" ({detail})" if detail else ""
        return OnnxPruneError(f"cannot train this model in PyTorch: unsupported op {op} at node "
                              f"'{node.name or node.output[0]}'{extra}")

    def _check(self, node: onnx.NodeProto, attrs: dict) -> None:
        if node.domain not in ("", "ai.onnx") or node.op_type not in _OPS:
            raise self._unsupported(node)
        op = node.op_type
        used_outputs = [o for o in node.output[1:] if o]
        if op in ("MaxPool", "BatchNormalization", "LayerNormalization", "Dropout") and used_outputs:
            if op == "Dropout":
                return  # the mask output is supported (all ones)
            raise self._unsupported(node, "extra outputs")
        if op in ("Conv", "ConvTranspose", "MaxPool", "AveragePool"):
            if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "", "VALID", "SAME_UPPER", "SAME_LOWER"):
                raise self._unsupported(node, f"auto_pad {attrs['auto_pad']}")
            if op == "ConvTranspose" and attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "", "VALID"):
                raise self._unsupported(node, "auto_pad SAME with ConvTranspose")
            if op == "ConvTranspose" and "output_shape" in attrs:
                raise self._unsupported(node, "output_shape attribute")
            if op == "MaxPool" and attrs.get("storage_order", 0):
                raise self._unsupported(node, "storage_order 1")
        if op in ("Resize", "Upsample"):
            mode = attrs.get("mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode not in ("nearest", "linear", "bilinear"):
                raise self._unsupported(node, f"mode {mode}")
            if attrs.get("antialias", 0):
                raise self._unsupported(node, "antialias")
            ctm = attrs.get("coordinate_transformation_mode", b"half_pixel")
            ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
            if ctm not in ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel", "half_pixel_symmetric"):
                raise self._unsupported(node, f"coordinate_transformation_mode {ctm}")
            if attrs.get("keep_aspect_ratio_policy", b"stretch") not in (b"stretch", "stretch"):
                raise self._unsupported(node, "keep_aspect_ratio_policy")
        if op == "Pad":
            mode = attrs.get("mode", b"constant")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode not in ("constant", "reflect", "edge"):
                raise self._unsupported(node, f"mode {mode}")
        if op == "Cast" and attrs.get("to") not in _TORCH_DTYPE:
            raise self._unsupported(node, f"cast to type {attrs.get('to')}")
        if op == "BatchNormalization" and attrs.get("training_mode", 0):
            raise self._unsupported(node, "training_mode 1")

    def _trainable(self, inits: dict[str, onnx.TensorProto]) -> set[str]:
        """Float initializers on the feature path (see the module docstring); preprocessing constants stay frozen."""
        state: dict[str, str] = {n: "data" for n in self.input_names}  # 'data' | 'param' | 'const'
        trainable: set[str] = set()
        for node in self.nodes:
            ins = [i for i in node.input if i]
            init_pos = [(k, i) for k, i in enumerate(node.input) if i in inits
                        and inits[i].data_type in _FLOAT_TYPES and (node.op_type, k) not in _FROZEN_POSITIONS
                        and (node.op_type in _WEIGHTED or _numel(inits[i]) > 1)]
            states = [state.get(i, "const") if i not in inits else "const" for i in ins]
            if node.op_type in _WEIGHTED or "param" in states:
                trainable.update(i for _, i in init_pos)
                out = "param"
            elif "data" in states:
                out = "data"
            else:
                trainable.update(i for _, i in init_pos)
                out = "const"
            for o in node.output:
                state[o] = out
        return trainable

    # ----------------------------------------------------------------- execution
    def forward(self, **inputs: Any) -> dict[str, Tensor]:
        return self.run(inputs)

    def run(self, inputs: dict[str, Any], fetch: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Graph outputs (or the tensors named in `fetch`) for the feed `inputs` (numpy arrays or tensors)."""
        want = list(self.output_names if fetch is None else fetch)
        keep = set(want)
        env: dict[str, Tensor] = {}
        for name in self.input_names:
            if name not in inputs:
                raise OnnxPruneError(f"missing model input '{name}'")
            v = inputs[name]
            v = torch.from_numpy(np.asarray(v)) if not isinstance(v, torch.Tensor) else v
            env[name] = v.to(self.input_dtypes.get(name, v.dtype))
        for name in self.init_names:
            env[name] = self.tensor(name)
        for k, (node, attrs) in enumerate(zip(self.nodes, self.attrs)):
            args = [env[i] if i else None for i in node.input]
            try:
                res = _OPS[node.op_type](self, node, attrs, args)
            except OnnxPruneError:
                raise
            except (RuntimeError, ValueError, IndexError, TypeError) as e:
                raise OnnxPruneError(f"torch execution failed at node '{node.name or node.output[0]}' "
                                     f"({node.op_type}): {str(e).splitlines()[0][:200]}") from None
            if not isinstance(res, (list, tuple)):
                res = [res]
            for o, r in zip(node.output, res):
                if o:
                    env[o] = r
            for i in node.input:
                if self._last_use.get(i) == k and i not in keep and i not in self._index:
                    env.pop(i, None)
        return {n: env[n] for n in want}


# ===================================================================== op implementations
Op = Callable[[TorchGraph, onnx.NodeProto, dict, list], Any]
_OPS: dict[str, Op] = {}


def op(*names: str) -> Callable[[Op], Op]:
    def deco(f: Op) -> Op:
        for n in names:
            _OPS[n] = f
        return f
    return deco


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else v


# ---- convolution / linear
@op("Conv")
def _conv(g, node, a, x):
    inp, w, b = x[0], x[1], x[2] if len(x) > 2 else None
    nsp = w.dim() - 2
    kernel = a.get("kernel_shape", list(w.shape[2:]))
    strides = a.get("strides", [1] * nsp)
    dil = a.get("dilations", [1] * nsp)
    pads = _auto_pads(a, inp, kernel, strides, dil)
    group = a.get("group", 1)
    if pads[:nsp] == pads[nsp:]:
        padding = pads[:nsp]
    else:
        inp, padding = F.pad(inp, _pads_torch(pads)), [0] * nsp
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nsp]
    return fn(inp, w, b, strides, padding, dil, group)


@op("ConvTranspose")
def _convt(g, node, a, x):
    inp, w, b = x[0], x[1], x[2] if len(x) > 2 else None
    nsp = w.dim() - 2
    strides = a.get("strides", [1] * nsp)
    dil = a.get("dilations", [1] * nsp)
    pads = list(a.get("pads", [0] * (2 * nsp))) if a.get("auto_pad", "NOTSET") in ("NOTSET", "") else [0] * 2 * nsp
    outpad = a.get("output_padding", [0] * nsp)
    group = a.get("group", 1)
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nsp]
    if pads[:nsp] == pads[nsp:] and all(o < max(s, d) for o, s, d in zip(outpad, strides, dil)):
        return fn(inp, w, b, strides, pads[:nsp], outpad, group, dil)
    y = fn(inp, w, None, strides, 0, 0, group, dil)
    extra = [op_ for op_ in outpad]
    if any(extra):
        y = F.pad(y, _pads_torch([0] * nsp + extra))
    sl = [slice(None), slice(None)] + [slice(pads[d], y.shape[2 + d] - pads[nsp + d]) for d in range(nsp)]
    y = y[tuple(sl)]
    if b is not None:
        y = y + b.reshape([1, -1] + [1] * nsp)
    return y


@op("Gemm")
def _gemm(g, node, a, x):
    A, B, C = x[0], x[1], x[2] if len(x) > 2 else None
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    if a.get("transA", 0):
        A = A.t()
    if a.get("transB", 0) and alpha == 1.0 and (C is None or beta == 1.0) and (C is None or C.dim() <= 1):
        return F.linear(A, B, C)
    if a.get("transB", 0):
        B = B.t()
    y = A @ B
    if alpha != 1.0:
        y = y * alpha
    if C is not None:
        y = y + (C * beta if beta != 1.0 else C)
    return y


@op("MatMul")
def _matmul(g, node, a, x):
    return torch.matmul(x[0], x[1])


# ---- elementwise
def _div(p, q):
    if not p.is_floating_point():
        return torch.div(p, q, rounding_mode="trunc")
    return p / q


_BIN = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _div, "Equal": torch.eq,
        "Greater": torch.gt, "Less": torch.lt, "GreaterOrEqual": torch.ge, "LessOrEqual": torch.le,
        "And": torch.logical_and, "Or": torch.logical_or, "Xor": torch.logical_xor}


@op(*_BIN)
def _binary(g, node, a, x):
    return _BIN[node.op_type](x[0], x[1])


@op("Pow")
def _pow(g, node, a, x):
    y = torch.pow(x[0], x[1].to(x[0].dtype) if x[0].is_floating_point() else x[1])
    return y.to(x[0].dtype)


@op("Max", "Min", "Sum", "Mean")
def _variadic(g, node, a, x):
    xs = [t for t in x if t is not None]
    y = xs[0]
    for t in xs[1:]:
        y = {"Max": torch.maximum, "Min": torch.minimum}.get(node.op_type, torch.add)(y, t)
    if node.op_type == "Mean":
        y = y / len(xs)
    return y


@op("PRelu")
def _prelu(g, node, a, x):
    return torch.where(x[0] >= 0, x[0], x[0] * x[1])


@op("Where")
def _where(g, node, a, x):
    return torch.where(x[0], x[1], x[2])


@op("Not")
def _not(g, node, a, x):
    return torch.logical_not(x[0])


_UNARY: dict[str, Callable[[Tensor, dict], Tensor]] = {
    "Relu": lambda t, a: F.relu(t),
    "LeakyRelu": lambda t, a: F.leaky_relu(t, a.get("alpha", 0.01)),
    "Sigmoid": lambda t, a: torch.sigmoid(t),
    "HardSigmoid": lambda t, a: torch.clamp(t * a.get("alpha", 0.2) + a.get("beta", 0.5), 0.0, 1.0),
    "HardSwish": lambda t, a: F.hardswish(t),
    "Tanh": lambda t, a: torch.tanh(t),
    "Elu": lambda t, a: F.elu(t, a.get("alpha", 1.0)),
    "Selu": lambda t, a: a.get("gamma", 1.0507009873554805) * torch.where(
        t > 0, t, a.get("alpha", 1.6732632423543772) * (torch.exp(t) - 1)),
    "Celu": lambda t, a: F.celu(t, a.get("alpha", 1.0)),
    "Softplus": lambda t, a: F.softplus(t),
    "Softsign": lambda t, a: F.softsign(t),
    "Gelu": lambda t, a: F.gelu(t, approximate=_s(a.get("approximate", "none"))),
    "Mish": lambda t, a: F.mish(t),
    "Erf": lambda t, a: torch.erf(t),
    "Abs": lambda t, a: torch.abs(t),
    "Neg": lambda t, a: torch.neg(t),
    "Exp": lambda t, a: torch.exp(t),
    "Log": lambda t, a: torch.log(t),
    "Sqrt": lambda t, a: torch.sqrt(t),
    "Reciprocal": lambda t, a: torch.reciprocal(t),
    "Floor": lambda t, a: torch.floor(t),
    "Ceil": lambda t, a: torch.ceil(t),
    "Round": lambda t, a: torch.round(t),
    "Sign": lambda t, a: torch.sign(t),
    "Identity": lambda t, a: t,
}


@op(*_UNARY)
def _unary(g, node, a, x):
    return _UNARY[node.op_type](x[0], a)


@op("Dropout")
def _dropout(g, node, a, x):
    return x[0], torch.ones_like(x[0], dtype=torch.bool)


@op("Cast")
def _cast(g, node, a, x):
    return x[0].to(_TORCH_DTYPE[a["to"]])


@op("Clip")
def _clip(g, node, a, x):
    if g.opset < 11:
        lo, hi = a.get("min"), a.get("max")
    else:
        lo = x[1] if len(x) > 1 and x[1] is not None else None
        hi = x[2] if len(x) > 2 and x[2] is not None else None
    t = x[0]
    if lo is not None:
        t = torch.clamp(t, min=lo) if isinstance(lo, float) else torch.maximum(t, lo.to(t.dtype))
    if hi is not None:
        t = torch.clamp(t, max=hi) if isinstance(hi, float) else torch.minimum(t, hi.to(t.dtype))
    return t


# ---- normalisation
@op("BatchNormalization")
def _bn(g, node, a, x):
    inp, scale, bias, mean, var = x[:5]
    eps = a.get("epsilon", 1e-5)
    if g.training:
        if g._bn_collect is not None:  # re-estimation pass: batch statistics, accumulate running estimates
            dims = [0] + list(range(2, inp.dim()))
            bm = inp.mean(dims)
            n = inp.numel() / inp.shape[1]
            bv = inp.var(dims, unbiased=True) if n > 1 else inp.var(dims, unbiased=False)
            acc = g._bn_collect.setdefault(node.input[3], [0.0, 0.0, 0.0])
            acc[0] = acc[0] + bm.detach() * inp.shape[0]
            acc[1] = acc[1] + bv.detach() * inp.shape[0]
            acc[2] += inp.shape[0]
            shape = [1, -1] + [1] * (inp.dim() - 2)
            return ((inp - bm.reshape(shape)) / torch.sqrt(inp.var(dims, unbiased=False).reshape(shape) + eps)
                    * scale.reshape(shape) + bias.reshape(shape))
        mom = 1.0 - a.get("momentum", 0.9) if g.bn_momentum is None else g.bn_momentum
        if g.bn_train is not None:
            return g.bn_train(inp, scale, bias, mean, var, mom, eps)
        return F.batch_norm(inp, mean, var, scale, bias, training=True, momentum=mom, eps=eps)
    return F.batch_norm(inp, mean, var, scale, bias, training=False, eps=eps)


@op("InstanceNormalization")
def _inorm(g, node, a, x):
    return F.instance_norm(x[0], weight=x[1], bias=x[2], eps=a.get("epsilon", 1e-5))


@op("LayerNormalization")
def _lnorm(g, node, a, x):
    t, scale = x[0], x[1]
    bias = x[2] if len(x) > 2 else None
    axis = a.get("axis", -1)
    axis = axis + t.dim() if axis < 0 else axis
    dims = list(range(axis, t.dim()))
    mean = t.mean(dims, keepdim=True)
    var = ((t - mean) ** 2).mean(dims, keepdim=True)
    y = (t - mean) / torch.sqrt(var + a.get("epsilon", 1e-5)) * scale
    return y + bias if bias is not None else y


# ---- pooling
def _pool_geom(a, x):
    kernel = list(a["kernel_shape"])
    nsp = len(kernel)
    strides = list(a.get("strides", [1] * nsp))
    dil = list(a.get("dilations", [1] * nsp))
    pads = _auto_pads(a, x, kernel, strides, dil)
    return kernel, strides, dil, pads, nsp


@op("MaxPool")
def _maxpool(g, node, a, x):
    t = x[0]
    kernel, strides, dil, pads, nsp = _pool_geom(a, t)
    ceil = bool(a.get("ceil_mode", 0))
    if pads[:nsp] == pads[nsp:] and all(p <= k // 2 for p, k in zip(pads[:nsp], kernel)):
        padding = pads[:nsp]
    else:
        t, padding = F.pad(t, _pads_torch(pads), value=-math.inf), [0] * nsp
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nsp]
    return fn(t, kernel, strides, padding, dil, ceil_mode=ceil)


@op("AveragePool")
def _avgpool(g, node, a, x):
    t = x[0]
    kernel, strides, dil, pads, nsp = _pool_geom(a, t)
    if any(d != 1 for d in dil):
        raise OnnxPruneError(f"cannot train this model in PyTorch: AveragePool with dilations at node '{node.name}'")
    ceil = bool(a.get("ceil_mode", 0))
    cip = bool(a.get("count_include_pad", 0))
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nsp]
    if pads[:nsp] == pads[nsp:] and all(p <= k // 2 for p, k in zip(pads[:nsp], kernel)):
        return fn(t, kernel, strides, pads[:nsp], ceil_mode=ceil, count_include_pad=cip)
    # asymmetric padding: pad explicitly, divide by the count of (real or, with count_include_pad, padded) cells
    tp = F.pad(t, _pads_torch(pads))
    s = fn(tp, kernel, strides, 0, ceil_mode=ceil, count_include_pad=True) * math.prod(kernel)
    ones = torch.ones((1, 1) + tuple(t.shape[2:]), dtype=t.dtype)
    mask = F.pad(ones, _pads_torch(pads), value=1.0 if cip else 0.0)
    cnt = fn(mask, kernel, strides, 0, ceil_mode=ceil, count_include_pad=True) * math.prod(kernel)
    return s / cnt.clamp_min(1.0)


@op("GlobalAveragePool")
def _gap(g, node, a, x):
    return x[0].mean(dim=list(range(2, x[0].dim())), keepdim=True)


@op("GlobalMaxPool")
def _gmp(g, node, a, x):
    return x[0].amax(dim=list(range(2, x[0].dim())), keepdim=True)


# ---- reductions
@op("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def _reduce(g, node, a, x):
    t = x[0]
    axes_from_input = node.op_type == "ReduceSum" and g.opset >= 13 or g.opset >= 18
    axes = _i(x[1]) if axes_from_input and len(x) > 1 and x[1] is not None else list(a.get("axes", []))
    keep = bool(a.get("keepdims", 1))
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return t
        axes = list(range(t.dim()))
    axes = [ax + t.dim() if ax < 0 else ax for ax in axes]
    if node.op_type == "ReduceMean":
        return t.mean(dim=axes, keepdim=keep)
    if node.op_type == "ReduceSum":
        return t.sum(dim=axes, keepdim=keep)
    return (t.amax if node.op_type == "ReduceMax" else t.amin)(dim=axes, keepdim=keep)


# ---- shape manipulation
@op("Pad")
def _pad(g, node, a, x):
    t = x[0]
    mode = _s(a.get("mode", "constant"))
    if g.opset < 11:
        pads, value, axes = list(a["pads"]), float(a.get("value", 0.0)), None
    else:
        pads = _i(x[1])
        value = float(x[2].reshape(-1)[0]) if len(x) > 2 and x[2] is not None and x[2].numel() else 0.0
        axes = _i(x[3]) if len(x) > 3 and x[3] is not None else None
    r = t.dim()
    if axes is not None:
        axes = [ax + r if ax < 0 else ax for ax in axes]
        full = [0] * (2 * r)
        for k, ax in enumerate(axes):
            full[ax], full[ax + r] = pads[k], pads[k + len(axes)]
        pads = full
    # negative pads crop
    if any(p < 0 for p in pads):
        sl = [slice(max(0, -pads[d]), t.shape[d] - max(0, -pads[d + r])) for d in range(r)]
        t = t[tuple(sl)]
        pads = [max(0, p) for p in pads]
    if not any(pads):
        return t
    tp = _pads_torch(pads)
    if mode == "constant":
        return F.pad(t, tp, value=value)
    # reflect / replicate pad only trailing spatial dims in torch: strip leading zero pairs
    first = next(d for d in range(r) if pads[d] or pads[d + r])
    if first < 2 and r > 2 or r - first > 3:
        raise OnnxPruneError(f"cannot train this model in PyTorch: Pad mode {mode} on axis {first} "
                             f"at node '{node.name}'")
    tp = _pads_torch(pads[first:r] + pads[r + first:])
    return F.pad(t, tp, mode="reflect" if mode == "reflect" else "replicate")


def _resize_axis(t: Tensor, axis: int, out_len: int, scale: float, mode: str, ctm: str, nearest: str) -> Tensor:
    n = t.shape[axis]
    if out_len == n and scale == 1.0:
        return t
    j = torch.arange(out_len, dtype=torch.float64)
    if ctm == "asymmetric":
        src = j / scale
    elif ctm == "align_corners":
        src = j * (n - 1) / (out_len - 1) if out_len > 1 else torch.zeros_like(j)
    elif ctm == "pytorch_half_pixel":
        src = (j + 0.5) / scale - 0.5 if out_len > 1 else torch.zeros_like(j)
    elif ctm == "half_pixel_symmetric":
        adj = out_len / (scale * n)
        src = (n / 2) * (1 - adj) + (j + 0.5) / scale - 0.5
    else:
        src = (j + 0.5) / scale - 0.5
    if mode == "nearest":
        if nearest == "floor":
            idx = torch.floor(src)
        elif nearest == "ceil":
            idx = torch.ceil(src)
        elif nearest == "round_prefer_ceil":
            idx = torch.floor(src + 0.5)
        else:  # round_prefer_floor
            idx = torch.ceil(src - 0.5)
        idx = idx.clamp(0, n - 1).long()
        return t.index_select(axis, idx)
    src = src.clamp(0, n - 1)
    lo = torch.floor(src).long().clamp(0, n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    w = (src - lo.double()).to(t.dtype)
    shape = [1] * t.dim()
    shape[axis] = out_len
    w = w.reshape(shape)
    return t.index_select(axis, lo) * (1 - w) + t.index_select(axis, hi) * w


@op("Resize", "Upsample")
def _resize(g, node, a, x):
    t = x[0]
    mode = _s(a.get("mode", "nearest"))
    mode = "linear" if mode == "bilinear" else mode
    ctm = _s(a.get("coordinate_transformation_mode", "half_pixel"))
    nearest = _s(a.get("nearest_mode", "round_prefer_floor"))
    r = t.dim()
    if node.op_type == "Upsample":
        scales = list(a["scales"]) if "scales" in a else [float(v) for v in x[1].reshape(-1).tolist()]
        sizes = None
        ctm, nearest = "asymmetric", "floor"
        if mode == "linear":
            ctm = "asymmetric"
    else:
        if g.opset < 11:
            scales = [float(v) for v in x[1].reshape(-1).tolist()]
            sizes = None
            ctm, nearest = "asymmetric", "floor"
        else:
            scales = [float(v) for v in x[2].reshape(-1).tolist()] if len(x) > 2 and x[2] is not None else []
            sizes = _i(x[3]) if len(x) > 3 and x[3] is not None else None
    axes = list(a.get("axes", range(r)))
    axes = [ax + r if ax < 0 else ax for ax in axes]
    for k, ax in enumerate(axes):
        if sizes:
            out_len = sizes[k]
            sc = out_len / t.shape[ax]
        else:
            sc = scales[k]
            out_len = int(math.floor(t.shape[ax] * sc))
        t = _resize_axis(t, ax, out_len, sc, mode, ctm, nearest)
    return t


@op("Concat")
def _concat(g, node, a, x):
    return torch.cat([t for t in x if t is not None], dim=a["axis"])


@op("Split")
def _split(g, node, a, x):
    t = x[0]
    axis = a.get("axis", 0)
    axis = axis + t.dim() if axis < 0 else axis
    n_out = len(node.output)
    if g.opset >= 13 and len(x) > 1 and x[1] is not None:
        sizes = _i(x[1])
    elif "split" in a:
        sizes = list(a["split"])
    elif "num_outputs" in a:
        n = a["num_outputs"]
        chunk = -(-t.shape[axis] // n)
        sizes = [chunk] * (n - 1) + [t.shape[axis] - chunk * (n - 1)]
    else:
        sizes = [t.shape[axis] // n_out] * n_out
    return list(torch.split(t, sizes, dim=axis))


@op("Slice")
def _slice(g, node, a, x):
    t = x[0]
    if g.opset < 10:
        starts, ends = list(a["starts"]), list(a["ends"])
        axes = list(a.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _i(x[1]), _i(x[2])
        axes = _i(x[3]) if len(x) > 3 and x[3] is not None else list(range(len(starts)))
        steps = _i(x[4]) if len(x) > 4 and x[4] is not None else [1] * len(starts)
    sl: list[slice] = [slice(None)] * t.dim()
    flips = []
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax = ax + t.dim() if ax < 0 else ax
        n = t.shape[ax]
        s = s + n if s < 0 else s
        e = e + n if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), n), min(max(e, 0), n)
            sl[ax] = slice(s, max(s, e), st)
        else:
            s, e = min(max(s, 0), n - 1), min(max(e, -1), n - 1)
            flips.append((ax, list(range(s, e, st))))
    y = t[tuple(sl)]
    for ax, idx in flips:
        y = y.index_select(ax, torch.tensor(idx, dtype=torch.long))
    return y


@op("Flatten")
def _flatten(g, node, a, x):
    t = x[0]
    axis = a.get("axis", 1)
    axis = axis + t.dim() if axis < 0 else axis
    lead = math.prod(t.shape[:axis])
    return t.reshape(lead, -1) if t.numel() else t.reshape(lead, math.prod(t.shape[axis:]))


@op("Reshape")
def _reshape(g, node, a, x):
    t, shape = x[0], _i(x[1])
    if not a.get("allowzero", 0):
        shape = [t.shape[k] if v == 0 else v for k, v in enumerate(shape)]
    return t.reshape(shape)


@op("Transpose")
def _transpose(g, node, a, x):
    perm = a.get("perm", list(reversed(range(x[0].dim()))))
    return x[0].permute(*perm)


@op("Squeeze")
def _squeeze(g, node, a, x):
    t = x[0]
    axes = _i(x[1]) if g.opset >= 13 and len(x) > 1 and x[1] is not None else list(a.get("axes", []))
    if not axes:
        return t.squeeze()
    axes = sorted((ax + t.dim() if ax < 0 else ax for ax in axes), reverse=True)
    for ax in axes:
        t = t.squeeze(ax)
    return t


@op("Unsqueeze")
def _unsqueeze(g, node, a, x):
    t = x[0]
    axes = _i(x[1]) if g.opset >= 13 else list(a["axes"])
    r = t.dim() + len(axes)
    for ax in sorted(ax + r if ax < 0 else ax for ax in axes):
        t = t.unsqueeze(ax)
    return t


@op("Shape")
def _shape(g, node, a, x):
    shp = list(x[0].shape)
    r = len(shp)
    start = a.get("start", 0)
    end = a.get("end", r)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    return torch.tensor(shp[start:end], dtype=torch.int64)


@op("Size")
def _size(g, node, a, x):
    return torch.tensor(x[0].numel(), dtype=torch.int64)


@op("Gather")
def _gather(g, node, a, x):
    t, idx = x[0], x[1].long()
    axis = a.get("axis", 0)
    axis = axis + t.dim() if axis < 0 else axis
    idx = torch.where(idx < 0, idx + t.shape[axis], idx)
    out = t.index_select(axis, idx.reshape(-1))
    return out.reshape(list(t.shape[:axis]) + list(idx.shape) + list(t.shape[axis + 1:]))


@op("Constant")
def _constant(g, node, a, x):
    if "value" in a:
        return torch.from_numpy(np.array(numpy_helper.to_array(a["value"])))
    if "value_float" in a:
        return torch.tensor(a["value_float"], dtype=torch.float32)
    if "value_floats" in a:
        return torch.tensor(list(a["value_floats"]), dtype=torch.float32)
    if "value_int" in a:
        return torch.tensor(a["value_int"], dtype=torch.int64)
    if "value_ints" in a:
        return torch.tensor(list(a["value_ints"]), dtype=torch.int64)
    raise OnnxPruneError(f"cannot train this model in PyTorch: unsupported Constant form at node '{node.name}'")


@op("ConstantOfShape")
def _cos(g, node, a, x):
    shape = _i(x[0])
    if "value" in a:
        v = torch.from_numpy(np.array(numpy_helper.to_array(a["value"]))).reshape(-1)[0]
        return torch.full(shape, v.item(), dtype=v.dtype)
    return torch.zeros(shape, dtype=torch.float32)


@op("Softmax", "LogSoftmax")
def _softmax(g, node, a, x):
    t = x[0]
    fn = F.softmax if node.op_type == "Softmax" else F.log_softmax
    if g.opset >= 13:
        return fn(t, dim=a.get("axis", -1))
    axis = a.get("axis", 1)
    axis = axis + t.dim() if axis < 0 else axis
    shp = t.shape
    return fn(t.reshape(math.prod(shp[:axis]), -1), dim=1).reshape(shp)


@op("Expand")
def _expand(g, node, a, x):
    shape = torch.broadcast_shapes(tuple(x[0].shape), tuple(_i(x[1])))
    return x[0].expand(shape)


@op("Tile")
def _tile(g, node, a, x):
    return x[0].repeat(*_i(x[1]))


SUPPORTED_OPS = frozenset(_OPS)
