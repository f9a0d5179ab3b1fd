"""Tensor shapes that never depend on ONNX shape inference alone.

Static inference stops at an op it does not know (a custom domain, `com.microsoft.*`), loses shapes after a
Reshape whose target is computed at run time (a channel shuffle), and leaves symbolic dims symbolic. Every consumer
of shapes (the channel analysis, the parameter / MAC counts, the benchmarks) goes through `tensor_shapes`:
inference first, with the inputs pinned to concrete shapes; every node output it leaves incomplete is then taken
from one onnxruntime run (every intermediate fetched) on one calibration batch or on seeded random inputs of the
concrete input shapes.

Dimensions: a declared input dim is fixed only when it is a positive `dim_value`; symbolic, unset, 0 and -1 dims
are dynamic. Concrete input shapes come from, in order: the caller (`--shape`, or the data's own shape), the
declared fixed dims, and batch 1 (or the model's fixed batch) for a dynamic batch axis.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from ..errors import OnnxPruneError
from .graph import without_weights
from .runtime import dim_of, input_specs, make_session

Shape = tuple[int, ...]
SEED = 0


def declared(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...] | None]:
    """Each user input's declared dims (None = dynamic), or None when not even the rank is declared."""
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, tuple[int | None, ...] | None] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        out[vi.name] = tuple(dim_of(d) for d in tt.shape.dim) if tt.HasField("shape") else None
    return out


def concrete_inputs(model: onnx.ModelProto, shapes: Mapping[str, Shape] | None = None, *,
                    strict: bool = True) -> dict[str, Shape]:
    """Concrete shapes of every user input.

    `shapes` maps input names to whole shapes (batch first) or per-sample shapes (rank one less; the batch is then
    the model's fixed batch, or 1); a given shape must agree with every fixed declared dim. Inputs without a given
    shape use their declared dims with a dynamic batch taken as 1. With `strict`, an input that still has a dynamic
    dim is a one-line error; otherwise it is left out.
    """
    shapes = dict(shapes or {})
    dims = declared(model)
    if "" in shapes:  # an unnamed --shape applies to the only input
        if len(dims) != 1:
            raise OnnxPruneError(f"--shape: the model has {len(dims)} inputs; name each one, e.g. "
                                 f"--shape {next(iter(dims), 'x')}=D,D,...")
        shapes[next(iter(dims))] = shapes.pop("")
    unknown = set(shapes) - set(dims)
    if unknown:
        raise OnnxPruneError(f"--shape: no model input named {', '.join(sorted(unknown))} "
                             f"(inputs: {', '.join(dims)})")
    out: dict[str, Shape] = {}
    for name, decl in dims.items():
        if name in shapes:
            given = tuple(int(d) for d in shapes[name])
            if decl is not None and len(given) == len(decl) - 1:  # a per-sample shape
                given = (decl[0] or 1, *given)
            if any(d <= 0 for d in given):
                raise OnnxPruneError(f"--shape {name}={_dims(given)}: dimensions must be positive")
            if decl is not None and (len(given) != len(decl) or
                                     any(d is not None and d != g for d, g in zip(decl, given))):
                raise OnnxPruneError(f"--shape {name}={_dims(given)} does not fit the model's declared "
                                     f"{_dims(decl)} (? = dynamic)")
            out[name] = given
            continue
        if decl is None:
            if strict:
                raise OnnxPruneError(f"input '{name}' has no declared shape; pass --shape {name}=D,D,...")
            continue
        concrete = ((decl[0] or 1, *decl[1:]) if decl else ())
        if any(d is None for d in concrete):
            if strict:
                raise OnnxPruneError(f"input '{name}' has dynamic dimensions {_dims(decl)}; pass --shape "
                                     f"{name}=" + ",".join(str(d or "N") for d in concrete))
            continue
        out[name] = concrete  # type: ignore[assignment]
    return out


def data_shapes(data) -> dict[str, Shape]:
    """The shapes one sample of `data` (an io.data.Dataset) gives each input, at the model's fixed batch or 1."""
    return {s.name: (s.batch or 1, *data.inputs[s.name].shape[1:]) for s in data.specs}


def tensor_shapes(model: onnx.ModelProto, inputs: Mapping[str, Shape] | None = None,
                  feed: Mapping[str, np.ndarray] | None = None) -> dict[str, tuple[int | str | None, ...]]:
    """Tensor name → dims (int; a symbolic name or None where still unknown) for inputs, initializers and every
    node output of the main graph.

    `inputs` pins the input shapes for inference (default: `concrete_inputs(model, strict=False)`); `feed` is one
    batch of real inputs (it pins the shapes itself). Node outputs that inference leaves without a complete
    concrete shape are taken from one onnxruntime run on `feed`, or on seeded random inputs of the pinned shapes;
    when the model cannot run (an op onnxruntime lacks, an input with no concrete shape) they stay as inferred.
    """
    if feed is not None:
        inputs = {k: tuple(np.shape(v)) for k, v in feed.items()}
    elif inputs is None:
        inputs = concrete_inputs(model, strict=False)
    shapes = _inferred(model, inputs)
    inits = {t.name for t in model.graph.initializer}
    missing = [o for n in model.graph.node for o in n.output
               if o and o not in inits and not complete(shapes.get(o))]
    if missing:
        shapes.update(runtime_shapes(model, missing, inputs, feed))
    return shapes


def complete(shape) -> bool:
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


def runtime_shapes(model: onnx.ModelProto, tensors: list[str], inputs: Mapping[str, Shape],
                   feed: Mapping[str, np.ndarray] | None = None) -> dict[str, Shape]:
    """Shapes of `tensors` from one onnxruntime run (every requested tensor fetched); {} when the model cannot run
    on the given inputs."""
    return {t: shape for t, (shape, _) in runtime_types(model, tensors, inputs, feed).items()}


def runtime_types(model: onnx.ModelProto, tensors: list[str], inputs: Mapping[str, Shape] | None = None,
                  feed: Mapping[str, np.ndarray] | None = None) -> dict[str, tuple[Shape, int]]:
    """(shape, ONNX element type) of `tensors` from one onnxruntime run; {} when the model cannot run (an op
    onnxruntime lacks, an input without a concrete shape). Default inputs: `concrete_inputs(model, strict=False)`."""
    if feed is None:
        feed = random_feed(model, concrete_inputs(model, strict=False) if inputs is None else inputs)
        if feed is None:
            return {}
    out = {}
    for t, v in runtime_values(model, tensors, feed).items():
        if isinstance(v, np.ndarray):
            try:
                elem = onnx.helper.np_dtype_to_tensor_dtype(v.dtype)
            except (KeyError, TypeError, ValueError):
                continue
            out[t] = (tuple(int(d) for d in v.shape), elem)
    return out


def runtime_values(model: onnx.ModelProto, tensors: list[str], feed: Mapping[str, np.ndarray]) -> dict[str, object]:
    """The values of `tensors` from one onnxruntime run on `feed` (optimisations off, every tensor fetched); {} when
    the model cannot run."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in dict.fromkeys(tensors) if t not in have)
    values = None
    for apart in (True, False):  # a probe: the weights handed over in memory, else (should that fail) serialised
        try:
            sess = make_session(m, threads=1, optimize="disable", weights_apart=apart)
            names = [o.name for o in sess.get_outputs()]
            values = sess.run(names, dict(feed))
            break
        except Exception:  # noqa: BLE001 - best effort: callers then stay conservative
            continue
    if values is None:
        return {}
    wanted = set(tensors)
    return {t: v for t, v in zip(names, values) if t in wanted}


def _inferred(model: onnx.ModelProto, inputs: Mapping[str, Shape]) -> dict[str, tuple[int | str | None, ...]]:
    """Non-strict shape inference (with data propagation) on a copy whose inputs declare `inputs`; a dim that is
    not a positive value is symbolic (its name) or None."""
    m = without_weights(model)
    del m.graph.value_info[:]
    for vi in m.graph.input:
        if vi.name in inputs:
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            for d in inputs[vi.name]:
                shape.dim.add().dim_value = int(d)
    try:
        m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception:  # noqa: BLE001 - an inconsistent graph: keep what the file declares
        pass
    out: dict[str, tuple[int | str | None, ...]] = {}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            out[vi.name] = tuple(dim_of(d) or (d.dim_param or None) for d in tt.shape.dim)
    for t in m.graph.initializer:
        out[t.name] = tuple(int(d) for d in t.dims)
    for n in m.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = tuple(int(d) for d in a.t.dims)
    return out


def random_feed(model: onnx.ModelProto, inputs: Mapping[str, Shape]) -> dict[str, np.ndarray] | None:
    """Seeded inputs of the given concrete shapes for one shape-finding run (floats standard normal, integers zero);
    None when some model input has no shape in `inputs`."""
    specs = input_specs(model)
    if any(s.name not in inputs for s in specs):
        return None
    rng = np.random.default_rng(SEED)
    return {s.name: _random(rng, inputs[s.name], s.dtype) for s in specs}


def _random(rng: np.random.Generator, shape: Shape, dtype: type) -> np.ndarray:
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.floating):
        return rng.standard_normal(shape).astype(dt)
    return np.zeros(shape, dt)  # integer inputs are often indices: zeros are always valid


def _dims(shape) -> str:
    return "(" + ",".join("?" if d is None else str(d) for d in shape) + ")"


# ------------------------------------------------------------------------------------------ what the output is
EMBEDDING_OPS = ("LpNormalization",)
_NORMS = ("ReduceL2", "ReduceSumSquare", "Sqrt", "LpNormalization")
_PASS = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast")


def output_kind(model: onnx.ModelProto, inputs: Mapping[str, Shape] | None = None) -> tuple[str, int | None]:
    """What the first graph output is, and its class count K:

    - "classes": (N, K) scores, K ≥ 2 — top-1 accuracy and agreement;
    - "dense": (N, K, …) scores per position (segmentation) — classes on axis 1, agreement per position;
    - "values": anything else — regression (N,) / (N, 1), embeddings (an L2-normalised output) — compared by cosine
      similarity and relative error; K is None.
    """
    out = model.graph.output[0].name
    shape = tensor_shapes(model, inputs).get(out) if inputs is not None else None
    if not complete(shape):
        shape = _declared_output(model)
    if shape is None or len(shape) < 2 or _normalised(model, out):
        return "values", None
    k = shape[1]
    if not isinstance(k, int) or k < 2:
        return "values", None
    return ("classes" if len(shape) == 2 else "dense"), k


def _declared_output(model: onnx.ModelProto):
    tt = model.graph.output[0].type.tensor_type
    if not tt.HasField("shape"):
        shapes = _inferred(model, concrete_inputs(model, strict=False))
        return shapes.get(model.graph.output[0].name)
    return tuple(dim_of(d) or (d.dim_param or None) for d in tt.shape.dim)


def _normalised(model: onnx.ModelProto, tensor: str) -> bool:
    """Whether `tensor` is an L2-normalised vector (an embedding): LpNormalization, or x / ‖x‖."""
    producer = {o: n for n in model.graph.node for o in n.output}
    n = producer.get(tensor)
    while n is not None and n.op_type in _PASS:
        n = producer.get(n.input[0])
    if n is None:
        return False
    if n.op_type in EMBEDDING_OPS:
        return True
    if n.op_type != "Div" or len(n.input) < 2:
        return False
    stack, seen = [n.input[1]], 0
    while stack and seen < 8:
        p = producer.get(stack.pop())
        seen += 1
        if p is None:
            continue
        if p.op_type in _NORMS:
            return True
        stack.extend(x for x in p.input if x)
    return False
