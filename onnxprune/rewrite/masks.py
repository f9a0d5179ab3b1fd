"""Zero masked weights: the whole of unstructured pruning's rewrite (and the reference it is checked against)."""
from __future__ import annotations

import numpy as np
import onnx

from ..errors import OnnxPruneError
from ..io.graph import copy_model, initializer_map, set_initializer
from ..io.model import model_hash
from ..select.plan import Plan


def masked(model: onnx.ModelProto, plan: Plan) -> onnx.ModelProto:
    """A copy of `model` with every masked weight set to exactly 0 (nothing else changes)."""
    if plan.mode != "unstructured":
        raise OnnxPruneError(f"plan is for {plan.mode} pruning, not unstructured")
    if plan.model_hash != model_hash(model):
        raise OnnxPruneError(f"plan was made for another model (hash {plan.model_hash}, this model is "
                             f"{model_hash(model)})")
    out = copy_model(model)
    w = initializer_map(out)
    for name, keep in plan.masks.items():
        if name not in w:
            raise OnnxPruneError(f"plan masks weight '{name}', which the model does not have")
        if keep.shape != w[name].shape:
            raise OnnxPruneError(f"plan mask for '{name}' has shape {keep.shape}, weight is {w[name].shape}")
        set_initializer(out, name, np.where(keep, w[name], np.zeros((), w[name].dtype)))
    return out
