"""Unstructured (weight-level) pruning, wired: weight layers (units) → weight scores (criteria) → keep-masks
(select) → zeroed weights and removed dead neurons, checked (rewrite) → least-squares re-fit (reconstruct).

The ratio counts the prunable weights (`units.weights`) that are not protected. Zeros shrink the *compressed* file;
onnxruntime runs dense kernels, so they buy no speed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from ..criteria import weights as weight_criteria
from ..errors import OnnxPruneError
from ..io.data import Dataset
from ..io.graph import copy_model, initializer_map
from ..io.model import size_report, validate
from ..reconstruct.weights import refit_weights
from ..rewrite.check import check_equivalent, probe_feed
from ..rewrite.dead_neurons import remove as remove_dead_neurons
from ..rewrite.masks import masked
from ..select.plan import Plan, PruneSettings
from ..select.weights import select_weights
from ..stats import Request, Stats, tensor_infos
from ..units.tokens import feature_kind
from ..units.weights import WeightLayer, contrib_spec, protected, weight_layers

CRITERIA = weight_criteria.CRITERIA
SPEED_NOTE = ("zeros shrink the compressed file only: onnxruntime runs dense kernels, so unstructured sparsity "
              "gives no speed-up")


@dataclass
class WeightScores:
    """Per candidate weight, an importance score of the weight's shape (higher = kept longer)."""

    criterion: str
    values: dict[str, np.ndarray]
    scope: str = "allocation"  # where scores are comparable: "allocation" (as --allocation says), "layer", "row"
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def candidates(model: onnx.ModelProto, settings: PruneSettings) -> list[WeightLayer]:
    """Prunable layers minus the protected ones."""
    layers = weight_layers(model)
    if not layers:
        raise OnnxPruneError("no prunable weights (Gemm, MatMul with a constant weight, Conv) in the model")
    skip = protected(layers, settings.protect)
    return [L for L in layers if L.weight not in skip]


class Unstructured:
    name = "unstructured"

    def requests(self, model: onnx.ModelProto, settings: PruneSettings) -> list[Request]:
        """The statistics the criterion needs (empty for magnitude); reconstruction streams its own tensors."""
        if settings.criterion not in CRITERIA:
            raise OnnxPruneError(f"--criterion {settings.criterion}: choose one of {', '.join(CRITERIA)}")
        need = weight_criteria.NEEDS.get(settings.criterion)
        if need is None:
            return []
        out, seen = [], set()
        infos = tensor_infos(model)
        for L in candidates(model, settings):
            spec = contrib_spec(model, L) if need == "contrib" else None
            kind = L.kind
            if kind == "features" and spec is None:
                kind = feature_kind(model, infos, L.input)  # transformers: [N, T, F] reduced over tokens per sample
            key = (L.input, kind, None if spec is None else L.name)
            if key not in seen:
                seen.add(key)
                out.append(Request(L.input, kind, frozenset({need}), spec))
        return out

    def score(self, model: onnx.ModelProto, stats: Stats | None, settings: PruneSettings) -> WeightScores:
        """Scores for every candidate weight; `stats` may be None for magnitude."""
        layers = candidates(model, settings)
        w = initializer_map(model)
        vals, scope, notes = weight_criteria.scores(settings.criterion, layers, [w[L.weight] for L in layers], stats,
                                                    settings.alpha, settings.beta)
        return WeightScores(settings.criterion, {L.weight: v for L, v in zip(layers, vals)}, scope, notes)

    def select(self, model: onnx.ModelProto, scores: WeightScores, ratio: float, settings: PruneSettings) -> Plan:
        return select_weights(model, scores.values, scores.scope, ratio, settings)

    def apply(self, model: onnx.ModelProto, plan: Plan, probe: Dataset | None = None) -> onnx.ModelProto:
        """Zero the masked weights and remove dead neurons of FC chains; validated, and checked against the model
        with only the masked weights zeroed, on a few samples."""
        ref = masked(model, plan)
        out = copy_model(ref)
        remove_dead_neurons(out, weight_layers(model))
        validate(out)
        check_equivalent(out, ref, probe_feed(model, probe), lambda: "removing dead neurons")
        return out

    def reconstruct(self, dense: onnx.ModelProto, pruned: onnx.ModelProto, plan: Plan, data: Dataset,
                    settings: PruneSettings) -> onnx.ModelProto:
        return refit_weights(dense, pruned, plan, data, settings)

    def report(self, dense: onnx.ModelProto, pruned: onnx.ModelProto, plan: Plan, notes: list[str] = (),
               shapes: dict[str, tuple[int, ...]] | None = None) -> dict:
        """Per-layer weights / kept / sparsity (non-zeros left in the file, dead neurons counted as pruned), totals
        over the candidates and over all prunable layers, and file sizes raw and zlib-compressed."""
        pw = initializer_map(pruned)
        rows, cand, total = [], [0, 0], [0, 0]
        for L in weight_layers(dense):
            kept = int(np.count_nonzero(pw[L.weight])) if L.weight in pw else 0
            rows.append({"layer": L.name, "weight": L.weight, "op": L.op, "weights": L.size, "kept": kept,
                         "sparsity": 1.0 - kept / L.size, "protected": L.weight not in plan.masks,
                         "shape": list(L.shape), "pruned_shape": list(pw[L.weight].shape) if L.weight in pw else []})
            total[0] += L.size
            total[1] += kept
            if L.weight in plan.masks:
                cand[0] += L.size
                cand[1] += kept
        notes = list(notes)
        if plan.settings.get("reconstruct") and any(r["op"] == "Conv" for r in rows):
            notes.append("reconstruction re-fits Gemm / MatMul layers only; Conv layers keep their masked weights")
        if any(r["op"] == "Conv" for r in rows):
            notes.append("dead-neuron removal covers fully connected chains; Conv channels keep their zeros in place")
        notes.append(SPEED_NOTE)
        return {
            "criterion": plan.settings.get("criterion"), "ratio": plan.settings.get("ratio"), "layers": rows,
            "sparsity": 1.0 - cand[1] / max(cand[0], 1), "sparsity_all_prunable": 1.0 - total[1] / max(total[0], 1),
            "weights": cand[0], "kept": cand[1],
            "size": size_report(dense, pruned),
            "notes": notes,
        }

    def kept(self, scores: WeightScores, plan: Plan) -> dict[str, tuple[int, int]]:
        return {name: (int(m.sum()), int(m.size)) for name, m in sorted(plan.masks.items())}


UNSTRUCTURED = Unstructured()
