"""reconstruct.channels.refit_channels: the structured re-fit runs the pruned model once (block by block), keeps
its memory within a budget by re-fitting on fewer samples (and says so), and still brings the outputs closer to
the dense model's."""
from __future__ import annotations

import numpy as np
import onnx
from units.helpers import TINY, rel_err, run, sample_input

from onnxprune.io.data import Dataset
from onnxprune.io.runtime import input_specs
from onnxprune.progress import said
from onnxprune.reconstruct import blocks, channels
from onnxprune.select.plan import PruneSettings
from onnxprune.workflows.prune import prepare

B = 2  # the tiny test models have a fixed batch of 2


def dataset(model: onnx.ModelProto, n: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    spec = input_specs(model)[0]
    x = rng.normal(size=(n, *spec.sample_shape)).astype(np.float32)
    return Dataset({spec.name: x}, rng.integers(0, 3, n), input_specs(model))


def build() -> tuple[float, float]:
    """(relative output error of the re-fitted model, of the model pruned without re-fit) on a tiny ResNet."""
    model = TINY["resnet"](3)
    data = dataset(model, 256)
    prep = prepare(model, data, PruneSettings(batch_size=B, criterion="l1", round_to=1))
    plain = prep.build(0.5, data, reconstruct=False).model
    refit = prep.build(0.5, data, reconstruct=True).model
    x = sample_input(model, np.random.default_rng(9), batch=64)
    dense = run(model, x)
    return rel_err(run(refit, x), dense), rel_err(run(plain, x), dense)


def test_the_pruned_model_runs_once_in_all_not_once_per_layer(monkeypatch):
    """Pieces are built from nodes the earlier pieces did not run: the pruned model's nodes are run once each (the
    shape-free tiny ResNet has no node to re-run), so the cost is one pass, not one prefix pass per layer."""
    built: list[str] = []
    real = blocks.piece
    monkeypatch.setattr(blocks, "piece", lambda m, nodes, *a: built.extend(n.name for n in nodes) or real(m, nodes, *a))
    fitted, plain = build()
    assert built and len(built) == len(set(built))
    assert fitted < 0.8 * plain


def test_a_small_memory_budget_refits_on_fewer_samples_and_says_so(monkeypatch):
    monkeypatch.setattr(blocks, "CARRY_BYTES", 1)
    monkeypatch.setattr(blocks, "MIN_SAMPLES", 64)
    used: list[int] = []
    real = channels.BlockForward.run
    monkeypatch.setattr(channels.BlockForward, "run", lambda self, m, data, *a: used.append(len(data)) or
                        real(self, m, data, *a))
    fitted, plain = build()
    assert used == [64]
    assert any("re-fit uses 64 of 256 calibration samples" in s for s in said())
    assert fitted < plain  # fewer samples, still a re-fit that helps
