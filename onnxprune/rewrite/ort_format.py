"""onnxruntime's ORT format, for the minimal (mobile) builds that cannot read .onnx files."""
from __future__ import annotations

from pathlib import Path


def to_ort(path: str | Path) -> Path:
    """Write `path` beside itself as .ort, via an optimising session at the portable (basic) level."""
    import onnxruntime as ort

    path = Path(path)
    target = path.with_suffix(".ort")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # portable across hardware
    so.optimized_model_filepath = str(target)
    so.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return target
