"""Accuracy and agreement with a reference model, streamed in batches through onnxruntime — for whatever the
model's first output is (`io.shapes.output_kind`):

- (N, K) class scores: top-1 accuracy (with labels) and top-1 agreement with the reference;
- (N, K, …) scores per position (segmentation): agreement is per position (the fraction of positions whose
  argmax class matches), accuracy is not measured (per-sample labels `y` cannot score a per-position output);
- anything else (regression, embeddings): no classes, so no accuracy or agreement; the pruned output is compared
  with the reference's by mean cosine similarity and mean relative error ‖p − r‖ / ‖r‖ per sample.

Outputs are reduced batch by batch (top-1 per sample or per position), so memory follows the number of samples,
never the size of a score map.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx

from ..certify.risks import cosine_and_relative_error
from ..io.data import Dataset
from ..io.shapes import data_shapes, output_kind
from ..io.infer import outputs

KIND_NOTES = {
    "dense": "the model's output is a per-position score map (N, K, …): agreement is per position; accuracy needs "
             "per-position labels and is not measured",
    "values": "the model's output is not a class score (regression or embedding): outputs are compared by cosine "
              "similarity and relative error; accuracy and top-1 agreement do not apply",
}


@dataclass(frozen=True)
class EvalResult:
    n: int
    accuracy: float | None  # None without labels, or when the output is not (N, K) class scores
    agreement: float | None  # None without a reference model, or when the output has no classes
    kind: str = "classes"  # what the first output is: classes, dense (per position) or values
    cosine: float | None = None  # values: mean cosine similarity of the outputs with the reference's
    rel_error: float | None = None  # values: mean ‖pruned − reference‖ / ‖reference‖ per sample
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Outputs:
    """A model's first output on a dataset, reduced per batch as its kind needs (memory follows N, not the output
    size): top-1 class per sample (classes), per position (dense: (N, positions)), or the raw values (values)."""

    kind: str
    values: np.ndarray

    def predictions(self) -> np.ndarray | None:
        return None if self.kind == "values" else self.values


def _top1(kind: str):
    if kind == "classes":
        return lambda v: v.reshape(len(v), -1).argmax(1)
    if kind == "dense":
        return lambda v: v.reshape(len(v), v.shape[1], -1).argmax(1)
    return None


def run(model: onnx.ModelProto, data: Dataset, batch_size: int = 256, desc: str = "inference",
        threads: int | None = None) -> Outputs:
    kind, _ = output_kind(model, data_shapes(data))
    return Outputs(kind, outputs(model, data, batch_size, desc, _top1(kind), threads))


def predict(model: onnx.ModelProto, data: Dataset, batch_size: int = 256, desc: str = "inference",
            threads: int | None = None) -> np.ndarray:
    """Top-1 class per sample (classifiers); per position for score maps ((N, positions)); the raw outputs for a
    model without classes."""
    out = run(model, data, batch_size, desc, threads)
    pred = out.predictions()
    return out.values if pred is None else pred


def evaluate(model: onnx.ModelProto, data: Dataset, reference: onnx.ModelProto | np.ndarray | Outputs | None = None,
             batch_size: int = 256) -> EvalResult:
    """`reference` is a model, its `run` outputs, or its `predict` result on `data` (so a caller comparing many
    models runs it once; cosine / relative error need the model or its outputs)."""
    out = run(model, data, batch_size)
    pred = out.predictions()
    acc = float((pred == data.labels).mean()) if data.labelled and out.kind == "classes" else None
    agree = cos = rel = None
    if reference is not None:
        ref = reference if isinstance(reference, (Outputs, np.ndarray)) else run(reference, data, batch_size,
                                                                                  "reference")
        ref_values = ref.values if isinstance(ref, Outputs) else ref
        if out.kind == "values":  # raw outputs (a model without classes): how close they are
            cos, rel = closeness(out.values, ref_values)
            ref_pred = None
        else:
            ref_pred = ref.predictions() if isinstance(ref, Outputs) else ref
        if pred is not None and ref_pred is not None and ref_pred.shape == pred.shape:
            agree = float((pred == ref_pred).mean())
    return EvalResult(len(data), acc, agree, out.kind, cos, rel, KIND_NOTES.get(out.kind, ""))


def closeness(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None]:
    """Mean per-sample cosine similarity and relative error ‖a − b‖ / ‖b‖ (float64; zero vectors handled: two zero
    outputs are identical, cosine 1 and error 0)."""
    if a.shape != b.shape or not len(a):
        return None, None
    cos, rel = cosine_and_relative_error(a.reshape(len(a), -1).astype(np.float64),
                                         b.reshape(len(b), -1).astype(np.float64))
    return float(cos.mean()), float(rel.mean())


def accuracy_of(pred: np.ndarray, data: Dataset) -> float | None:
    """Top-1 accuracy of per-sample class predictions (None without labels, or for per-position / raw outputs)."""
    if not data.labelled or pred.ndim != 1 or pred.dtype.kind == "f" or len(pred) != len(data):
        return None
    return float((pred == data.labels).mean())
