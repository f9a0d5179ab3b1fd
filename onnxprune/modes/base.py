"""What a pruning mode is: the typed contract between the stages and the workflows that drive them.

A mode (structured channels, unstructured weights) is wiring only: it says which statistics its criterion needs,
turns statistics into scores (criteria/), scores into a `Plan` for a ratio (select/), a plan into a checked model
(rewrite/), and optionally re-fits it (reconstruct/). `score` runs once per statistics pass; `select` and `apply`
are cheap, so certification builds every grid candidate from one pass.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import onnx

if TYPE_CHECKING:
    from ..io.data import Dataset
    from ..select.plan import Plan, PruneSettings
    from ..stats import Request, Stats


class Scores(Protocol):
    """What the workflows read of a mode's scores."""

    criterion: str
    notes: list[str]  # how the scores were made, for the report
    skipped: list[tuple[str, str]]  # (layer or group, reason) left alone


class Mode(Protocol):
    name: str

    def requests(self, model: onnx.ModelProto, settings: PruneSettings) -> list[Request]:
        """The statistics the criterion needs (empty when it needs none)."""

    def score(self, model: onnx.ModelProto, stats: Stats | None, settings: PruneSettings) -> Scores:
        """Scores of every candidate unit from one statistics pass (`stats` is None when none is needed)."""

    def select(self, model: onnx.ModelProto, scores: Scores, ratio: float, settings: PruneSettings) -> Plan:
        """The plan removing `ratio` of the candidate units."""

    def apply(self, model: onnx.ModelProto, plan: Plan, probe: Dataset | None = None) -> onnx.ModelProto:
        """The pruned model, checked: valid, and equal in onnxruntime to the reference (the original with the
        removed units zeroed) on `probe` (a few samples; random inputs without one) — else an error, nothing made."""

    def reconstruct(self, dense: onnx.ModelProto, pruned: onnx.ModelProto, plan: Plan, data: Dataset,
                    settings: PruneSettings) -> onnx.ModelProto:
        """Least-squares re-fit of the pruned model against the dense one on `data`."""

    def report(self, dense: onnx.ModelProto, pruned: onnx.ModelProto, plan: Plan, notes: list[str] = (),
               shapes: dict[str, tuple[int, ...]] | None = None) -> dict:
        """Per-unit table, totals, sizes and notes; MACs counted at `shapes` (the data's input shapes) when given,
        so a model with a dynamic sequence length or image size is counted at the size it is used at."""

    def kept(self, scores: Scores, plan: Plan) -> dict[str, tuple[int, int]]:
        """Layer or group → (kept, total), for reports and plots."""
