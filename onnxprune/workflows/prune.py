"""One pruning run, driven through the `Mode` protocol: statistics → scores → plan → checked (re-fitted) model.

`prepare` runs the one statistics pass and scoring; `Prepared.build` turns the scores into a pruned model for any
ratio (cheap, so certification can build every grid candidate from one pass). Data is always passed explicitly:
the scores remember nothing of the data they came from, so a caller can never re-fit on data it did not choose.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import onnx

from .. import modes
from ..errors import OnnxPruneError
from ..io.data import Dataset
from ..io.model import model_hash
from ..modes import Mode, Scores
from ..select.plan import Plan, PruneSettings
from ..stats import collect


class Candidate(NamedTuple):
    """A pruned model and the plan that made it."""

    model: onnx.ModelProto
    plan: Plan


@dataclass
class PruneResult:
    model: onnx.ModelProto
    plan: Plan
    report: dict  # per-layer (unstructured) or per-group (structured) table, totals, sizes, notes


@dataclass
class Prepared:
    """Scores from one statistics pass, ready to be cut at any ratio (holds no data)."""

    model: onnx.ModelProto
    settings: PruneSettings
    scores: Scores
    label_mode: str | None

    @property
    def mode(self) -> Mode:
        return modes.get(self.settings.mode)

    def build(self, ratio: float, data: Dataset | None, *, reconstruct: bool) -> Candidate:
        """The candidate at `ratio`; `data` is the re-fit data (when `reconstruct`) and the rewrite check's probe."""
        plan = self.mode.select(self.model, self.scores, ratio, self.settings)
        return Candidate(materialise(self.mode, self.model, plan, data, self.settings,
                                     reconstruct and ratio > 0), plan)


def prepare(model: onnx.ModelProto, data: Dataset | None, settings: PruneSettings) -> Prepared:
    """One statistics pass on `data` (only if the criterion needs one) and the scores of every candidate unit.

    Without data, reconstruction is switched off in the returned settings (it is the default, but needs data).
    """
    if data is None and settings.reconstruct:
        settings = replace(settings, reconstruct=False)
    mode = modes.get(settings.mode)
    reqs = mode.requests(model, settings)
    stats = None
    if reqs:
        if data is None:
            raise OnnxPruneError(f"criterion '{settings.criterion}' needs calibration data (--calib)")
        stats = collect(model, data, reqs, batch_size=settings.batch_size, labels=settings.labels)
    scores = mode.score(model, stats, settings)
    return Prepared(model, settings, scores, None if stats is None else stats.label_mode)


def materialise(mode: Mode, model: onnx.ModelProto, plan: Plan, data: Dataset | None, settings: PruneSettings,
                reconstruct: bool) -> onnx.ModelProto:
    """Apply the plan (checked on a few samples of `data`) and, if asked, re-fit the kept weights on `data`."""
    pruned = mode.apply(model, plan, probe=data)
    if reconstruct:
        if data is None:
            raise OnnxPruneError("--reconstruct needs calibration data (--calib); a plan made with --reconstruct "
                                 "needs the same --calib to be re-applied")
        pruned = mode.reconstruct(model, pruned, plan, data, settings)
    return pruned


def prune(model: onnx.ModelProto, data: Dataset | None, settings: PruneSettings) -> PruneResult:
    """The whole chain for one ratio: statistics → scores → plan → pruned (and re-fitted) model → report."""
    prepared = prepare(model, data, settings)
    pruned, plan = prepared.build(settings.ratio, data, reconstruct=prepared.settings.reconstruct)
    return PruneResult(pruned, plan, prepared.mode.report(model, pruned, plan, prepared.scores.notes))


def replay(model: onnx.ModelProto, plan: Plan, data: Dataset | None) -> PruneResult:
    """Re-apply a saved plan (same model, same calibration data → same bytes); refuses a plan for another model."""
    if plan.model_hash != model_hash(model):
        raise OnnxPruneError("the plan was made for a different model (model hash mismatch)")
    settings = settings_of(plan)
    mode = modes.get(plan.mode)
    pruned = materialise(mode, model, plan, data, settings, settings.reconstruct and settings.ratio > 0)
    return PruneResult(pruned, plan, mode.report(model, pruned, plan))


def settings_of(plan: Plan) -> PruneSettings:
    """The settings a plan was made with (keys this version does not know are ignored)."""
    known = PruneSettings.__dataclass_fields__
    s = {k: v for k, v in plan.settings.items() if k in known}
    return PruneSettings(**{**s, "protect": tuple(s.get("protect", ()))})
