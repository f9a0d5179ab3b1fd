"""A pass/fail gate for CI: is the pruned model within `max_drop` of its dense reference?

With labels the measure is the top-1 accuracy drop; without them it is the rate at which the pruned model's
prediction differs from the reference's (an upper bound on the drop whatever the true labels are). The comparison
is done on integer counts so that a drop of exactly `max_drop` is not failed by floating-point rounding.
Models that are not (N, K) classifiers (`io.shapes.output_kind`): a per-position score map is gated on its
per-position disagreement rate; an output without classes (regression, embedding) on the mean relative error
‖pruned − reference‖ / ‖reference‖ per sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from ..io.data import Dataset
from ..errors import OnnxPruneError
from .evaluate import closeness, run
from ..io.runtime import input_specs


@dataclass(frozen=True)
class CheckResult:
    n: int
    max_drop: float
    accuracy: float | None  # None when the data has no labels
    reference_accuracy: float | None
    agreement: float | None
    value: float  # accuracy drop (labelled) or disagreement rate (unlabelled): what is compared with max_drop
    passed: bool

    kind: str = "classes"

    @property
    def metric(self) -> str:
        if self.kind == "values":
            return "relative_error"
        return "accuracy_drop" if self.accuracy is not None else "disagreement"

    def verdict(self) -> str:
        """One line for CI logs, e.g. `PASS: accuracy 0.9812 vs 0.9898 reference (drop 0.0086 ≤ 0.0100) on …`."""
        word, rel = ("PASS", "≤") if self.passed else ("FAIL", ">")
        if self.kind == "values":
            what = (f"mean relative output error {self.value:.4f} with reference ({rel} {self.max_drop:.4f}; the "
                    f"output is not a class score)")
        elif self.kind == "dense":
            what = (f"per-position disagreement {self.value:.4f} with reference ({rel} {self.max_drop:.4f}; "
                    f"the output is a per-position score map)")
        elif self.accuracy is not None:
            what = (f"accuracy {self.accuracy:.4f} vs {self.reference_accuracy:.4f} reference "
                    f"(drop {self.value:.4f} {rel} {self.max_drop:.4f})")
        else:
            what = f"disagreement {self.value:.4f} with reference ({rel} {self.max_drop:.4f}; data has no labels)"
        return f"{word}: {what} on {self.n} samples"

    def to_dict(self) -> dict:
        return {"passed": self.passed, "metric": self.metric, "value": self.value, "max_drop": self.max_drop,
                "n": self.n, "accuracy": self.accuracy, "reference_accuracy": self.reference_accuracy,
                "agreement": self.agreement, "kind": self.kind}


def check(pruned: onnx.ModelProto, reference: onnx.ModelProto, data: Dataset, max_drop: float,
          batch_size: int = 256) -> CheckResult:
    """Predict with both models and compare the drop (or disagreement) with `max_drop`."""
    if not 0.0 <= max_drop <= 1.0:
        raise OnnxPruneError(f"--max-drop {max_drop}: must be in [0, 1]")
    if input_specs(reference) != data.specs:
        raise OnnxPruneError("the pruned and reference models have different inputs: "
                             f"{'; '.join(s.describe() for s in data.specs)} vs "
                             f"{'; '.join(s.describe() for s in input_specs(reference))}")
    n = len(data)
    a, b = run(pruned, data, batch_size), run(reference, data, batch_size, "reference")
    if a.kind != "classes" or b.kind != "classes":
        if a.kind != b.kind or a.values.shape != b.values.shape:
            raise OnnxPruneError(f"the pruned and reference models' outputs differ in shape: {a.values.shape[1:]} vs "
                                 f"{b.values.shape[1:]} per sample")
        if b.kind == "dense":
            agreement = float((a.predictions() == b.predictions()).mean())
            return CheckResult(n, max_drop, None, None, agreement, 1.0 - agreement,
                               1.0 - agreement <= max_drop + 1e-12, "dense")
        _, rel = closeness(a.values, b.values)
        return CheckResult(n, max_drop, None, None, None, rel, bool(rel <= max_drop), "values")
    pred, ref = a.predictions(), b.predictions()
    agree = int((pred == ref).sum())
    allowed = math.floor(max_drop * n + 1e-9)  # most samples that may be lost
    if data.labelled:
        right, ref_right = int((pred == data.labels).sum()), int((ref == data.labels).sum())
        lost = ref_right - right
        return CheckResult(n, max_drop, right / n, ref_right / n, agree / n, lost / n, lost <= allowed)
    return CheckResult(n, max_drop, None, None, agree / n, (n - agree) / n, n - agree <= allowed)
