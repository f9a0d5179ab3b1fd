"""Which statistics each criterion needs, for every weight layer: `default_requests(model, criteria)`.

Layers are the weight layers of `units.weights` (Gemm, MatMul with a constant 2-D weight, Conv).
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

Criteria in `GRADIENTS` need no onnxruntime statistics but one gradient pass of the model in PyTorch over the
calibration data (`recover/taylor.py: taylor_stats`, run by `workflows/prune.prepare`): taylor gives |g·w| per
weight and Σ|g·a| per channel of the tensors channel groups' consumers read, stored as the statistic "taylor".
"""
from __future__ import annotations

import onnx

from ..errors import OnnxPruneError
from ..stats import Request, tensor_infos
from ..units.chains import consumer_view
from ..units.tokens import feature_kind
from ..units.weights import contrib_spec, weight_layers

CRITERIA = ("fscreen", "apoz", "wanda", "ri", "gram", "all")
GRADIENTS = ("taylor",)  # criteria computed from gradients through the torch graph, not from onnxruntime statistics


def needs_gradients(criterion: str) -> bool:
    return criterion in GRADIENTS


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

    nodes = {n.name: n for n in model.graph.node}
    for L in weight_layers(model):
        n = nodes[L.name]
        conv = n.op_type == "Conv"
        rank = infos[n.input[0]].rank if n.input[0] in infos else None
        if conv and (rank is None or rank < 3):
            continue
        kind = "channels" if conv else "features"
        if not conv:
            kind = feature_kind(model, infos, n.input[0])  # transformers: [N, T, F] reduced over tokens per sample
        s = set()
        if "fscreen" in crit:
            s.add("class_moments")
        if "wanda" in crit:
            s.add("moments")
        if "gram" in crit and not conv:
            s.add("gram")
        want(n.input[0], kind, s)
        if "ri" in crit:
            contrib.append(Request(n.input[0], "features" if kind == "tokens" else kind, frozenset({"contrib"}),
                                   contrib_spec(model, L)))
        p = consumer_view(model, n)
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
            merged[t] = ("tokens" if "tokens" in (k0, k) else
                         "channels" if "channels" in (k0, k) and (infos[t].rank or 2) >= 3 else "features", s0 | s)
        else:
            merged[t] = (k, set(s))
    reqs = [Request(t, k, frozenset(s)) for t, (k, s) in merged.items()]
    return reqs + contrib
