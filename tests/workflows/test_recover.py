"""Recovery as a stage of pruning: through the CLI, on the data it is given, and inside certification."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from builders import LENET300, MNIST_CALIB, REPO, mnist_subset
from onnxprune.cli import main
from onnxprune.io.graph import initializer_map


LENET5BN = REPO / "models" / "lenet5bn_mnist.onnx"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def small(tmp_path, n=600, start=0, name="d.npz"):
    return mnist_subset(tmp_path, n, start, name)


def test_zero_epochs_write_the_initializers_back_unchanged(tmp_path):
    pruned = tmp_path / "p.onnx"
    assert run("prune", LENET300, "--mode", "unstructured", "--criterion", "magnitude", "--ratio", "0.9",
               "--no-reconstruct", "-o", pruned).exit_code == 0
    r = run("recover", pruned, "--reference", LENET300, "--data", small(tmp_path), "--epochs", "0",
            "-o", tmp_path / "r.onnx")
    assert r.exit_code == 0, r.output
    a, b = onnx.load(str(pruned)), onnx.load(str(tmp_path / "r.onnx"))
    assert [t.SerializeToString() for t in a.graph.initializer] == [t.SerializeToString() for t in b.graph.initializer]


def test_compress_recovers_and_keeps_zeros(tmp_path):
    out = tmp_path / "c.onnx"
    r = run("compress", LENET300, "--mode", "unstructured", "--criterion", "magnitude", "--ratio", "0.95",
            "--recover-epochs", "1", "--calib", small(tmp_path), "--eval", small(tmp_path, 300, 600, "e.npz"),
            "--no-bench", "-o", out)
    assert r.exit_code == 0, r.output
    assert "recovery: 1 epoch(s) of distillation" in " ".join(r.output.split())
    w = initializer_map(onnx.load(str(out)))
    kept = sum(int(np.count_nonzero(w[k])) for k in ("0.weight", "2.weight", "4.weight", "6.weight") if k in w)
    assert kept <= round(0.05 * 266200) + 5  # the zeros of the 95 % mask stayed zero through training


def test_certified_candidates_are_recovered_on_the_build_split_only(tmp_path, monkeypatch):
    """With --tolerance, every candidate is recovered before it is tested, on data disjoint from the
    certification split, so the certificate covers the recovered model that is written."""
    from onnxprune.workflows import recover as stage

    seen: list[int] = []
    real = stage.recover_model

    def spy(pruned, dense, data, **kw):
        seen.append(len(data))
        return real(pruned, dense, data, **kw)

    monkeypatch.setattr(stage, "recover_model", spy)
    r = run("compress", LENET300, "--mode", "unstructured", "--criterion", "magnitude", "--tolerance", "0.3",
            "--grid", "0.5,0.9", "--recover-epochs", "1", "--calib", small(tmp_path, 1000), "--no-bench",
            "-o", tmp_path / "c.onnx")
    assert r.exit_code == 0, r.output
    assert seen and set(seen) == {500}  # the build half of 1,000 samples, never the certification half
    assert "the certificate covers the recovered model" in " ".join(r.output.split())
    r = run("compress", LENET300, "--mode", "unstructured", "--criterion", "magnitude", "--tolerance", "0.3",
            "--recover-epochs", "1", "--calib", small(tmp_path, 1000), "--recover-data", small(tmp_path, 1000),
            "--no-bench", "-o", tmp_path / "d.onnx")
    assert r.exit_code == 2 and "--recover-data" in r.output and "disjoint" in r.output


# ------------------------------------------------------------------ training-time pruning (--schedule iterative)
def _iterative(model_path, data, ratio, mode="structured", epochs=2, steps=2, **kw):
    from onnxprune.select.plan import PruneSettings
    from onnxprune.workflows.prune import prepare

    model = onnx.load(str(model_path))
    s = PruneSettings(ratio=ratio, mode=mode, recover_epochs=epochs, schedule="iterative", prune_steps=steps, **kw)
    prepared = prepare(model, data, s)
    return model, prepared.build(ratio, data, reconstruct=True, recover=data)


@pytest.mark.slow
def test_iterative_structured_writes_the_composed_plan_and_is_deterministic():
    """Channels pruned step by step on a narrowing graph: the written model has exactly the architecture of the
    dense model cut by the final plan (indices mapped back to the dense channels), the plan removes the ratio,
    every step is logged, and the same seed and threads give the same bytes."""
    from onnxprune.io.data import load_dataset
    from onnxprune.rewrite.channels import remove_channels

    data = load_dataset(MNIST_CALIB, onnx.load(str(LENET5BN))).subset(np.arange(400))
    dense, cand = _iterative(LENET5BN, data, 0.5)
    shapes = {t.name: tuple(t.dims) for t in cand.model.graph.initializer}
    ref = {t.name: tuple(t.dims) for t in remove_channels(dense, cand.plan.channels).graph.initializer}
    assert {k: shapes[k] for k in ref} == ref  # (the re-fit adds a bias where a conv had none)
    assert ref != {t.name: tuple(t.dims) for t in dense.graph.initializer}
    steps = cand.recovery.pruning_steps
    assert [x["step"] for x in steps] == [1, 2] and steps[-1]["ratio"] == 0.5
    assert steps[0]["kept"] > steps[1]["kept"] and "online F" in steps[1]["scores"]
    assert all(list(k) == sorted(set(k)) for k in cand.plan.channels.values())
    _, again = _iterative(LENET5BN, data, 0.5)
    assert again.model.SerializeToString() == cand.model.SerializeToString()


@pytest.mark.slow
def test_iterative_unstructured_written_model_equals_the_trained_masked_model(monkeypatch):
    """001 Alg. 1: zeros of every step stay zero; the written model (dead neurons removed by the checked rewrite)
    computes the trained masked model's function to 1e-4 relative, at the requested sparsity."""
    from onnxprune.io.data import load_dataset
    from onnxprune.modes.unstructured import Unstructured
    from onnxprune.rewrite.check import max_rel_diff

    seen = {}
    real = Unstructured.apply

    def spy(self, model, plan, probe=None):
        out = real(self, model, plan, probe)
        seen["trained"], seen["plan"], seen["out"] = model, plan, out
        return out

    monkeypatch.setattr(Unstructured, "apply", spy)
    data = load_dataset(MNIST_CALIB, onnx.load(str(LENET300))).subset(np.arange(600))
    _, cand = _iterative(LENET300, data, 0.9, mode="unstructured", epochs=3, steps=3, criterion="fscreen")
    assert seen["out"] is cand.model
    w = initializer_map(seen["trained"])
    kept = sum(int(m.sum()) for m in seen["plan"].masks.values())
    total = sum(m.size for m in seen["plan"].masks.values())
    assert abs(1 - kept / total - 0.9) < 0.01
    for k, m in seen["plan"].masks.items():
        assert np.all(w[k][~m] == 0), k
    feed = {"input": data.inputs[next(iter(data.inputs))][:64].astype(np.float32)}
    feed = {seen["trained"].graph.input[0].name: next(iter(feed.values()))}
    assert max_rel_diff(seen["trained"], cand.model, feed) <= 1e-4
    assert [x["ratio"] for x in cand.recovery.pruning_steps][-1] == 0.9


@pytest.mark.slow
def test_iterative_certified_candidates_train_on_the_build_split_only(tmp_path, monkeypatch):
    from onnxprune.workflows import iterative

    seen: list[int] = []
    real = iterative.prune_while_training

    def spy(prepared, ratio, data, train, *a, **kw):
        seen.append(len(train))
        return real(prepared, ratio, data, train, *a, **kw)

    monkeypatch.setattr(iterative, "prune_while_training", spy)
    r = run("compress", LENET300, "--mode", "unstructured", "--criterion", "magnitude", "--tolerance", "0.3",
            "--grid", "0.5,0.9", "--schedule", "iterative", "--recover-epochs", "2", "--prune-steps", "2",
            "--calib", small(tmp_path, 1000), "--no-bench", "-o", tmp_path / "c.onnx")
    assert r.exit_code == 0, r.output
    assert seen and set(seen) == {500}
    assert "pruned in 2 annealed steps" in " ".join(r.output.split())


def test_iterative_needs_recovery_epochs_and_no_time_budget(tmp_path):
    from onnxprune.errors import OnnxPruneError
    from onnxprune.select.plan import PruneSettings

    with pytest.raises(OnnxPruneError, match="--recover"):
        PruneSettings(schedule="iterative")
    with pytest.raises(OnnxPruneError, match="--recover-time"):  # refused before any work, not after statistics
        PruneSettings(schedule="iterative", recover_epochs=3, recover_seconds=5.0)
    assert PruneSettings(schedule="iterative", recover_epochs=3).to_dict()["schedule"] == "iterative"
    assert "schedule" not in PruneSettings().to_dict()  # plans without recovery are unchanged
    r = run("compress", LENET300, "--mode", "unstructured", "--ratio", "0.5", "--schedule", "iterative",
            "--recover-time", "5", "--calib", small(tmp_path, 200), "--no-bench", "-o", tmp_path / "c.onnx")
    assert r.exit_code == 2 and r.output.count("error:") == 1 and "--recover-time" in r.output
    assert not (tmp_path / "c.onnx").exists()
