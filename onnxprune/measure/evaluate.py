"""Top-1 accuracy and agreement with a reference model, streamed in batches through onnxruntime."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from ..io.data import Dataset
from ..progress import track
from ..io.runtime import make_session, run_batches


@dataclass(frozen=True)
class EvalResult:
    n: int
    accuracy: float | None  # None when the data has no labels
    agreement: float | None  # None without a reference model

    def to_dict(self) -> dict:
        return asdict(self)


def predict(model: onnx.ModelProto, data: Dataset, batch_size: int = 256, desc: str = "inference") -> np.ndarray:
    """Top-1 class per sample from the model's first output (logits or probabilities, classes on the last axis)."""
    sess = make_session(model)
    out = [o[0].reshape(len(o[0]), -1).argmax(1)
           for o in track(run_batches(sess, data.batches(batch_size), [sess.get_outputs()[0].name]), desc,
                          total=math.ceil(len(data) / batch_size))]
    return np.concatenate(out)


def evaluate(model: onnx.ModelProto, data: Dataset, reference: onnx.ModelProto | np.ndarray | None = None,
             batch_size: int = 256) -> EvalResult:
    """`reference` is a model, or its predictions on `data` (so a caller comparing many models runs it once)."""
    pred = predict(model, data, batch_size)
    acc = float((pred == data.labels).mean()) if data.labelled else None
    agree = None
    if reference is not None:
        ref = reference if isinstance(reference, np.ndarray) else predict(reference, data, batch_size, "reference")
        agree = float((pred == ref).mean())
    return EvalResult(len(data), acc, agree)
