"""Fold chained constant Adds: MatMul → Add(b1) → Add(b2) becomes MatMul → Add(b1 + b2).

The least-squares re-fit gives a MatMul its fitted bias in a new Add right after it (`reconstruct.channels`), ahead
of the exporter's own bias Add; two Adds of constants in a row cost a pass over the tensor each and can keep
onnxruntime from fusing the MatMul with its bias (transformer MLPs and attention output projections). Exact up to
float rounding of b1 + b2; the result is validated.
"""
from __future__ import annotations

import numpy as np
import onnx

from ..io.graph import consumers, graph_outputs, initializer_map, remove_unused_initializers, set_initializer
from ..io.model import validate


def fold_bias_adds(model: onnx.ModelProto) -> onnx.ModelProto:
    inits = initializer_map(model)
    outs = graph_outputs(model)
    changed = True
    while changed:
        changed = False
        uses = consumers(model)
        for a in model.graph.node:
            if a.op_type != "Add" or len(a.input) != 2 or a.input[1] not in inits or a.output[0] in outs:
                continue
            nxt = uses.get(a.output[0], [])
            if len(nxt) != 1 or nxt[0].op_type != "Add":
                continue
            b = nxt[0]
            k = 0 if b.input[0] == a.output[0] else 1  # where a feeds b
            c2 = b.input[1 - k]
            if c2 not in inits or inits[a.input[1]].ndim != 1 or inits[c2].ndim != 1 or \
                    inits[a.input[1]].shape != inits[c2].shape:
                continue
            name = f"{a.input[1]}__folded"
            inits[name] = (inits[a.input[1]].astype(np.float64) + inits[c2]).astype(inits[c2].dtype)
            set_initializer(model, name, inits[name])
            b.input[:] = [a.input[0], name]
            model.graph.node.remove(a)
            changed = True
            break
    remove_unused_initializers(model)
    return validate(model)
