"""Mode dispatch: the unstructured and structured pipelines expose the same five steps, driven from here.

`prepare` runs the one statistics pass and scoring; `build` turns scores into a pruned model for any ratio
(cheap, so certification can build every grid candidate from one pass); `prune` is the whole chain.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import onnx

from .data import Dataset
from .errors import OnnxPruneError
from .plan import Plan, PruneSettings
from .stats import collect


def module_for(mode: str) -> ModuleType:
    if mode == "structured":
        from . import structured

        return structured
    if mode == "unstructured":
        from . import unstructured

        return unstructured
    raise OnnxPruneError(f"--mode {mode}: expected structured or unstructured")


@dataclass
class Prepared:
    """Scores from one statistics pass, ready to be cut at any ratio."""

    model: onnx.ModelProto
    settings: PruneSettings
    scores: object
    label_mode: str | None

    def build(self, ratio: float, data: Dataset | None = None, reconstruct: bool | None = None
              ) -> tuple[onnx.ModelProto, Plan]:
        mod = module_for(self.settings.mode)
        plan = mod.select(self.model, self.scores, ratio, self.settings)
        pruned = mod.apply(self.model, plan)
        if (self.settings.reconstruct if reconstruct is None else reconstruct) and ratio > 0:
            if data is None:
                raise OnnxPruneError("--reconstruct needs calibration data (--calib)")
            pruned = mod.reconstruct(self.model, pruned, plan, data, self.settings)
        return pruned, plan


def prepare(model: onnx.ModelProto, data: Dataset | None, settings: PruneSettings) -> Prepared:
    mod = module_for(settings.mode)
    reqs = mod.requests(model, settings)
    stats = None
    if reqs:
        if data is None:
            raise OnnxPruneError(f"criterion '{settings.criterion}' needs calibration data (--calib)")
        stats = collect(model, data, reqs, batch_size=settings.batch_size, labels=settings.labels)
    scores = mod.score(model, stats, settings)
    return Prepared(model, settings, scores, None if stats is None else stats.label_mode)
