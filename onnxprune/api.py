"""The Python API: one function per CLI command, each returning a result object.

The CLI is a thin layer over these; paths or in-memory `onnx.ModelProto`s are both accepted where a model is.
"""
from __future__ import annotations

from pathlib import Path

import onnx

from .data import Dataset, load_dataset
from .evaluate import EvalResult
from .evaluate import evaluate as _evaluate
from .export import ExportResult
from .export import export as _export
from .model_io import load_model

ModelLike = str | Path | onnx.ModelProto


def as_model(m: ModelLike) -> onnx.ModelProto:
    return m if isinstance(m, onnx.ModelProto) else load_model(m)


def as_dataset(d: str | Path | Dataset, model: onnx.ModelProto) -> Dataset:
    return d if isinstance(d, Dataset) else load_dataset(d, model)


def evaluate(model: ModelLike, data: str | Path | Dataset, reference: ModelLike | None = None,
             batch_size: int = 256) -> EvalResult:
    """Top-1 accuracy on labelled data, and agreement with `reference` when given."""
    m = as_model(model)
    ref = as_model(reference) if reference is not None else None
    return _evaluate(m, as_dataset(data, m), ref, batch_size)


def export(src: str, out: str | Path, input_shape: tuple[int, ...], weights: str | Path | None = None,
           opset: int = 18, tolerance: float = 1e-4) -> ExportResult:
    """PyTorch factory (file.py:function) + optional state_dict → checked ONNX file."""
    return _export(src, out, input_shape, weights=weights, opset=opset, tolerance=tolerance)
