"""--activation-l1 (paper 003's pruning-aware training) through the commands: validated before any work, needs
recovery training, reaches the training of `recover`, `compress --recover` and `--schedule iterative`."""
from __future__ import annotations

import onnx
import pytest
from click.testing import CliRunner

from builders import LENET300, mnist_subset
from onnxprune.cli import main
from onnxprune.errors import OnnxPruneError
from onnxprune.select.plan import PruneSettings


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def small(tmp_path, n=300, start=0, name="d.npz"):
    return mnist_subset(tmp_path, n, start, name)


def _one_error(r, *words):
    assert r.exit_code == 2, r.output
    assert r.output.count("error:") == 1 and all(w in r.output for w in words), r.output


@pytest.mark.parametrize("bad", ["-0.5", "nan", "inf", "abc"])
def test_recover_refuses_a_bad_lambda_with_one_error_line(tmp_path, bad):
    out = tmp_path / "r.onnx"
    r = run("recover", LENET300, "--reference", LENET300, "--data", small(tmp_path, 50), "--epochs", "1",
            "--activation-l1", bad, "-o", out)
    _one_error(r, "--activation-l1")
    assert not out.exists()


def test_pruning_commands_need_recovery_for_the_penalty(tmp_path):
    with pytest.raises(OnnxPruneError, match="--activation-l1"):
        PruneSettings(recover_epochs=2, activation_l1=-1.0)
    out = tmp_path / "p.onnx"
    r = run("prune", LENET300, "--mode", "unstructured", "--criterion", "magnitude", "--ratio", "0.5",
            "--activation-l1", "0.1", "-o", out)
    _one_error(r, "--activation-l1", "--recover")
    assert not out.exists()


def test_plans_record_the_penalty_only_when_it_is_on():
    assert "activation_l1" not in PruneSettings(recover_epochs=3).to_dict()  # unchanged plans at λ = 0
    assert PruneSettings(recover_epochs=3, activation_l1=0.05).to_dict()["activation_l1"] == 0.05


@pytest.mark.parametrize("schedule", ["oneshot", "iterative"])
def test_compress_trains_with_the_penalty(tmp_path, schedule):
    out = tmp_path / "c.onnx"
    r = run("compress", LENET300, "--mode", "unstructured", "--criterion", "magnitude", "--ratio", "0.9",
            "--schedule", schedule, "--prune-steps", "2", "--recover-epochs", "2", "--activation-l1", "0.05",
            "--calib", small(tmp_path), "--eval", small(tmp_path, 200, 300, "e.npz"), "--no-bench", "-o", out,
            "--plan-out", tmp_path / "plan.json")
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "activation L1 penalty λ = 0.05" in text
    assert ("pruned in 2 annealed steps" in text) == (schedule == "iterative")
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert '"activation_l1": 0.05' in (tmp_path / "plan.json").read_text()


def test_iterative_penalises_until_the_last_pruning_step_then_fine_tunes_without(tmp_path, monkeypatch):
    """003's order: train with the penalty while units are being chosen, prune, then fine-tune without it — so the
    penalty is on for the epochs before the last step (here K = 2 steps at epochs 0 and 1 of 4) and off after."""
    import sys

    from onnxprune.io.data import load_dataset
    from onnxprune.recover.distill import train_step
    from onnxprune.workflows.prune import prepare

    distill = sys.modules[train_step.__module__]  # (tests/recover shadows the package name for `import a.b.c`)
    seen: list[tuple[float, int]] = []
    real = distill.train_step

    def spy(*a, **kw):
        seen.append((kw["activation_l1"], len(kw["l1_tensors"])))
        return real(*a, **kw)

    monkeypatch.setattr(distill, "train_step", spy)
    model = onnx.load(str(LENET300))
    data = load_dataset(small(tmp_path), model)
    s = PruneSettings(ratio=0.5, mode="structured", criterion="l1", recover_epochs=4, schedule="iterative",
                      prune_steps=2, activation_l1=0.05)
    cand = prepare(model, data, s).build(0.5, data, reconstruct=True, recover=data)
    per_epoch = len(seen) // 4
    assert len(seen) == 4 * per_epoch and per_epoch > 1
    assert seen[:per_epoch] == [(0.05, 2)] * per_epoch  # both hidden layers' outputs, before the last step
    assert seen[per_epoch:] == [(0.0, 0)] * (3 * per_epoch)
    assert cand.recovery.settings["activation_l1"] == 0.05
    assert cand.recovery.settings["precision"] == "fp32"  # what the schedule trained in (no conv: never bf16)
