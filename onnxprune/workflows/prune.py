"""Mode dispatch: the unstructured and structured pipelines expose the same five steps, driven from here.

`prepare` runs the one statistics pass and scoring; `build` turns scores into a pruned model for any ratio
(cheap, so certification can build every grid candidate from one pass); `prune` is the whole chain.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from types import ModuleType

import onnx

from ..io.data import Dataset
from ..errors import OnnxPruneError
from ..select.plan import Plan, PruneSettings
from ..stats import collect


def module_for(mode: str) -> ModuleType:
    if mode == "structured":
        from ..modes import structured

        return structured
    if mode == "unstructured":
        from ..modes import unstructured

        return unstructured
    raise OnnxPruneError(f"--mode {mode}: expected structured or unstructured")


@dataclass
class Prepared:
    """Scores from one statistics pass, ready to be cut at any ratio."""

    model: onnx.ModelProto
    settings: PruneSettings
    scores: object
    label_mode: str | None
    data: Dataset | None = None  # the calibration data the scores came from; reconstruction re-uses it

    def build(self, ratio: float, data: Dataset | None = None, reconstruct: bool | None = None
              ) -> tuple[onnx.ModelProto, Plan]:
        mod = module_for(self.settings.mode)
        plan = mod.select(self.model, self.scores, ratio, self.settings)
        recon = (self.settings.reconstruct if reconstruct is None else reconstruct) and ratio > 0
        return _materialise(mod, self.model, plan, data if data is not None else self.data, self.settings, recon), plan


@dataclass
class PruneResult:
    model: onnx.ModelProto
    plan: Plan
    report: dict  # per-layer (unstructured) or per-group (structured) table, totals, sizes, notes


def _materialise(mod: ModuleType, model: onnx.ModelProto, plan: Plan, data: Dataset | None,
                 settings: PruneSettings, recon: bool) -> onnx.ModelProto:
    pruned = mod.apply(model, plan)
    if recon:
        if data is None:
            raise OnnxPruneError("--reconstruct needs calibration data (--calib); a plan made with --reconstruct "
                                 "needs the same --calib to be re-applied")
        pruned = mod.reconstruct(model, pruned, plan, data, settings)
    return pruned


def prune(model: onnx.ModelProto, data: Dataset | None, settings: PruneSettings) -> PruneResult:
    """The whole chain for one ratio: statistics → scores → plan → pruned (and re-fitted) model → report."""
    prepared = prepare(model, data, settings)
    pruned, plan = prepared.build(settings.ratio, data)
    mod = module_for(prepared.settings.mode)
    return PruneResult(pruned, plan, mod.report(model, pruned, plan, getattr(prepared.scores, "notes", [])))


def replay(model: onnx.ModelProto, plan: Plan, data: Dataset | None) -> PruneResult:
    """Re-apply a saved plan (same model, same calibration data → same bytes); refuses a plan for another model."""
    from ..io.model import model_hash

    if plan.model_hash != model_hash(model):
        raise OnnxPruneError("the plan was made for a different model (model hash mismatch)")
    known = PruneSettings.__dataclass_fields__
    s = {k: v for k, v in plan.settings.items() if k in known}
    settings = PruneSettings(**{**s, "protect": tuple(s.get("protect", ()))})
    mod = module_for(plan.mode)
    pruned = _materialise(mod, model, plan, data, settings, settings.reconstruct and settings.ratio > 0)
    return PruneResult(pruned, plan, mod.report(model, pruned, plan))


def prepare(model: onnx.ModelProto, data: Dataset | None, settings: PruneSettings) -> Prepared:
    if data is None and settings.reconstruct:  # reconstruction is the default, but it needs data
        settings = replace(settings, reconstruct=False)
    mod = module_for(settings.mode)
    reqs = mod.requests(model, settings)
    stats = None
    if reqs:
        if data is None:
            raise OnnxPruneError(f"criterion '{settings.criterion}' needs calibration data (--calib)")
        stats = collect(model, data, reqs, batch_size=settings.batch_size, labels=settings.labels)
    scores = mod.score(model, stats, settings)
    return Prepared(model, settings, scores, None if stats is None else stats.label_mode, data)
