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
from ..criteria.needs import needs_gradients
from ..errors import OnnxPruneError
from ..io.data import Dataset
from ..io.model import model_hash
from ..io.shapes import data_shapes
from ..modes import Mode, Scores
from ..select.budget import Search
from ..select.plan import Plan, PruneSettings
from ..stats import Stats, collect


class Candidate(NamedTuple):
    """A pruned model and the plan that made it (and, when recovery ran, what it did)."""

    model: onnx.ModelProto
    plan: Plan
    recovery: object | None = None  # recover.distill.RecoveryReport


@dataclass
class PruneResult:
    model: onnx.ModelProto
    plan: Plan
    report: dict  # per-layer (unstructured) or per-group (structured) table, totals, sizes, notes

    def to_dict(self) -> dict:
        """The report and the plan's settings as plain JSON-safe data (the masks stay in `plan`)."""
        return {"plan": {"mode": self.plan.mode, "model_hash": self.plan.model_hash, "settings": self.plan.settings},
                **self.report}

    def summary(self) -> str:
        """A few plain lines: what was removed, and the sizes."""
        r, unit = self.report, self.report.get("unit", "weights")
        lines = [f"{self.plan.mode} {r['criterion']} at ratio {r['ratio']:g}: kept {r['kept']:,} of {r['weights']:,} "
                 f"{unit} (sparsity {r['sparsity']:.2%})"]
        if "macs" in r:
            lines.append(f"params {r['params']['dense']:,} → {r['params']['pruned']:,}; "
                         f"MACs {r['macs']['dense']:,} → {r['macs']['pruned']:,}")
        z = r["size"]
        lines.append(f"zlib-compressed size {z['dense_zlib']:,} → {z['pruned_zlib']:,} bytes"
                     + (" (sampled estimate)" if z.get("zlib_estimated") else ""))
        return "\n".join(lines + [f"note: {n}" for n in r["notes"]])


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

    def rescored(self, model: onnx.ModelProto, data: Dataset | None) -> Scores:
        """The same criterion's scores of another model (a training-time pruning step's current weights)."""
        return prepare(model, data, self.settings).scores

    def materialise(self, model: onnx.ModelProto, plan: Plan, data: Dataset | None, reconstruct: bool
                    ) -> onnx.ModelProto:
        """`materialise` with these settings, for another model than the prepared one (training-time steps)."""
        return materialise(self.mode, model, plan, data, self.settings, reconstruct)

    def build(self, ratio: float, data: Dataset | None, *, reconstruct: bool, recover: Dataset | None = None
              ) -> Candidate:
        """The candidate at `ratio`; `data` is the re-fit data (when `reconstruct`) and the rewrite check's probe,
        `recover` the data recovery trains on (when the settings give it epochs; None: no recovery)."""
        if recover is not None and self.settings.schedule == "iterative" and ratio > 0:
            from .iterative import prune_while_training  # pruned in steps while recovering (001 Alg. 1-2)

            return Candidate(*prune_while_training(self, ratio, data, recover))
        plan = self.mode.select(self.model, self.scores, ratio, self.settings)
        model = materialise(self.mode, self.model, plan, data, self.settings, reconstruct and ratio > 0)
        if recover is None or not self.settings.recovers or ratio == 0:
            return Candidate(model, plan)
        from .recover import recover_with

        model, report = recover_with(model, self.model, recover, self.settings)
        return Candidate(model, plan, report)


def ratio_for_macs(prepared: Prepared, fraction: float, probe: Dataset | None) -> Search:
    """The smallest ratio whose rewritten model keeps at most `fraction` of the dense MACs (counted from shapes;
    the re-fit does not change MACs, so candidates are rewritten without it). Deterministic."""
    from ..select.budget import ratio_for
    from ..units.count import count

    if prepared.settings.mode != "structured":
        raise OnnxPruneError("--target-macs needs --mode structured: unstructured zeros do not remove MACs")
    dense = count(prepared.model).macs

    def macs_at(r: float) -> float:
        return count(prepared.build(r, probe, reconstruct=False).model).macs / dense

    return ratio_for(fraction, macs_at, decreasing=True, what="--target-macs")


def ratio_for_speedup(prepared: Prepared, speedup: float, probe: Dataset | None, runs: int = 100) -> Search:
    """The smallest ratio whose rewritten model runs `speedup`× faster than the dense one, measured here in
    onnxruntime (batch 1, one thread, interleaved pairs, median ratio) — machine-dependent, so the measurements are
    returned for the report."""
    from ..measure.bench import compare
    from ..select.budget import ratio_for

    if prepared.settings.mode != "structured":
        raise OnnxPruneError("--target-speedup needs --mode structured: unstructured zeros give no speed-up")

    def speedup_at(r: float) -> float:
        cand = prepared.build(r, probe, reconstruct=False).model
        return compare(prepared.model, cand, threads="1", runs=runs, seconds=5.0).a_over_b

    return ratio_for(speedup, speedup_at, decreasing=False, what="--target-speedup", tol=0.01, steps=8)


def prepare(model: onnx.ModelProto, data: Dataset | None, settings: PruneSettings, stats: Stats | None = None,
            ray: str | None = None) -> Prepared:
    """One statistics pass on `data` (only if the criterion needs one; `stats` saved by `onnxprune stats` for this
    model replace it when they hold what is needed) and the scores of every candidate unit.

    Without data, reconstruction is switched off in the returned settings (it is the default, but needs data), and
    the scores' notes say so. `ray` (auto / local / an address) runs the statistics pass as Ray tasks over sample
    shards, merged to the same statistics (`stats/distributed.py`).
    """
    skipped_refit = data is None and settings.reconstruct
    if skipped_refit:
        settings = replace(settings, reconstruct=False)
    mode = modes.get(settings.mode)
    reqs = mode.requests(model, settings)
    if needs_gradients(settings.criterion):
        stats = _gradient_stats(model, data, settings, stats)
    if stats is not None and reqs:
        _check_saved(stats, model, reqs, settings)
    elif reqs:
        if data is None:
            raise OnnxPruneError(f"criterion '{settings.criterion}' needs calibration data (--calib)")
        if ray is None:
            stats = collect(model, data, reqs, batch_size=settings.batch_size, labels=settings.labels)
        else:
            from ..stats.distributed import collect_sharded, default_shards, ray_runner

            stats = collect_sharded(model, data, reqs, shards=default_shards(ray), batch_size=settings.batch_size,
                                    labels=settings.labels, runner=ray_runner(ray))
    scores = mode.score(model, stats, settings)
    if skipped_refit:
        scores.notes.append("no calibration data: the least-squares re-fit was skipped (give calibration data — "
                            "--calib, or calib= in Python — to re-fit the kept weights)")
    return Prepared(model, settings, scores, None if stats is None else stats.label_mode)


def _gradient_stats(model: onnx.ModelProto, data: Dataset | None, settings: PruneSettings, saved: Stats | None
                    ) -> Stats:
    """A gradient criterion (taylor) is one pass of the model in PyTorch over the calibration data."""
    if saved is not None:
        raise OnnxPruneError(f"criterion '{settings.criterion}' computes gradients in PyTorch; saved statistics "
                             f"(--stats) cannot hold them: drop --stats")
    if data is None:
        raise OnnxPruneError(f"criterion '{settings.criterion}' needs calibration data (--calib)")
    from .recover import torch_available

    torch_available()
    from ..recover.taylor import taylor_stats

    return taylor_stats(model, data, labels=settings.labels, batch_size=min(settings.batch_size, 128))


def _check_saved(stats: Stats, model: onnx.ModelProto, reqs: list, settings: PruneSettings) -> None:
    """Saved statistics must come from this very model and hold every statistic the criterion needs."""
    stats.check_model(model)
    missing = stats.missing(reqs)
    if missing:
        raise OnnxPruneError(f"the saved statistics lack what criterion '{settings.criterion}' needs "
                             f"({len(missing)} items, e.g. {missing[0]}); re-run `onnxprune stats` with "
                             f"--criteria {settings.criterion if settings.criterion in ('fscreen', 'apoz', 'ri') else 'all'}")


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


def prune(model: onnx.ModelProto, data: Dataset | None, settings: PruneSettings, stats: Stats | None = None,
          recover_data: Dataset | None = None, ray: str | None = None) -> PruneResult:
    """The whole chain for one ratio: statistics → scores → plan → pruned (re-fitted, recovered) model → report.
    Recovery (when the settings give it epochs) trains on `recover_data`, else on `data`."""
    prepared = prepare(model, data, settings, stats, ray=ray)
    cand = prepared.build(settings.ratio, data, reconstruct=prepared.settings.reconstruct,
                          recover=recover_data if recover_data is not None else data)
    notes = list(prepared.scores.notes)
    if cand.recovery is not None:
        from .recover import describe

        notes.append(describe(cand.recovery))
    return PruneResult(cand.model, cand.plan, prepared.mode.report(model, cand.model, cand.plan, notes,
                                                                   shapes=_shapes(data)))


def replay(model: onnx.ModelProto, plan: Plan, data: Dataset | None) -> PruneResult:
    """Re-apply a saved plan (same model, same calibration data → same bytes); refuses a plan for another model."""
    if plan.model_hash != model_hash(model):
        raise OnnxPruneError("the plan was made for a different model (model hash mismatch)")
    settings = settings_of(plan)
    mode = modes.get(plan.mode)
    pruned = materialise(mode, model, plan, data, settings, settings.reconstruct and settings.ratio > 0)
    return PruneResult(pruned, plan, mode.report(model, pruned, plan, shapes=_shapes(data)))


def _shapes(data: Dataset | None) -> dict | None:
    """The input shapes the data gives (MACs of a model with a dynamic sequence length are counted at them)."""
    return None if data is None else data_shapes(data)


def settings_of(plan: Plan) -> PruneSettings:
    """The settings a plan was made with (keys this version does not know are ignored)."""
    known = PruneSettings.__dataclass_fields__
    s = {k: v for k, v in plan.settings.items() if k in known}
    return PruneSettings(**{**s, "protect": tuple(s.get("protect", ()))})
