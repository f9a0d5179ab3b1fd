"""The one walker for "what follows this layer": the single-consumer chain after a tensor.

A layer's output usually passes through a BatchNormalization, a per-channel affine constant (bias Add, scale Mul),
a residual Add and an activation before anything else reads it. Statistics want the tensor at the end of that chain
(the channel as its consumers see it), relative importance wants the activation on it (its blind range), and
dead-neuron removal wants the path between two fully connected layers. All of them follow one chain, here.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

from ..io.graph import attr, constant, consumers, graph_outputs, opset

ACTIVATIONS = {"Relu", "Clip", "HardSigmoid", "LeakyRelu", "Sigmoid", "HardSwish", "Tanh", "Elu", "Selu",
               "PRelu", "Gelu", "Softplus", "Mish", "ThresholdedRelu"}
MAX_STEPS = 8

Step = Callable[[onnx.NodeProto, str], bool]


def follow(model: onnx.ModelProto, tensor: str, through: Step) -> tuple[list[onnx.NodeProto], onnx.NodeProto | None]:
    """Walk from `tensor` while each next node is its only reader and `through(node, tensor)` holds.

    Returns the nodes passed through, and the node the walk stopped at (None at a fan-out or a graph output)."""
    cons, outs = consumers(model), graph_outputs(model)
    path: list[onnx.NodeProto] = []
    t = tensor
    for _ in range(MAX_STEPS):
        nxt = cons.get(t, [])
        if len(nxt) != 1 or t in outs:
            return path, None
        n = nxt[0]
        if not through(n, t):
            return path, n
        path.append(n)
        t = n.output[0]
    return path, None


def transparent(model: onnx.ModelProto) -> Step:
    """Steps that keep a layer's channels as they are: BN, a per-channel affine constant, a residual Add."""
    inits = {t.name for t in model.graph.initializer}

    def step(n: onnx.NodeProto, t: str) -> bool:
        if n.op_type == "BatchNormalization":
            return True
        if n.op_type == "Add" and len(n.input) == 2:
            return True  # bias Add, or a residual Add: consumers see what comes after it
        return (n.op_type in ("Sub", "Mul", "Div") and len(n.input) == 2
                and all(i == t or i in inits for i in n.input) and any(i in inits for i in n.input))
    return step


def consumer_view(model: onnx.ModelProto, node: onnx.NodeProto) -> str:
    """The layer's output as its consumers see it: after BN, affine constants, residual Add and the activation."""
    path, stop = follow(model, node.output[0], transparent(model))
    if stop is not None and stop.op_type in ACTIVATIONS:
        return stop.output[0]
    return path[-1].output[0] if path else node.output[0]


def activation_after(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[str, str, float, float] | None:
    """(activation output, op, lo, hi) for a blind-range activation ending the layer's chain, else None.

    The activation's derivative is zero outside (lo, hi) — ReLU below 0, Clip and HardSigmoid saturated — so a
    sample there carries no information about the layer's weights (paper 003's blind range)."""
    _, stop = follow(model, node.output[0], transparent(model))
    if stop is None:
        return None
    if stop.op_type == "Relu":
        return stop.output[0], "Relu", 0.0, math.inf
    if stop.op_type == "HardSigmoid":
        return stop.output[0], "HardSigmoid", 0.0, 1.0
    if stop.op_type == "Clip":
        bounds = _clip_bounds(model, stop)
        return None if bounds is None else (stop.output[0], "Clip", *bounds)
    return None


def _clip_bounds(model: onnx.ModelProto, n: onnx.NodeProto) -> tuple[float, float] | None:
    """Clip's (min, max) from attributes (opset < 11) or constant inputs; None when an input bound is dynamic."""
    if opset(model) < 11:
        lo, hi = attr(n, "min"), attr(n, "max")
    else:
        has_lo, has_hi = len(n.input) > 1 and n.input[1], len(n.input) > 2 and n.input[2]
        lo = constant(model, n.input[1]) if has_lo else None
        hi = constant(model, n.input[2]) if has_hi else None
        if (has_lo and lo is None) or (has_hi and hi is None):
            return None
    lo_f = -math.inf if lo is None else float(np.asarray(lo).reshape(-1)[0])
    hi_f = math.inf if hi is None else float(np.asarray(hi).reshape(-1)[0])
    return lo_f, hi_f
