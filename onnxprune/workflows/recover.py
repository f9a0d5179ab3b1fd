"""Recovery as a stage: train the pruned model against the dense one (distillation in PyTorch, `recover/`), check
what comes back, and say what it cost. Used by `prune`/`compress` (after the re-fit) and by `onnxprune recover`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from ..errors import OnnxPruneError
from ..io.data import Dataset
from ..io.model import validate
from ..select.plan import PruneSettings

if TYPE_CHECKING:
    from ..recover.distill import RecoveryReport


@dataclass
class RecoverResult:
    model: onnx.ModelProto
    report: RecoveryReport
    output: Path

    @property
    def written(self) -> bool:
        """Whether this process wrote `output`: in a data-parallel run only rank 0 does."""
        return not self.report.settings.get("rank")

    def to_dict(self) -> dict:
        return {"output": str(self.output), **self.report.to_dict()}

    def summary(self) -> str:
        if not self.written:
            return (f"rank {self.report.settings['rank']} of {self.report.settings.get('workers')}: nothing written "
                    f"(rank 0 writes {self.output})")
        return f"wrote {self.output}: {describe(self.report)}"


def torch_available() -> None:
    """Recovery trains in PyTorch, an optional extra: say how to get it rather than fail deep inside."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise OnnxPruneError("recovery trains the model in PyTorch, which is not installed: pip install "
                             "'onnxprune[torch]' (CPU build: pip install torch --index-url "
                             "https://download.pytorch.org/whl/cpu)") from None


RECOVER_BATCH = 64  # ResNet-20 at 50 %: batch 64 beat 128 and 32 at equal CPU time (docs/BENCHMARKS.md, recovery)


def recover_model(pruned: onnx.ModelProto, dense: onnx.ModelProto, data: Dataset, *, epochs: int,
                  seconds: float | None = None, labels: bool = False, augment: bool | None = None, seed: int = 0,
                  batch_size: int = RECOVER_BATCH, activation_l1: float = 0.0, workers: int = 1,
                  group: bool = False) -> tuple[onnx.ModelProto, RecoveryReport]:
    """The pruned model with its initializers trained to agree with `dense` on `data` (same graph, same names;
    unstructured zeros stay zero), validated; `activation_l1` > 0 adds paper 003's L1 penalty on the neurons'
    outputs (pruning-aware training). `workers` > 1 trains data-parallel on that many local processes; `group`:
    so does every process of a torchrun / Ray Train group (`recover/parallel.py`, `recover/launch.py`)."""
    torch_available()
    from ..recover.launch import recover_workers

    if labels and not data.labelled:
        raise OnnxPruneError(f"{data.source or 'the recovery data'} has no labels ('y'): drop --recover-labels "
                             f"(distillation needs none)")
    model, report = recover_workers(pruned, dense, data, workers, group, epochs=epochs, time_budget_s=seconds,
                                    labels=labels, augment=augment, seed=seed, batch_size=batch_size,
                                    activation_l1=activation_l1)
    validate(model)
    return model, report


def recover_with(pruned: onnx.ModelProto, dense: onnx.ModelProto, data: Dataset, settings: PruneSettings
                 ) -> tuple[onnx.ModelProto, RecoveryReport]:
    """`recover_model` as a pruning run's settings ask for it."""
    return recover_model(pruned, dense, data, epochs=settings.recover_epochs, seconds=settings.recover_seconds,
                         labels=settings.recover_labels, augment=settings.augment, seed=settings.seed,
                         activation_l1=settings.activation_l1)


def describe(report: RecoveryReport) -> str:
    """One line for the report: what ran, how long, and the held-out agreement before → after."""
    before, after = report.agreement_before, report.agreement_after
    agree = f"held-out agreement with the dense model {before:.3f} → {after:.3f}; " if None not in (before, after) else ""
    steps = report.pruning_steps
    ratios = ", ".join(f"{x['ratio']:.3f}" for x in steps)
    how = f"pruned in {len(steps)} annealed steps (ratios {ratios}) during " if steps else ""
    if report.epochs_run and report.best_epoch == 0 and not steps:
        agree += "every epoch lowered it, so the input weights were kept (try a lower learning rate); "
    l1 = (report.settings or {}).get("activation_l1")
    pat = f" + activation L1 penalty λ = {l1:g} (pruning-aware)" if l1 else ""
    workers = (report.settings or {}).get("workers") or 1  # data-parallel: CPU-s summed over the processes
    par, procs = (" in all", f" × {workers} data-parallel processes") if workers > 1 else ("", "")
    if (report.settings or {}).get("precision") == "bf16":  # recover/distill.py: use_bf16
        procs += ", bf16 autocast"
    return (f"recovery: {how}{report.epochs_run} epoch(s) of distillation{pat} from the dense model on "
            f"{report.train_samples} samples ({report.stopped}; {agree}{report.wall_s:.0f} s, {report.cpu_s:.0f} "
            f"CPU-s{par}, {report.threads} thread(s){procs}; augmentation: {report.augment})")
