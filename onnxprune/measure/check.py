"""A pass/fail gate for CI: is the pruned model within `max_drop` of its dense reference?

With labels the measure is the top-1 accuracy drop; without them it is the rate at which the pruned model's
prediction differs from the reference's (an upper bound on the drop whatever the true labels are). The comparison
is done on integer counts so that a drop of exactly `max_drop` is not failed by floating-point rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from ..io.data import Dataset
from ..errors import OnnxPruneError
from .evaluate import predict
from ..io.runtime import input_specs


@dataclass(frozen=True)
class CheckResult:
    n: int
    max_drop: float
    accuracy: float | None  # None when the data has no labels
    reference_accuracy: float | None
    agreement: float
    value: float  # accuracy drop (labelled) or disagreement rate (unlabelled): what is compared with max_drop
    passed: bool

    @property
    def metric(self) -> str:
        return "accuracy_drop" if self.accuracy is not None else "disagreement"

    def verdict(self) -> str:
        """One line for CI logs, e.g. `PASS: accuracy 0.9812 vs 0.9898 reference (drop 0.0086 ≤ 0.0100) on …`."""
        word, rel = ("PASS", "≤") if self.passed else ("FAIL", ">")
        if self.accuracy is not None:
            what = (f"accuracy {self.accuracy:.4f} vs {self.reference_accuracy:.4f} reference "
                    f"(drop {self.value:.4f} {rel} {self.max_drop:.4f})")
        else:
            what = f"disagreement {self.value:.4f} with reference ({rel} {self.max_drop:.4f}; data has no labels)"
        return f"{word}: {what} on {self.n} samples"

    def to_dict(self) -> dict:
        return {"passed": self.passed, "metric": self.metric, "value": self.value, "max_drop": self.max_drop,
                "n": self.n, "accuracy": self.accuracy, "reference_accuracy": self.reference_accuracy,
                "agreement": self.agreement}


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
    pred = predict(pruned, data, batch_size)
    ref = predict(reference, data, batch_size, "reference")
    agree = int((pred == ref).sum())
    allowed = math.floor(max_drop * n + 1e-9)  # most samples that may be lost
    if data.labelled:
        right, ref_right = int((pred == data.labels).sum()), int((ref == data.labels).sum())
        lost = ref_right - right
        return CheckResult(n, max_drop, right / n, ref_right / n, agree / n, lost / n, lost <= allowed)
    return CheckResult(n, max_drop, None, None, agree / n, (n - agree) / n, n - agree <= allowed)
