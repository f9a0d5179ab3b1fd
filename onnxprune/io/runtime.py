"""onnxruntime sessions and batched inference — the one place the runtime is configured."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import OnnxPruneError

OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_ONNX_TO_NUMPY = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
                  onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.UINT8: np.uint8,
                  onnx.TensorProto.INT8: np.int8, onnx.TensorProto.INT32: np.int32,
                  onnx.TensorProto.INT64: np.int64, onnx.TensorProto.BOOL: np.bool_,
                  onnx.TensorProto.UINT16: np.uint16, onnx.TensorProto.INT16: np.int16}


@dataclass(frozen=True)
class InputSpec:
    """A graph input as data must match it: name, per-sample shape (None = dynamic), numpy dtype, and the batch
    size the model fixes on axis 0 (None when the batch axis is dynamic: symbolic, `?`, 0 or -1)."""

    name: str
    sample_shape: tuple[int | None, ...]
    dtype: type
    batch: int | None = None

    def describe(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.sample_shape)
        return f"{self.name}: ({'N' if self.batch is None else self.batch},{dims}) {np.dtype(self.dtype).name}"


def dim_of(d: onnx.TensorShapeProto.Dimension) -> int | None:
    """A declared dimension: its value when fixed and positive; None when dynamic (symbolic, unset, 0 or -1 — some
    exporters write -1 for a dynamic axis, which must never be taken as a size)."""
    return d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The batch size the model's inputs fix on axis 0, or None when it is dynamic (the smallest if they differ)."""
    fixed = [s.batch for s in input_specs(model) if s.batch is not None]
    return min(fixed) if fixed else None


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's user inputs (initializers excluded); the first axis is taken to be the batch axis."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = [dim_of(d) for d in tt.shape.dim]
        specs.append(InputSpec(vi.name, tuple(dims[1:]), _ONNX_TO_NUMPY.get(tt.elem_type, np.float32),
                               dims[0] if dims else None))
    return specs


def make_session(model: onnx.ModelProto | bytes | str, *, threads: int | None = None, optimize: str = "all",
                 sequential: bool = False, weights_apart: bool = False) -> ort.InferenceSession:
    """A CPU session. `threads=None` lets onnxruntime choose; 1 thread + sequential is the edge setting.

    weights_apart (a ModelProto only): hand the large initializers to onnxruntime as in-memory arrays instead of
    serialising them into the model bytes (`_weights_apart`) — for throw-away sessions such as shape probes, whose
    cost on a big model is otherwise mostly serialising and parsing the weights (bert-base: 3.2 → 0.4 CPU-s)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = OPT_LEVELS[optimize]
    so.log_severity_level = 3
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if sequential:
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    held: list = []
    if weights_apart and isinstance(model, onnx.ModelProto):
        src, names, held = _weights_apart(model)
        if names:
            so.add_external_initializers(names, held)
    else:
        src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    try:
        sess = ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # an op onnxruntime does not implement, a custom domain, a bad file
        raise OnnxPruneError(f"onnxruntime cannot load the model: {_first_line(e)}") from None
    sess._onnxprune_weights = held  # onnxruntime reads the arrays in place: they live as long as the session
    return sess


APART_MIN = 4096  # initializers of at least this many elements are handed over apart (`make_session`)
_APART_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT64,
                onnx.TensorProto.INT32, onnx.TensorProto.INT8, onnx.TensorProto.UINT8}


def _weights_apart(model: onnx.ModelProto) -> tuple[bytes, list[str], list[ort.OrtValue]]:
    """The model's bytes with each large initializer declared as external data, and those initializers' names and
    values (OrtValues over numpy arrays) for `SessionOptions.add_external_initializers`: the same model for
    onnxruntime, without the weights going through protobuf twice."""
    from onnx import numpy_helper

    m = _copy_but(model, "graph")  # field by field: the weights' bytes are never copied
    _copy_into(m.graph, model.graph, "initializer")
    names, values = [], []
    for t in model.graph.initializer:
        if t.data_type not in _APART_TYPES or t.data_location == onnx.TensorProto.EXTERNAL or \
                int(np.prod(t.dims, dtype=np.int64)) < APART_MIN:
            m.graph.initializer.add().CopyFrom(t)
            continue
        names.append(t.name)
        values.append(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(numpy_helper.to_array(t))))
        stub = m.graph.initializer.add()
        stub.name, stub.data_type, stub.data_location = t.name, t.data_type, onnx.TensorProto.EXTERNAL
        stub.dims.extend(t.dims)
        entry = stub.external_data.add()
        entry.key, entry.value = "location", "in-memory"
    return m.SerializeToString(), names, values


def _copy_but(msg, skip: str):
    """A new message of msg's type with every set field copied except `skip`."""
    out = type(msg)()
    _copy_into(out, msg, skip)
    return out


def _copy_into(out, msg, skip: str) -> None:
    for field, value in msg.ListFields():
        if field.name == skip:
            continue
        if hasattr(value, "extend"):  # a repeated field
            getattr(out, field.name).extend(value)
        elif field.message_type is not None:
            getattr(out, field.name).CopyFrom(value)
        else:
            setattr(out, field.name, value)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:300]


def run_batches(session: ort.InferenceSession, batches: Iterator[dict[str, np.ndarray]],
                outputs: list[str] | None = None) -> Iterator[list[np.ndarray]]:
    """Run each feed dict; yields the list of requested outputs per batch."""
    for feed in batches:
        try:
            yield session.run(outputs, feed)
        except Exception as e:
            raise OnnxPruneError(f"onnxruntime failed on a batch: {_first_line(e)}") from None


def parse_dims(text: str, option: str, example: str = "1,3,224,224") -> tuple[int, ...]:
    """Comma-separated positive integers from a command-line value; one error line naming the option otherwise."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise OnnxPruneError(f"{option} '{text}': expected comma-separated integers such as {example}") from None
    if not shape or any(d <= 0 for d in shape):
        raise OnnxPruneError(f"{option} '{text}': dimensions must be positive")
    return shape
