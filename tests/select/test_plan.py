"""Plans: compact JSON round trip, `prune --plan-out` + `apply` byte-identical, clear errors."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from builders import LENET300, MNIST_CALIB
from onnxprune.cli import main
from onnxprune.select.plan import Plan


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_plan_json_round_trip_is_compact():
    rng = np.random.default_rng(0)
    m = rng.random((300, 784)) > 0.9
    p = Plan("unstructured", "abc", {"ratio": 0.9}, {"w": m})
    text = p.to_json()
    assert len(text) < m.size / 8 * 1.5  # bit-packed, compressed, base64
    q = Plan.from_json(text)
    assert np.array_equal(q.masks["w"], m) and q.settings == {"ratio": 0.9}


def test_prune_then_apply_is_byte_identical(tmp_path):
    a, b, plan = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "plan.json"
    r = run("prune", LENET300, "--mode", "unstructured", "--criterion", "magnitude", "--ratio", 0.8,
            "--protect", "last", "-o", a, "--plan-out", plan, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert abs(d["sparsity"] - 0.8) < 0.005 and d["layers"][-1]["protected"]
    r = run("apply", LENET300, plan, "-o", b)
    assert r.exit_code == 0, r.output
    assert a.read_bytes() == b.read_bytes()


def test_reconstructed_plan_needs_calib_and_reproduces(tmp_path):
    z = np.load(MNIST_CALIB)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=z["x"][:300], y=z["y"][:300])
    a, b, plan = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "plan.json"
    r = run("prune", LENET300, "--mode", "unstructured", "--criterion", "wanda", "--ratio", 0.7, "--reconstruct",
            "--calib", calib, "-o", a, "--plan-out", plan)
    assert r.exit_code == 0, r.output
    assert "no speed-up" in r.output and "zlib" in r.output
    r = run("apply", LENET300, plan, "-o", b)
    assert r.exit_code == 2 and "--calib" in r.output
    r = run("apply", LENET300, plan, "-o", b, "--calib", calib)
    assert r.exit_code == 0, r.output
    assert a.read_bytes() == b.read_bytes()


def test_prune_refuses_to_overwrite_input_and_needs_calib(tmp_path):
    import shutil

    src = tmp_path / "m.onnx"
    shutil.copy(LENET300, src)
    r = run("prune", src, "--mode", "unstructured", "--criterion", "magnitude", "-o", src)
    assert r.exit_code == 2 and "overwrite" in r.output
    r = run("prune", src, "--mode", "unstructured", "--criterion", "fscreen", "-o", tmp_path / "o.onnx")
    assert r.exit_code == 2 and "--calib" in r.output
