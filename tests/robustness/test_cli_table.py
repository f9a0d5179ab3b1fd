"""The robustness set (issue 13): real exporters' patterns and bad inputs, through the CLI, table-driven.

For every row: the exit code; for a failure exactly one line on stderr, starting `error:` (and naming what is
wrong); never a traceback; and every input file's bytes unchanged. The models are small generated ones
(`exporters.py`), so the whole table runs in seconds.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from robustness.exporters import cnn, data, dense_head, vector_head

from onnxprune.cli import main

PRUNE = ("--round-to", "1", "--ratio", "0.5")
FAST_COMPRESS = ("--no-bench", *PRUNE)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Every model and data file of the table, generated once."""
    w = tmp_path_factory.mktemp("robustness")
    models = {
        "base": cnn(), "batch_q": cnn(batch=None), "batch_m1": cnn(batch=-1), "batch_1": cnn(batch=1, out_dims=[1, 4]),
        "batch_4": cnn(batch=4, out_dims=[4, 4]), "hw_sym": cnn(hw="H"), "hw_q": cnn(hw=None),
        "hw_m1": cnn(batch=-1, hw=-1), "bias_subgraph": cnn(bias_subgraph=True), "constant_nodes": cnn(constant_nodes=True),
        "both": cnn(bias_subgraph=True, constant_nodes=True), "ms_gelu": cnn(custom="com.microsoft"),
        "ms_gelu_hw": cnn(custom="com.microsoft", hw="H"),
        "custom_op": cnn(custom="my.domain"), "fp16": cnn(fp16=True), "seg": dense_head(),
        "regression": vector_head("regression"), "embedding": vector_head("embedding"),
        **{f"opset{v}": cnn(opset=v) for v in range(11, 22)},
    }
    for name, m in models.items():
        onnx.save(m, w / f"{name}.onnx")
    onnx.save(cnn(), w / "external.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="external.onnx.data", size_threshold=0)
    d = data()
    np.savez(w / "d.npz", **d)
    np.savez(w / "d6.npz", **data(hw=6))
    np.savez(w / "nolabels.npz", x=d["x"])
    np.savez(w / "d50.npz", **data(n=50))
    x = d["x"].copy()
    x[[3, 17]] = np.nan
    np.savez(w / "nan.npz", x=x, y=d["y"])
    x = d["x"].copy()
    x[40, 1, 2, 3] = np.inf
    np.savez(w / "inf.npz", x=x, y=d["y"])
    y = d["y"].copy()
    y[9] = 4
    np.savez(w / "label_k.npz", x=d["x"], y=y)
    y[9] = 1_000_000
    np.savez(w / "label_huge.npz", x=d["x"], y=y)
    y[9] = -1
    np.savez(w / "label_neg.npz", x=d["x"], y=y)
    np.savez(w / "label_float.npz", x=d["x"], y=d["y"].astype(np.float32))
    np.savez(w / "wrong_shape.npz", x=d["x"][:, :2], y=d["y"])
    np.savez(w / "no_x.npz", images=d["x"])
    np.savez(w / "empty.npz", x=d["x"][:0])
    (w / "not_npz.npz").write_text("not a zip")
    (w / "not_onnx.onnx").write_text("hello")
    (w / "truncated.onnx").write_bytes((w / "base.onnx").read_bytes()[:200])
    (w / "plan_list.json").write_text("[1, 2, 3]")
    (w / "plan_binary.json").write_bytes(bytes(range(256)) * 4)
    (w / "plan_bad.json").write_text('{"format": "onnxprune-plan/1"}')
    (w / "a_file").write_text("x")
    return w


def _ok_compress(name: str, *extra: str, data_file: str = "d.npz"):
    return ("compress", f"{name}.onnx", "--calib", data_file, "-o", f"out/{name}.onnx", "--json", *FAST_COMPRESS,
            *extra)


# (id, argv, exit code, regex the one error line must match (failures) / None)
EXPORTERS = [
    (f"compress-{n}", _ok_compress(n), 0, None)
    for n in ["base", "batch_q", "batch_m1", "batch_1", "batch_4", "bias_subgraph", "constant_nodes", "both",
              "ms_gelu", "fp16", "external", *[f"opset{v}" for v in range(11, 22)]]
] + [
    ("compress-hw_sym-bench", ("compress", "hw_sym.onnx", "--calib", "d6.npz", "-o", "out/hw_sym.onnx", "--json",
                               *PRUNE, "--bench-runs", "2"), 0, None),
    ("compress-hw_q", _ok_compress("hw_q", data_file="d6.npz"), 0, None),
    ("compress-hw_m1", _ok_compress("hw_m1", data_file="d6.npz"), 0, None),
    ("no-arguments-is-help", (), 0, None),
    ("compress-seg", _ok_compress("seg"), 0, None),
    ("compress-regression", _ok_compress("regression", data_file="nolabels.npz"), 0, None),
    ("compress-embedding", _ok_compress("embedding"), 0, None),
    ("eval-batch_1", ("eval", "batch_1.onnx", "--data", "d.npz", "--reference", "batch_1.onnx"), 0, None),
    ("check-batch_1", ("check", "batch_1.onnx", "--reference", "batch_1.onnx", "--data", "d.npz"), 0, None),
    ("stats-batch_1", ("stats", "batch_1.onnx", "--calib", "d.npz", "-o", "out/s1.npz"), 0, None),
    ("prune-batch_1", ("prune", "batch_1.onnx", "--calib", "d.npz", "-o", "out/p1.onnx", *PRUNE), 0, None),
    ("prune-unstructured-batch_1", ("prune", "batch_1.onnx", "--calib", "d.npz", "-o", "out/u1.onnx",
                                    "--mode", "unstructured", "--criterion", "wanda"), 0, None),
    ("certify-batch_1", ("certify", "batch_1.onnx", "--calib", "d50.npz", "--tolerance", "0.5", "--grid", "0:0.5:0.5",
                         *PRUNE[:2]), 0, None),
    ("stats-ms_gelu_hw", ("stats", "ms_gelu_hw.onnx", "--calib", "d6.npz", "-o", "out/ms.npz", "--criteria", "all"),
     0, None),
    ("prune-unstructured-ms_gelu_hw", ("prune", "ms_gelu_hw.onnx", "--calib", "d6.npz", "-o", "out/ms.onnx",
                                       "--mode", "unstructured", "--criterion", "wanda"), 0, None),
    ("bench-hw_sym-real-shape", ("bench", "hw_sym.onnx", "--shape", "1,3,6,6", "--runs", "2", "--warmup", "0",
                                 "--threads", "1"), 0, None),
    ("eval-seg", ("eval", "seg.onnx", "--data", "d.npz", "--reference", "seg.onnx"), 0, None),
    ("check-embedding", ("check", "embedding.onnx", "--reference", "embedding.onnx", "--data", "d.npz"), 0, None),
    *[(f"certify-{n}", ("certify", f"{n}.onnx", "--calib", "d50.npz", "--tolerance", "0.5", "--grid", "0:0.5:0.5",
                        *PRUNE[:2], *extra), 0, None)
      for n, extra in (("seg", ()), ("regression", ()), ("embedding", ("--loss", "cosine", "--loss-tau", "0.1")))],
]

BAD = [
    ("nan-data", _ok_compress("base", data_file="nan.npz"), 2, r"NaN or Inf values in 2 sample\(s\) \(indices 3, 17\)"),
    ("inf-data", ("eval", "base.onnx", "--data", "inf.npz"), 2, r"NaN or Inf .*indices 40"),
    ("label-equal-k", _ok_compress("base", data_file="label_k.npz"), 2, r"labels up to 4, but the model's output gives 4"),
    ("label-huge", ("stats", "base.onnx", "--calib", "label_huge.npz", "-o", "out/s.npz"), 2, r"labels up to 1000000.*indices 9"),
    ("label-negative", ("eval", "base.onnx", "--data", "label_neg.npz"), 2, r"negative labels"),
    ("label-float", ("eval", "base.onnx", "--data", "label_float.npz"), 2, r"integer class labels"),
    ("data-wrong-shape", ("eval", "base.onnx", "--data", "wrong_shape.npz"), 2, r"has shape \(48, 2, 8, 8\)"),
    ("data-no-x", ("eval", "base.onnx", "--data", "no_x.npz"), 2, r"no array for model input 'x'"),
    ("data-empty", ("eval", "base.onnx", "--data", "empty.npz"), 2, r"no samples"),
    ("data-not-npz", ("eval", "base.onnx", "--data", "not_npz.npz"), 2, r"not a readable .npz"),
    ("data-missing", ("eval", "base.onnx", "--data", "nope.npz"), 2, r"no such data file"),
    ("model-not-onnx", ("eval", "not_onnx.onnx", "--data", "d.npz"), 2, r"not (a readable )?(an )?ONNX model"),
    ("model-truncated", ("eval", "truncated.onnx", "--data", "d.npz"), 2, r"truncated\.onnx"),
    ("model-missing", ("eval", "nope.onnx", "--data", "d.npz"), 2, r"no such file"),
    ("custom-op-compress", _ok_compress("custom_op"), 2, r"."),  # the reason is the channel analysis' (rules.py)
    ("custom-op-eval", ("eval", "custom_op.onnx", "--data", "d.npz"), 2,
     r"onnxruntime cannot load the model: .*MyAct"),
    ("plan-json-list", ("apply", "base.onnx", "plan_list.json", "-o", "out/a.onnx"), 2, r"invalid plan"),
    ("plan-binary", ("apply", "base.onnx", "plan_binary.json", "-o", "out/a.onnx"), 2, r"not a plan file"),
    ("plan-incomplete", ("apply", "base.onnx", "plan_bad.json", "-o", "out/a.onnx"), 2, r"invalid plan"),
    ("out-proc-compress", ("compress", "base.onnx", "--calib", "d.npz", "-o", "/proc/x.onnx", *FAST_COMPRESS), 2,
     r"/proc/x\.onnx: cannot write"),
    ("out-proc-prune", ("prune", "base.onnx", "--calib", "d.npz", "-o", "/proc/x.onnx"), 2, r"cannot write"),
    ("out-proc-apply", ("apply", "base.onnx", "plan_list.json", "-o", "/proc/x.onnx"), 2, r"cannot write"),
    ("out-under-a-file", ("compress", "base.onnx", "--calib", "d.npz", "-o", "a_file/x.onnx", *FAST_COMPRESS), 2,
     r"not a directory"),
    ("plan-out-proc", ("compress", "base.onnx", "--calib", "d.npz", "--plan-out", "/proc/p.json", *FAST_COMPRESS), 2,
     r"/proc/p\.json: cannot write the plan"),
    ("report-under-a-file", ("compress", "base.onnx", "--calib", "d.npz", "--report", "a_file/rep", *FAST_COMPRESS),
     2, r"cannot create the report"),
    ("out-is-input", ("compress", "base.onnx", "--calib", "d.npz", "-o", "base.onnx", *FAST_COMPRESS), 2,
     r"refusing to overwrite"),
    ("tolerance-1", ("compress", "base.onnx", "--calib", "d.npz", "--tolerance", "1"), 2, r"--tolerance.*0<x<1"),
    ("certify-tolerance-1", ("certify", "base.onnx", "--calib", "d.npz", "--tolerance", "1"), 2, r"--tolerance"),
    ("ratio-1", ("prune", "base.onnx", "-o", "out/r.onnx", "--ratio", "1"), 2, r"--ratio"),
    ("unknown-option", ("compress", "base.onnx", "--bogus"), 2, r"No such option '--bogus'"),
    ("missing-argument", ("compress",), 2, r"Missing argument 'MODEL'"),
    ("missing-option", ("eval", "base.onnx"), 2, r"Missing option '--data'"),
    ("unknown-command", ("frobnicate",), 2, r"No such command"),
    ("batch-size-0", ("eval", "base.onnx", "--data", "d.npz", "--batch-size", "0"), 2, r"--batch-size"),
    ("bench-bad-shape", ("bench", "hw_sym.onnx", "--shape", "1,4,6,6"), 2, r"does not fit"),
    ("bench-dynamic-no-shape", ("bench", "hw_sym.onnx"), 2, r"pass --shape"),
    ("certify-segmentation-relative", ("certify", "seg.onnx", "--calib", "d50.npz", "--tolerance", "0.5", "--loss",
                                       "relative"), 2, r"output is a per-position score map .* use --loss positions"),
    ("certify-regression-positions", ("certify", "regression.onnx", "--calib", "nolabels.npz", "--tolerance", "0.5",
                                      "--loss", "positions"), 2, r"--loss positions needs a per-position score map"),
    ("certify-regression-binomial", ("certify", "regression.onnx", "--calib", "nolabels.npz", "--tolerance", "0.5",
                                     "--pvalue", "binomial"), 2, r"binomial p-value needs 0/1 losses"),
    ("certify-embedding-tau", ("certify", "embedding.onnx", "--calib", "d.npz", "--tolerance", "0.5", "--loss",
                               "cosine", "--loss-tau", "2.5"), 2, r"--loss-tau must be in \(0, 2\]"),
    ("compress-loss-without-tolerance", _ok_compress("seg", "--loss", "positions"), 2, r"add --tolerance"),
]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def _run(work: Path, argv, monkeypatch):
    monkeypatch.chdir(work)
    (work / "out").mkdir(exist_ok=True)
    return CliRunner().invoke(main, list(argv))


@pytest.mark.parametrize("case, argv, code, message", EXPORTERS + BAD, ids=[c[0] for c in EXPORTERS + BAD])
def test_cli_table(work, monkeypatch, case, argv, code, message):
    before = _digest(work)
    r = _run(work, argv, monkeypatch)
    assert "Traceback" not in r.output and not (r.exception and not isinstance(r.exception, SystemExit)), \
        f"{case}: {r.exception!r}\n{r.output}"
    assert r.exit_code == code, f"{case}: exit {r.exit_code}\n{r.output}"
    after = _digest(work)
    assert {k: after[k] for k in before} == before, f"{case}: an input file changed"
    if code != 0:
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{case}: {r.stderr!r}"
        assert re.search(message, lines[0]), f"{case}: {lines[0]}"
        assert "internal error" not in lines[0]
    elif argv and argv[0] == "compress":
        d = json.loads(r.stdout)
        s = {x["metric"]: x for x in d["summary"]}
        assert s["MACs"]["before"] > 0 and 0 < s["MACs"]["after"] < s["MACs"]["before"], case
        assert 0 < s["params"]["after"] < s["params"]["before"], case
        onnx.checker.check_model(onnx.load(work / d["output"]), full_check=True)


def test_foreign_exports_prune_as_deep_as_the_plain_export(work, monkeypatch):
    """A converter's Reshape'd conv biases or weights in Constant nodes leave every channel group prunable: the
    same groups are pruned as in the plain export."""
    kept = {}
    for name in ("base", "bias_subgraph", "constant_nodes", "both"):
        r = _run(work, _ok_compress(name), monkeypatch)
        assert r.exit_code == 0, r.output
        kept[name] = sorted(v["kept"] for v in json.loads(r.stdout)["kept"].values())
    assert all(v == kept["base"] and v for v in kept.values()), kept


def test_non_classifiers_say_what_is_measured(work, monkeypatch):
    r = _run(work, ("compress", "seg.onnx", "--calib", "d.npz", "-o", "out/s.onnx", "--json", *FAST_COMPRESS),
             monkeypatch)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    metrics = [x["metric"] for x in d["summary"]]
    assert "agreement with dense (per position)" in metrics and any("per-position" in n for n in d["notes"])
    assert not any(m.startswith("accuracy") for m in metrics)
    assert d["label_mode"] == "true"  # y given: used as groups for the class statistics
    r = _run(work, ("compress", "embedding.onnx", "--calib", "nolabels.npz", "-o", "out/e.onnx", "--json",
                    *FAST_COMPRESS), monkeypatch)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    metrics = [x["metric"] for x in d["summary"]]
    assert "output cosine with dense" in metrics and "output relative error" in metrics
    assert not any("agreement" in m for m in metrics) and "RuntimeWarning" not in r.output
    assert d["label_mode"].startswith("none: the output is not a class score")


def test_a_late_failure_names_the_model_already_written(work, monkeypatch):
    from onnxprune.errors import OnnxPruneError
    from onnxprune.measure import bench

    def broken(*a, **k):
        raise OnnxPruneError("onnxruntime failed while benchmarking: simulated")

    monkeypatch.setattr(bench, "benchmark", broken)
    r = _run(work, ("compress", "base.onnx", "--calib", "d.npz", "-o", "out/late.onnx", *PRUNE, "--bench-runs", "2"),
             monkeypatch)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]  # after the stages' progress lines
    assert r.exit_code == 2 and len(errors) == 1 and r.stderr.splitlines()[-1] == errors[0]
    assert errors[0].startswith("error: onnxruntime failed while benchmarking") and "out/late.onnx" in errors[0]
    assert "had already been written" in errors[0] and "Traceback" not in r.output


def test_ctrl_c_inside_a_command_is_one_line_exit_130(work, monkeypatch):
    from onnxprune import api

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "evaluate", interrupted)
    r = _run(work, ("eval", "base.onnx", "--data", "d.npz"), monkeypatch)
    assert r.exit_code == 130 and r.stderr == "error: interrupted\n"


def test_ctrl_c_during_start_up_is_one_line_exit_130(work):
    """Ctrl-C while the CLI's imports run (simulated deterministically: the import of onnx raises it)."""
    code = ("import sys\n"
            "class Hook:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'onnx':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Hook())\n"
            "sys.argv = ['onnxprune', 'eval', 'base.onnx', '--data', 'd.npz']\n"
            "from onnxprune.cli import main\n"
            "main()\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, timeout=60)
    assert p.returncode == 130 and p.stderr == "error: interrupted\n", p.stderr


def test_a_real_sigint_mid_run_is_one_line_exit_130(work):
    import signal
    import time

    code = "from onnxprune.cli import main; main()"
    p = subprocess.Popen([sys.executable, "-c", code, "bench", "base.onnx", "--runs", "100000000", "--seconds", "60",
                          "--threads", "1"], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    time.sleep(3.0)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err == "error: interrupted\n", err


def test_a_missing_change_never_breaks_the_summary():
    """Dense MACs unknown (0): the row has no ratio and a `change` key (None), so no formatter raises KeyError."""
    from onnxprune.workflows.compress import _row

    row = _row("MACs", 0, 0)
    assert row["ratio"] is None and "change" in row and row["change"] is None
    assert _row("MACs", 10, 5)["ratio"] == 0.5


def test_ctrl_c_while_the_command_is_still_importing_is_one_line():
    """Before `onnxprune.cli` can catch it (the console script importing the package), Ctrl-C is one line and exit
    130 too; importing onnxprune as a library leaves Python's handling alone."""
    as_cli = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = '/venv/bin/onnxprune'; import onnxprune; "
                             "raise KeyboardInterrupt"], capture_output=True, text=True)
    assert as_cli.returncode == 130 and as_cli.stderr == "error: interrupted\n" and not as_cli.stdout
    as_lib = subprocess.run([sys.executable, "-c", "import sys, onnxprune; "
                             "print(sys.excepthook is sys.__excepthook__)"], capture_output=True, text=True)
    assert as_lib.stdout.strip() == "True", as_lib.stderr
