"""Batched inference over a dataset: the model's first output on every sample, reduced batch by batch."""
from __future__ import annotations

import math

import numpy as np
import onnx

from ..progress import track
from .data import Dataset
from .runtime import make_session, run_batches


def outputs(model: onnx.ModelProto, data: Dataset, batch_size: int = 256, desc: str = "inference",
            reduce=None, threads: int | None = None) -> np.ndarray:
    """The model's first output on every sample (each batch passed through `reduce` first), concatenated;
    `threads`: onnxruntime's intra-op threads (None: its default)."""
    sess = make_session(model, threads=threads)
    bs = data.batch_size(batch_size)
    parts = [o[0] if reduce is None else reduce(o[0])
             for o in track(run_batches(sess, data.batches(bs), [sess.get_outputs()[0].name]), desc,
                            total=math.ceil(len(data) / bs))]
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)
