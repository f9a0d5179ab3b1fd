"""Which tensors each criterion needs: `default_requests(model, criteria)`.

Layers are Gemm (constant weight, transA=0), MatMul with a constant 2-D weight, and Conv with a constant weight.
Their *data inputs* are requested as "features" (Gemm/MatMul) or "channels" (Conv; per-sample channel means).
*Channel producers* are Conv layers (and Gemm/MatMul neurons): the tensor requested for them is the end of the
single-consumer chain layer → [BatchNormalization | per-channel constant Add/Sub/Mul/Div | residual Add]* →
[activation], i.e. the channel as its consumers see it (for the last conv of a residual block that is the post-Add
activation its whole coupled group shares — tapping the BN output before the Add would also block onnxruntime's
Conv+Add+ReLU fusion and cost ~20 % extra time). A chain that ends in a graph output (the logits) is not requested.

| criterion | requests                                                                              |
|-----------|---------------------------------------------------------------------------------------|
| fscreen   | class_moments of every layer input (weight-level F) and of every producer output (CLS) |
| apoz      | zeros of every producer output                                                        |
| wanda     | moments (mean, var, sqnorm) of every layer input                                      |
| ri        | contrib of every layer (input tensor + layer name; the activation output is tapped)   |
| gram      | gram of every Gemm/MatMul input (Conv reconstruction streams full maps instead)       |
| all       | all of the above                                                                      |
"""
from __future__ import annotations

import onnx

from ..errors import OnnxPruneError
from .collect import Request
from .instrument import LAYER_OPS, consumers, node_id, tensor_infos

CRITERIA = ("fscreen", "apoz", "wanda", "ri", "gram", "all")
ACTIVATIONS = {"Relu", "Clip", "HardSigmoid", "LeakyRelu", "Sigmoid", "HardSwish", "Tanh", "Elu", "Selu",
               "PRelu", "Gelu", "Softplus", "Mish", "ThresholdedRelu"}


def prunable_layers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Gemm / MatMul-with-constant-weight / Conv nodes whose weight is an initializer, in graph order."""
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type not in LAYER_OPS or len(n.input) < 2 or n.input[1] not in inits:
            continue
        if n.op_type == "MatMul" and len(inits[n.input[1]].dims) != 2:
            continue
        if n.op_type == "Gemm" and any(a.name == "transA" and a.i for a in n.attribute):
            continue
        if n.input[0] in inits:
            continue
        out.append(n)
    return out


def producer_output(model: onnx.ModelProto, node: onnx.NodeProto) -> str:
    """The layer's output as its consumers see it (after BN / constant affine / activation)."""
    cons = consumers(model)
    inits = {t.name for t in model.graph.initializer}
    t = node.output[0]
    for _ in range(8):
        nxt = cons.get(t, [])
        if len(nxt) != 1:
            break
        n = nxt[0]
        if n.op_type in ACTIVATIONS:
            return n.output[0]
        if n.op_type == "BatchNormalization" or (n.op_type == "Add" and len(n.input) == 2) or (
                n.op_type in ("Sub", "Mul", "Div") and len(n.input) == 2
                and all(i == t or i in inits for i in n.input) and any(i in inits for i in n.input)):
            t = n.output[0]  # BN, bias / per-channel affine, or a residual Add: consumers see what comes after
            continue
        break
    return t


def parse_criteria(criteria) -> set[str]:
    if isinstance(criteria, str):
        criteria = [c for c in criteria.replace(",", " ").split() if c]
    crit = set(criteria)
    bad = crit - set(CRITERIA)
    if bad:
        raise OnnxPruneError(f"unknown criteria {', '.join(sorted(bad))} (choose from {', '.join(CRITERIA)})")
    if not crit:
        raise OnnxPruneError("no criteria given")
    if "all" in crit:
        crit = set(CRITERIA) - {"all"}
    return crit


def default_requests(model: onnx.ModelProto, criteria=("fscreen",)) -> list[Request]:
    """Requests covering `criteria` (names from CRITERIA, or a comma-separated string) for every prunable layer."""
    crit = parse_criteria(criteria)
    infos = tensor_infos(model)
    graph_outputs = {o.name for o in model.graph.output}
    wanted: dict[tuple[str, str], set[str]] = {}
    contrib: list[Request] = []

    def want(tensor: str, kind: str, stats: set[str]) -> None:
        if stats:
            wanted.setdefault((tensor, kind), set()).update(stats)

    for n in prunable_layers(model):
        conv = n.op_type == "Conv"
        rank = infos[n.input[0]].rank if n.input[0] in infos else None
        if conv and (rank is None or rank < 3):
            continue
        kind = "channels" if conv else "features"
        s = set()
        if "fscreen" in crit:
            s.add("class_moments")
        if "wanda" in crit:
            s.add("moments")
        if "gram" in crit and not conv:
            s.add("gram")
        want(n.input[0], kind, s)
        if "ri" in crit:
            contrib.append(Request(n.input[0], kind, frozenset({"contrib"}), node_id(n)))
        p = producer_output(model, n)
        if p in graph_outputs:
            continue
        ps = set()
        if "fscreen" in crit:
            ps.add("class_moments")
        if "apoz" in crit:
            ps.add("zeros")
        want(p, kind, ps)
    # a tensor both a producer output of a Conv ("channels") and a Gemm input ("features") only happens for rank 2,
    # where both views coincide: keep one request per tensor
    merged: dict[str, tuple[str, set[str]]] = {}
    for (t, k), s in wanted.items():
        if t in merged:
            k0, s0 = merged[t]
            merged[t] = ("channels" if "channels" in (k0, k) and (infos[t].rank or 2) >= 3 else "features", s0 | s)
        else:
            merged[t] = (k, set(s))
    reqs = [Request(t, k, frozenset(s)) for t, (k, s) in merged.items()]
    return reqs + contrib
