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
                  onnx.TensorProto.INT64: np.int64, onnx.TensorProto.BOOL: np.bool_}


@dataclass(frozen=True)
class InputSpec:
    """A graph input as data must match it: name, per-sample shape (None = dynamic), numpy dtype."""

    name: str
    sample_shape: tuple[int | None, ...]
    dtype: type

    def describe(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.sample_shape)
        return f"{self.name}: (N,{dims}) {np.dtype(self.dtype).name}"


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's user inputs (initializers excluded); the first axis is taken to be the batch axis."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        specs.append(InputSpec(vi.name, tuple(dims[1:]), _ONNX_TO_NUMPY.get(tt.elem_type, np.float32)))
    return specs


def make_session(model: onnx.ModelProto | bytes | str, *, threads: int | None = None, optimize: str = "all",
                 sequential: bool = False) -> ort.InferenceSession:
    """A CPU session. `threads=None` lets onnxruntime choose; 1 thread + sequential is the edge setting."""
    so = ort.SessionOptions()
    so.graph_optimization_level = OPT_LEVELS[optimize]
    so.log_severity_level = 3
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if sequential:
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])


def run_batches(session: ort.InferenceSession, batches: Iterator[dict[str, np.ndarray]],
                outputs: list[str] | None = None) -> Iterator[list[np.ndarray]]:
    """Run each feed dict; yields the list of requested outputs per batch."""
    for feed in batches:
        try:
            yield session.run(outputs, feed)
        except Exception as e:
            raise OnnxPruneError(f"onnxruntime failed on a batch: {str(e).splitlines()[0][:300]}") from None
