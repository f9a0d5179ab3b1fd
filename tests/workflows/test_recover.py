"""Recovery as a stage of pruning: through the CLI, on the data it is given, and inside certification."""
from __future__ import annotations

import numpy as np
import onnx
from click.testing import CliRunner

from builders import LENET300, MNIST_CALIB
from onnxprune.cli import main
from onnxprune.io.graph import initializer_map


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def small(tmp_path, n=600, start=0, name="d.npz"):
    z = np.load(MNIST_CALIB)
    p = tmp_path / name
    np.savez(p, x=z["x"][start:start + n], y=z["y"][start:start + n])
    return p


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
