"""The Python API is discoverable from `import onnxprune`, mirrors the CLI's names, and stays cheap to import."""
import subprocess
import sys

import onnx

import onnxprune
from builders import LENET300, MNIST_CALIB


def test_import_exposes_the_api_lazily():
    assert {"compress", "prune", "certify", "api", "PruneSettings"} <= set(dir(onnxprune))
    assert onnxprune.api.compress is onnxprune.compress
    assert onnxprune.PruneSettings().alpha == 0.2  # the documented default (docs/BENCHMARKS.md)
    code = "import sys, onnxprune.cli; print(any(m in sys.modules for m in ('onnx', 'onnxruntime', 'numpy')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_stage_subpackages_do_not_hide_the_functions_of_the_same_name():
    from onnxprune.certify import ltt
    from onnxprune.recover import distill
    from onnxprune.stats import instrument

    assert onnxprune.recover is onnxprune.api.recover and callable(onnxprune.certify) and callable(onnxprune.stats)
    assert (distill.__name__, ltt.__name__, instrument.__name__) == (
        "onnxprune.recover.distill", "onnxprune.certify.ltt", "onnxprune.stats.instrument")


def test_grid_default_is_one_name_across_cli_and_api():
    from onnxprune.commands._common import DEFAULT_GRID

    assert DEFAULT_GRID == onnxprune.api.GRID


def test_prune_takes_explicit_keywords_and_results_summarise(tmp_path):
    out = tmp_path / "l.onnx"
    r = onnxprune.prune(LENET300, out, ratio=0.9, mode="unstructured", criterion="magnitude", reconstruct=False)
    assert abs(r.report["sparsity"] - 0.9) < 0.005 and r.plan.settings["criterion"] == "magnitude"
    onnx.checker.check_model(str(out))
    assert "sparsity" in r.summary() and r.to_dict()["plan"]["mode"] == "unstructured"


def test_certify_writes_the_certified_model(tmp_path):
    out = tmp_path / "c.onnx"
    run = onnxprune.certify(LENET300, MNIST_CALIB, tolerance=0.05, grid="0,0.5", mode="unstructured",
                            criterion="magnitude", output=out)
    assert run.candidate is not None
    assert onnx.load(str(out)).graph.initializer[0] == run.candidate.model.graph.initializer[0]
