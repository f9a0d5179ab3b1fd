"""The check every rewrite passes before anything is written: same outputs as its reference in onnxruntime.

Removing a channel is exactly equivalent to zeroing the consumer-side weights that read it, and removing a dead
neuron to keeping its zeros; so a rewritten model is run beside that reference (the original with the removed units
zeroed) on a few samples, and any output differing by more than `RTOL` relative is an error naming what differs.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from ..errors import OnnxPruneError
from ..io.data import Dataset
from ..io.runtime import input_specs, make_session

RTOL = 1e-4  # relative to max(1, max |reference output|)
PROBE_SAMPLES = 8
_DEFAULT_DIM = 32  # a dynamic non-batch dimension, when there is no data to take the shape from


def probe_feed(model: onnx.ModelProto, data: Dataset | None, n: int = PROBE_SAMPLES, seed: int = 0
               ) -> dict[str, np.ndarray]:
    """A few samples to compare on: the first `n` of `data`, or seeded random inputs of the declared shapes (a
    model whose batch axis is fixed gets exactly that many)."""
    n = fixed_batch(model) or n
    if data is not None and len(data) >= n:
        return next(data.subset(np.arange(n)).batches(n))
    rng = np.random.default_rng(seed)
    feed = {}
    for s in input_specs(model):
        shape = (n, *(_DEFAULT_DIM if d is None else d for d in s.sample_shape))
        if np.issubdtype(s.dtype, np.floating):
            feed[s.name] = rng.normal(size=shape).astype(s.dtype)
        elif s.dtype == np.bool_:
            feed[s.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            feed[s.name] = rng.integers(0, 8, size=shape).astype(s.dtype)
    return feed


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The batch size the first input declares, when it is a fixed number."""
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name not in inits:
            dims = vi.type.tensor_type.shape.dim
            return dims[0].dim_value if len(dims) and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    return None


def max_rel_diff(a: onnx.ModelProto, b: onnx.ModelProto, feed: dict[str, np.ndarray]) -> float:
    """Largest output difference of b against a, relative to max(1, max |a|), over all outputs."""
    ya, yb = make_session(a).run(None, feed), make_session(b).run(None, feed)
    worst = 0.0
    for x, y in zip(ya, yb):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            return float("inf")
        if x.size:
            worst = max(worst, float(np.abs(x - y).max()) / max(1.0, float(np.abs(x).max())))
    return worst


def check_equivalent(rewritten: onnx.ModelProto, reference: onnx.ModelProto, feed: dict[str, np.ndarray],
                     culprit: Callable[[], str] | None = None) -> None:
    """Raise a one-line error when `rewritten` and `reference` differ on `feed`; `culprit` names what differs."""
    diff = max_rel_diff(reference, rewritten, feed)
    if diff > RTOL:
        where = culprit() if culprit is not None else "the rewrite"
        raise OnnxPruneError(f"internal error: {where} changed the model's function (max relative output "
                             f"difference {diff:.3g} against the reference with the removed units zeroed); "
                             f"nothing was written — please report this model")
