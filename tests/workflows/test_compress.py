"""`compress` end to end through the CLI: bundled models, data discovery, never overwriting, report files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import LENET300, MNIST_CALIB, MNIST_EVAL, REPO
from click.testing import CliRunner
from onnx import numpy_helper

from onnxprune.certify import split_indices
from onnxprune.cli import main
from onnxprune.io.data import load_dataset
from onnxprune.io.model import load_model
from onnxprune.workflows.compress import REPORT_KEYS
from onnxprune.select.plan import PruneSettings
from onnxprune.workflows.prune import prepare

RESNET20 = REPO / "models" / "resnet20_cifar10.onnx"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def mnist_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("mnist")
    for src, name, n in ((MNIST_CALIB, "mnist_calib.npz", 600), (MNIST_EVAL, "mnist_eval.npz", 500)):
        z = np.load(src)
        np.savez(d / name, x=z["x"][:n], y=z["y"][:n])
    return d


FAST = ("--no-bench",)


def test_structured_lenet_writes_a_smaller_valid_model(tmp_path, mnist_files):
    out = tmp_path / "small.onnx"
    r = run("compress", LENET300, "--calib", mnist_files / "mnist_calib.npz", "--eval",
            mnist_files / "mnist_eval.npz", "--ratio", "0.5", "--alpha", "0.2", "--reconstruct", "-o", out, "--json",
            *FAST)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output[r.output.index("{"):])
    assert set(d) == set(REPORT_KEYS)
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert out.stat().st_size < 0.6 * LENET300.stat().st_size
    acc = next(x for x in d["summary"] if x["metric"].startswith("accuracy"))
    assert acc["after"] > 0.95  # half the hidden neurons gone, re-fitted by least squares


def test_unstructured_lenet_hits_the_sparsity(tmp_path, mnist_files):
    out = tmp_path / "sparse.onnx"
    r = run("compress", LENET300, "--mode", "unstructured", "--criterion", "fscreen", "--ratio", "0.9",
            "--calib", mnist_files / "mnist_calib.npz", "--eval", mnist_files / "mnist_eval.npz", "-o", out,
            "--json", *FAST)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output[r.output.index("{"):])
    kept = sum(v["kept"] for v in d["kept"].values())
    total = sum(v["total"] for v in d["kept"].values())
    assert abs((1 - kept / total) - 0.9) <= 0.005


def test_output_is_deterministic(tmp_path, mnist_files):
    outs = []
    for i in range(2):
        out = tmp_path / f"o{i}.onnx"
        r = run("compress", LENET300, "--calib", mnist_files / "mnist_calib.npz", "--ratio", "0.3", "-o", out, *FAST)
        assert r.exit_code == 0, r.output
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_refuses_to_overwrite_the_input(tmp_path, mnist_files):
    model = tmp_path / "m.onnx"
    shutil.copy(LENET300, model)
    before = model.read_bytes()
    r = run("compress", model, "--calib", mnist_files / "mnist_calib.npz", "-o", model, *FAST)
    assert r.exit_code == 2 and "refusing to overwrite" in r.output
    assert model.read_bytes() == before


class TestCalibrationDiscovery:
    """Without --calib, compress uses the one calib_data/*calib*.npz that fits the model input."""

    def _in(self, folder: Path, files: dict[str, tuple]) -> Path:
        (folder / "calib_data").mkdir()
        rng = np.random.default_rng(0)
        for name, shape in files.items():
            np.savez(folder / "calib_data" / name, x=rng.integers(0, 255, shape, dtype=np.uint8),
                     y=rng.integers(0, 10, shape[0]))
        shutil.copy(LENET300, folder / "m.onnx")
        return folder

    def test_one_match_is_used_and_named(self, tmp_path, monkeypatch):
        monkeypatch.chdir(self._in(tmp_path, {"mnist_calib.npz": (64, 1, 28, 28), "cifar_calib.npz": (8, 3, 32, 32)}))
        r = run("compress", "m.onnx", "--ratio", "0.2", *FAST)
        assert r.exit_code == 0, r.output
        assert "calib_data/mnist_calib.npz as calib data" in r.output
        assert Path("m.pruned.onnx").exists()

    def test_none_is_a_clear_error(self, tmp_path, monkeypatch):
        monkeypatch.chdir(self._in(tmp_path, {"cifar_calib.npz": (8, 3, 32, 32)}))
        r = run("compress", "m.onnx", *FAST)
        assert r.exit_code == 2 and "no calibration data" in r.output

    def test_several_is_a_clear_error(self, tmp_path, monkeypatch):
        monkeypatch.chdir(self._in(tmp_path, {"a_calib.npz": (8, 1, 28, 28), "b_calib.npz": (8, 1, 28, 28)}))
        r = run("compress", "m.onnx", *FAST)
        assert r.exit_code == 2 and "several calib files" in r.output


def test_report_files_and_keys(tmp_path, mnist_files):
    rep = tmp_path / "rep"
    r = run("compress", LENET300, "--calib", mnist_files / "mnist_calib.npz", "--eval", mnist_files / "mnist_eval.npz",
            "--ratio", "0.5", "-o", tmp_path / "o.onnx", "--report", rep, "--bench-runs", "20")
    assert r.exit_code == 0, r.output
    for f in ("report.md", "report.json", "accuracy_vs_ratio.png", "kept_per_layer.png", "latency.png"):
        assert (rep / f).stat().st_size > 0, f
    d = json.loads((rep / "report.json").read_text())
    assert set(d) == set(REPORT_KEYS)
    assert {"params", "MACs"} <= {x["metric"] for x in d["summary"]}
    assert any(x["metric"].startswith("latency p50 ms, 1 thread") for x in d["summary"])


@pytest.mark.skipif(not RESNET20.exists(), reason="trained ResNet-20 not bundled yet")
def test_resnet20_structured_end_to_end(tmp_path):
    z = np.load(REPO / "calib_data" / "cifar10_calib.npz")
    np.savez(tmp_path / "c.npz", x=z["x"][:128], y=z["y"][:128])
    out = tmp_path / "r.onnx"
    r = run("compress", RESNET20, "--calib", tmp_path / "c.npz", "--eval", tmp_path / "c.npz", "--ratio", "0.6",
            "--alpha", "0.2", "-o", out, "--json", "--bench-runs", "20")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output[r.output.index("{"):])
    rows = {x["metric"]: x for x in d["summary"]}
    assert rows["MACs"]["ratio"] < 0.7 and rows["params"]["ratio"] < 0.7


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_tolerance_writes_exactly_the_certified_candidate(tmp_path, mnist_files):
    """The written model is the candidate certified on the build split — not one re-fitted on the whole
    calibration file, certification samples included (which differed by up to 0.39 in a weight)."""
    out = tmp_path / "c.onnx"
    r = run("compress", LENET300, "--calib", MNIST_CALIB, "--eval", mnist_files / "mnist_eval.npz", "--tolerance",
            "0.02", "--delta", "0.1", "--mode", "unstructured", "--criterion", "magnitude", "--grid", "0.5:0.9:0.2",
            "-o", out, "--json", *FAST)
    assert r.exit_code == 0, r.output
    c = json.loads(r.output[r.output.index("{"):])["certification"]
    assert c["grid"] == [0.5, 0.7, 0.9] and c["certified"] == [True, True, True] and c["certified_ratio"] == 0.9
    assert c["build_samples"] == c["certification_samples"] == 5000

    model = load_model(LENET300)
    data = load_dataset(MNIST_CALIB, model)
    build = data.subset(split_indices(len(data), 0.5, 0)[0])
    settings = PruneSettings(mode="unstructured", criterion="magnitude")
    certified = prepare(model, build, settings).build(0.9, build, reconstruct=True).model
    written, expected = _initializers(onnx.load(out)), _initializers(certified)
    assert written.keys() == expected.keys()
    for name, w in expected.items():
        np.testing.assert_array_equal(written[name], w, err_msg=name)


def test_nothing_certified_writes_nothing(tmp_path, mnist_files):
    out = tmp_path / "none.onnx"
    r = run("compress", LENET300, "--calib", mnist_files / "mnist_calib.npz", "--tolerance", "0.05",
            "--grid", "0.99", "--mode", "unstructured", "--criterion", "magnitude", "--no-reconstruct", "-o", out,
            *FAST)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert r.exit_code == 2 and len(errors) == 1 and r.stderr.splitlines()[-1] == errors[0], r.output
    assert "smallest failing ratio 0.99" in r.output and "nothing written" in r.output
    assert "larger --tolerance" in r.output and "more certification data" in r.output
    assert not out.exists()


def test_int8_in_a_certified_run_is_calibrated_on_the_build_split_only(tmp_path, mnist_files, monkeypatch):
    """What the quantizer's calibration reader yields are build-split samples only, and the report says the
    certificate does not cover the int8 model."""
    import onnxruntime.quantization as q

    seen: list[np.ndarray] = []
    real = q.quantize_static

    def recording(src, dst, reader, **kw):
        batches = list(iter(reader.get_next, None))
        seen.extend(next(iter(b.values())) for b in batches)  # LeNet has one input
        replay = iter(batches)
        reader.get_next = lambda: next(replay, None)
        return real(src, dst, reader, **kw)

    monkeypatch.setattr(q, "quantize_static", recording)
    calib = mnist_files / "mnist_calib.npz"
    r = run("compress", LENET300, "--calib", calib, "--eval", mnist_files / "mnist_eval.npz", "--tolerance", "0.05",
            "--grid", "0.3", "--mode", "unstructured", "--criterion", "magnitude", "--no-reconstruct",
            "--quantize", "int8", "-o", tmp_path / "q.onnx", "--json", *FAST)
    assert r.exit_code == 0, r.output
    x = np.load(calib)["x"].astype(np.float32)
    build_idx, cert_idx = split_indices(len(x), 0.5, 0)
    fed = np.concatenate(seen)
    assert len(fed) == len(build_idx) == 300  # all of the build split (< 512), nothing else
    rows = {s.tobytes() for s in fed}
    assert rows == {x[i].tobytes() for i in build_idx}
    assert not rows & {x[i].tobytes() for i in cert_idx}
    notes = json.loads(r.output[r.output.index("{"):])["notes"]
    assert any("the int8 model" in n and "is not covered" in n and "300 certification samples" in n for n in notes)


def test_unstructured_tables_count_non_zero_weights_and_claim_no_speed_up(mnist_small, tmp_path):
    r = run("compress", LENET300, "--mode", "unstructured", "--criterion", "magnitude", "--ratio", "0.9",
            "--calib", mnist_small, "--eval", mnist_small, "--bench-runs", "5", "--json", "-o", tmp_path / "u.onnx")
    assert r.exit_code == 0, r.output
    rows = {x["metric"]: x for x in json.loads(r.stdout)["summary"]}
    nz = rows["non-zero weights"]
    assert nz["after"] <= 0.1 * 266200 + nz["before"] - 266200 + 5  # 90 % of the prunable weights are zero
    assert "params (zeros included)" in rows
    assert all("no speed-up" in m for m in rows if m.startswith("latency"))
    assert not any("faster" in m for m in rows)
