"""Fold BatchNormalization into the Conv before it (deployment): one node fewer, same function."""
from __future__ import annotations

import numpy as np
import onnx

from ..io.graph import attr, copy_model, fresh_name, initializer_map, producers, remove_unused_initializers, \
    set_initializer, uses
from ..io.model import validate


def fold_bn(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold every BatchNormalization that directly follows a Conv into the Conv's weights and bias (deployment)."""
    work = copy_model(model)
    g = work.graph
    inits = initializer_map(work)
    used = uses(work)
    producer = producers(work)
    outputs = {o.name for o in g.output}
    drop = []
    for bn in g.node:
        conv = producer.get(bn.input[0])
        if (bn.op_type != "BatchNormalization" or conv is None or conv.op_type != "Conv" or len(bn.output) > 1
                or used[bn.input[0]] != 1 or bn.input[0] in outputs or used[conv.input[1]] != 1
                or conv.input[1] not in inits or not all(t in inits for t in bn.input[1:5])):
            continue
        gamma, beta, mean, var = (inits[t].astype(np.float64) for t in bn.input[1:5])
        scale = gamma / np.sqrt(var + attr(bn, "epsilon", 1e-5))
        w = inits[conv.input[1]]
        bias_name = conv.input[2] if len(conv.input) > 2 and conv.input[2] else ""
        b = inits[bias_name].astype(np.float64) if bias_name else np.zeros(w.shape[0])
        set_initializer(work, conv.input[1], (w * scale.reshape(-1, *[1] * (w.ndim - 1))).astype(w.dtype))
        new_bias = ((b - mean) * scale + beta).astype(w.dtype)
        if not bias_name or used[bias_name] != 1:
            bias_name = fresh_name(inits, f"{conv.input[1]}_folded_bias")
            inits[bias_name] = new_bias
            while len(conv.input) < 3:
                conv.input.append("")
            conv.input[2] = bias_name
        set_initializer(work, bias_name, new_bias)
        conv.output[0] = bn.output[0]
        drop.append(bn)
    for bn in drop:
        g.node.remove(bn)
    remove_unused_initializers(work)
    return validate(work)
