"""First-order Taylor importance through the torch-executed ONNX graph (criteria that need gradients).

    weight score   s(w) = |g(w) · w|                                    g: gradient of the loss over all the data
    channel score  s(c) = mean_samples | Σ_positions a_c · ∂L/∂a_c |      (Molchanov et al. 2017, per channel)

Loss (`loss=`):
* "kd": KL(softmax(z_ref/T) ‖ softmax(z/T))·T² against `reference` (e.g. the dense model when scoring a pruned
  one; on the dense model itself this gradient is zero, so it needs a different reference);
* "ce": cross-entropy on the data's labels, or — label-free — on the model's own top-1 predictions;
* "auto" (default): "kd" when a reference is given, else "ce".

BatchNorm runs in inference mode (the model as deployed). Pure function: the model is not modified; the result
is numpy arrays keyed by initializer name (weights) and tensor name (channels, axis 1).

`taylor_stats` is what `--criterion taylor` runs in place of the onnxruntime statistics pass: the scores of every
weight layer's weight and of every channels-first tensor a channel group's consumers read, as `Stats` under the key
"taylor", which `criteria/weights.py` and `criteria/channels.py` lay out like any other statistic.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from ..errors import OnnxPruneError
from ..io.model import model_hash
from ..stats import Stats
from ..units.tokens import analyse_views
from ..units.weights import weight_layers
from .torch_graph import TorchGraph


def taylor_scores(model: onnx.ModelProto, data: Any, *, tensors: list[str] | None = None,
                  weights: list[str] | None = None, reference: onnx.ModelProto | None = None,
                  loss: str = "auto", temperature: float = 4.0, batch_size: int = 128,
                  max_samples: int | None = None, threads: int = 1
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(weight scores by initializer name, channel scores by tensor name) — see the module docstring.

    `weights`: initializer names to score (default: every trainable initializer with ≥ 2 dims);
    `tensors`: intermediate tensors whose channels (axis 1) to score (default: none).
    """
    if loss == "auto":
        loss = "kd" if reference is not None else "ce"
    if loss not in ("kd", "ce"):
        raise OnnxPruneError(f"unknown Taylor loss '{loss}' (kd, ce, auto)")
    if loss == "kd" and reference is None:
        raise OnnxPruneError("Taylor scores with the distillation loss need a reference model")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _scores(model, data, tensors or [], weights, reference, loss, temperature, batch_size, max_samples)
    finally:
        torch.set_num_threads(old)


def taylor_stats(model: onnx.ModelProto, data: Any, *, labels: str = "auto", batch_size: int = 128,
                 threads: int = 1) -> Stats:
    """First-order Taylor scores of the dense `model` on `data` as statistics (key "taylor"): |g·w| under every
    weight layer's weight name, Σ|g·a| per channel under every channels-first tensor that channel groups' consumers
    read. The loss is cross-entropy on the data's labels (`labels` "auto" / "true") or, label-free ("predicted", or
    "auto" without labels), on the model's own top-1 predictions — the dense model's distillation loss against
    itself has zero gradient. Token / head tensors (transformers) get no channel score."""
    groups, views = analyse_views(model)
    tensors = sorted({t for g in groups if g.prunable for t in g.activations
                      if views.get(t) is None or views[t].kind == "channels"})
    true = labels == "true" or (labels == "auto" and getattr(data, "labels", None) is not None)
    if true and getattr(data, "labels", None) is None:
        raise OnnxPruneError("--labels true: the calibration data has no labels ('y')")
    src = data if true else _Unlabelled(data)
    w, c = taylor_scores(model, src, tensors=tensors, weights=[L.weight for L in weight_layers(model)], loss="ce",
                         batch_size=data.batch_size(batch_size) if hasattr(data, "batch_size") else batch_size,
                         threads=threads)
    arrays = {(k, "taylor"): v for k, v in {**w, **c}.items()}
    return Stats(arrays, model_hash=model_hash(model), n=len(data), label_mode="true" if true else "predicted",
                 meta={"criterion": "taylor"})


class _Unlabelled:
    """`data` seen without labels: the Taylor loss then uses the model's own predictions."""

    labels = None

    def __init__(self, data: Any) -> None:
        self.inputs = data.inputs

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))


def _scores(model, data, tensors, weights, reference, loss, T, batch_size, max_samples):
    g = TorchGraph(model).eval()
    ref = TorchGraph(reference).eval() if reference is not None else None
    names = weights if weights is not None else [n for n in g.trainable_names() if g.tensor(n).dim() >= 2]
    unknown = [n for n in names if n not in g.init_names]
    if unknown:
        raise OnnxPruneError(f"no initializer named {unknown[0]!r}")
    produced = {o for n in g.nodes for o in n.output}
    missing = [t for t in tensors if t not in produced]
    if missing:
        raise OnnxPruneError(f"no tensor named {missing[0]!r} in the graph")
    wanted = set(names)
    for nm in g.trainable_names():
        g.tensor(nm).requires_grad_(nm in wanted)
    for nm in names:
        g.tensor(nm).requires_grad_(True)
    out_name = g.output_names[0]
    in_names = g.input_names
    inputs = data.inputs
    arrays = {in_names[0]: next(iter(inputs.values()))} if len(in_names) == 1 and in_names[0] not in inputs \
        else {n: inputs[n] for n in in_names}
    labels = getattr(data, "labels", None)
    n = len(next(iter(arrays.values())))
    if max_samples is not None:
        n = min(n, max_samples)
    grads = {nm: torch.zeros_like(g.tensor(nm)) for nm in names}
    chan: dict[str, torch.Tensor] = {}
    for i in range(0, n, batch_size):
        j = min(n, i + batch_size)
        feed = {k: torch.from_numpy(np.ascontiguousarray(v[i:j])).to(g.input_dtypes.get(k, torch.float32))
                for k, v in arrays.items()}
        outs = g.run(feed, fetch=[out_name] + tensors)
        acts = [outs[t] for t in tensors]
        for a in acts:
            if not a.requires_grad:
                raise OnnxPruneError(f"tensor {tensors[acts.index(a)]!r} does not depend on any weight")
            a.retain_grad()
        z = outs[out_name]
        if loss == "kd":
            with torch.no_grad():
                zt = ref.run(feed)[ref.output_names[0]]
            batch_loss = F.kl_div(F.log_softmax(z / T, 1), F.log_softmax(zt / T, 1), reduction="sum",
                                  log_target=True) * T * T
        else:
            y = torch.from_numpy(np.asarray(labels[i:j])).long() if labels is not None else z.argmax(1).detach()
            batch_loss = F.cross_entropy(z, y, reduction="sum")
        for p in names:
            g.tensor(p).grad = None
        batch_loss.backward()
        with torch.no_grad():
            for p in names:
                if g.tensor(p).grad is not None:
                    grads[p] += g.tensor(p).grad
            for t, a in zip(tensors, acts):
                prod = (a * a.grad)
                per = prod.reshape(prod.shape[0], prod.shape[1], -1).sum(2).abs().sum(0) if prod.dim() > 2 \
                    else prod.abs().sum(0)
                chan[t] = chan.get(t, 0) + per
    with torch.no_grad():
        w_scores = {p: (grads[p] / n * g.tensor(p)).abs().numpy().astype(np.float64) for p in names}
    c_scores = {t: (v / n).numpy().astype(np.float64) for t, v in chan.items()}
    return w_scores, c_scores
