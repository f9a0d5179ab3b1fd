"""`onnxprune check`: exit 0 within --max-drop, 1 beyond it, 2 for bad input; labels or disagreement."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from onnxprune import api
from onnxprune.cli import main

from builders import LENET300, MNIST_EVAL


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """300 MNIST test images, once with labels and once without."""
    z = np.load(MNIST_EVAL)
    d = tmp_path_factory.mktemp("check")
    np.savez(d / "labelled.npz", x=z["x"][:300], y=z["y"][:300])
    np.savez(d / "unlabelled.npz", x=z["x"][:300])
    return d / "labelled.npz", d / "unlabelled.npz"


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    """LeNet-300 with its last Gemm's weights zeroed: it predicts one class for everything."""
    m = onnx.load(LENET300)
    last = [n for n in m.graph.node if n.op_type == "Gemm"][-1]
    for t in m.graph.initializer:
        if t.name == last.input[1]:
            t.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(t)), t.name))
    p = tmp_path_factory.mktemp("broken") / "broken.onnx"
    onnx.save(m, p)
    return p


def test_model_against_itself_passes_with_zero_drop(data):
    r = run("check", LENET300, "--reference", LENET300, "--data", data[0], "--max-drop", 0.01)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("PASS: accuracy ") and "(drop 0.0000 ≤ 0.0100) on 300 samples" in r.stdout


def test_broken_model_fails_with_exit_1(data, broken):
    r = run("check", broken, "--reference", LENET300, "--data", data[0])
    assert r.exit_code == 1, r.output
    assert r.stdout.startswith("FAIL: accuracy ") and len(r.stdout.strip().splitlines()) == 1


def test_unlabelled_data_checks_disagreement(data, broken):
    r = run("check", LENET300, "--reference", LENET300, "--data", data[1])
    assert r.exit_code == 0 and r.stdout.startswith("PASS: disagreement 0.0000"), r.output
    r = run("check", broken, "--reference", LENET300, "--data", data[1], "--json")
    assert r.exit_code == 1
    d = json.loads(r.stdout)
    assert d["passed"] is False and d["metric"] == "disagreement" and d["accuracy"] is None
    assert d["value"] == pytest.approx(1 - d["agreement"]) and d["value"] > 0.5


def test_drop_exactly_at_the_limit_passes(data, broken):
    r = api.check(broken, LENET300, data[0], max_drop=0.0)
    assert not r.passed and r.metric == "accuracy_drop"
    assert r.value == pytest.approx(r.reference_accuracy - r.accuracy)
    assert api.check(broken, LENET300, data[0], max_drop=r.value).passed  # no float rounding at the boundary
    assert not api.check(broken, LENET300, data[0], max_drop=r.value - 1 / 300).passed


@pytest.mark.parametrize("which", ["pruned", "reference", "data"])
def test_missing_file_is_one_line_exit_2(data, tmp_path, which):
    args = {"pruned": LENET300, "reference": LENET300, "data": data[0], which: tmp_path / "missing"}
    r = run("check", args["pruned"], "--reference", args["reference"], "--data", args["data"])
    assert r.exit_code == 2 and "no such" in r.output and len(r.output.strip().splitlines()) == 1
