"""The certification workflow: lazy candidates in ascending ratio, the certified candidate returned, and the
certification samples kept apart from everything that builds the candidates."""
from __future__ import annotations

import numpy as np
import pytest
from builders import LENET300, MNIST_CALIB
from click.testing import CliRunner

from onnxprune.certify import new_error_loss, split_indices
from onnxprune.cli import main
from onnxprune.io.data import load_dataset
from onnxprune.io.model import load_model
from onnxprune.measure.evaluate import predict
from onnxprune.select.plan import PruneSettings
from onnxprune.workflows import prune as prune_workflow
from onnxprune.workflows.certify import run

FAST = PruneSettings(mode="unstructured", criterion="magnitude", reconstruct=False)
# On 500 certification samples at tolerance 0.05: 0.3 passes, 0.9 fails (risk ≈ 0.07), 0.99 fails badly.
GRID = np.array([0.3, 0.9, 0.99, 0.995])


@pytest.fixture(scope="module")
def lenet():
    return load_model(LENET300)


@pytest.fixture(scope="module")
def calib(lenet):
    return load_dataset(MNIST_CALIB, lenet).subset(np.arange(1000))


@pytest.fixture
def builds(monkeypatch):
    """Every ratio `Prepared.build` is called with."""
    ratios: list[float] = []
    real = prune_workflow.Prepared.build

    def counting(self, ratio, data, *, reconstruct, recover=None):
        ratios.append(ratio)
        return real(self, ratio, data, reconstruct=reconstruct)

    monkeypatch.setattr(prune_workflow.Prepared, "build", counting)
    return ratios


def test_fixed_sequence_stops_building_at_the_first_failure(lenet, calib, builds):
    r = run(lenet, calib, FAST, GRID, 0.05, 0.1, control="fixed_sequence")
    assert builds == [0.3, 0.9]  # 0.9 fails, so 0.99 and 0.995 are never built
    assert r.certification.certified_ratio == 0.3
    d = r.to_dict()
    assert d["grid"] == [0.3, 0.9, 0.99, 0.995] and d["tested"] == [True, True, False, False]
    assert d["pvalues"][2:] == [None, None] and d["certified"] == [True, False, False, False]
    assert "0.99–0.995 not tested" in d["message"]


def test_bonferroni_tests_every_ratio(lenet, calib, builds):
    r = run(lenet, calib, FAST, GRID, 0.05, 0.1, control="bonferroni")
    assert builds == list(GRID)
    assert r.to_dict()["tested"] == [True] * 4 and r.certification.certified_ratio == 0.3


def test_the_returned_candidate_is_the_certified_one(lenet, calib):
    """Its own predictions on the certification split reproduce the certified row's risk."""
    r = run(lenet, calib, FAST, GRID, 0.05, 0.1)
    assert r.candidate.plan.settings["ratio"] == r.certification.certified_ratio == 0.3
    cert = calib.subset(split_indices(1000, 0.5, 0)[1])
    loss = new_error_loss(predict(r.candidate.model, cert), predict(lenet, cert), cert.labels)
    assert loss.mean() == r.certification.empirical_risk[0]
    assert r.build_n == r.cert_n == 500


def test_nothing_certified_has_no_candidate_and_says_what_to_try(lenet, calib):
    r = run(lenet, calib, FAST, np.array([0.99]), 0.05, 0.1)
    assert r.candidate is None and r.certification.certified_ratio is None
    msg = r.nothing_certified()
    assert "smallest failing ratio 0.99" in msg and "larger --tolerance" in msg and "grid step" in msg


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """calib: MNIST rows 0-599; overlap: 500-1099 (100 shared); disjoint: 600-1199."""
    d = tmp_path_factory.mktemp("cert")
    z = np.load(MNIST_CALIB)
    for name, rows in (("calib", slice(0, 600)), ("overlap", slice(500, 1100)), ("disjoint", slice(600, 1200))):
        np.savez(d / f"{name}.npz", x=z["x"][rows], y=z["y"][rows])
    return d


class TestCertDataMustBeDisjoint:
    """A certification sample that also built the candidates voids the guarantee: refused, one line, exit 2."""

    def certify(self, calib, cert):
        return CliRunner().invoke(main, ["certify", str(LENET300), "--calib", str(calib), "--cert-data", str(cert),
                                         "--tolerance", "0.05", "--grid", "0.3", "--mode", "unstructured",
                                         "--criterion", "magnitude", "--no-reconstruct"])

    def _one_error_line(self, r) -> str:
        assert r.exit_code == 2, r.output
        assert r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
        return r.output

    def test_the_same_file_is_refused(self, files):
        out = self._one_error_line(self.certify(files / "calib.npz", files / "calib.npz"))
        assert "is the --calib file" in out

    def test_shared_samples_are_refused(self, files):
        out = self._one_error_line(self.certify(files / "calib.npz", files / "overlap.npz"))
        assert "share 100 of 600 certification samples" in out

    def test_a_disjoint_file_is_accepted(self, files):
        r = self.certify(files / "calib.npz", files / "disjoint.npz")
        assert r.exit_code == 0, r.output
        assert "certified ratio: 0.30" in r.output


# --- models that are not (N, K) classifiers: bounded per-sample losses -------------------------

from onnxprune.certify import position_disagreement_loss  # noqa: E402
from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.workflows.certify import choose_loss  # noqa: E402


@pytest.mark.parametrize("kind,labelled,loss,tau,pvalue,expected", [
    ("classes", True, "auto", None, None, ("new_error", None, "binomial")),
    ("classes", False, "auto", None, None, ("disagreement", None, "binomial")),
    ("dense", True, "auto", None, None, ("positions", None, "hb")),  # per-sample labels cannot score positions
    ("values", False, "auto", None, None, ("relative", 0.1, "hb")),
    ("values", False, "cosine", None, None, ("cosine", 0.01, "binomial")),
    ("values", False, "relative", 0.25, "wsr", ("relative", 0.25, "wsr")),
    ("classes", True, "cosine", 0.05, None, ("cosine", 0.05, "binomial")),  # logits compared as vectors
])
def test_the_loss_fits_the_output_and_the_pvalue_fits_the_loss(kind, labelled, loss, tau, pvalue, expected):
    assert choose_loss(kind, labelled, loss, tau, pvalue) == expected


@pytest.mark.parametrize("kind,labelled,loss,tau,pvalue,match", [
    ("dense", False, "relative", None, None, r"this model's output is a per-position score map .* --loss positions"),
    ("values", False, "positions", None, None, r"--loss positions needs a per-position score map"),
    ("values", False, "new_error", None, None, r"--loss new_error needs \(N, K\) class scores"),
    ("classes", False, "new_error", None, None, r"needs labels"),
    ("dense", False, "positions", 0.1, None, r"--loss positions has none"),
    ("values", False, "cosine", 3.0, None, r"\(0, 2\] for the cosine loss"),
    ("values", False, "relative", None, "binomial", r"binomial p-value needs 0/1 losses .* --pvalue hb"),
    ("values", False, "mse", None, None, r"unknown loss 'mse'"),
])
def test_contradictions_are_refused_before_any_work(kind, labelled, loss, tau, pvalue, match):
    with pytest.raises(OnnxPruneError, match=match):
        choose_loss(kind, labelled, loss, tau, pvalue)


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory):
    """A generated segmentation network (stem, residual block, conv chain, conv head → (N, 4, 8, 8) scores) and 400
    unlabelled inputs."""
    import onnx
    from units.generate import Builder

    d = tmp_path_factory.mktemp("seg")
    b = Builder(np.random.default_rng(5), batch="N")
    b.stem(), b.residual(), b.conv_chain()
    onnx.save(b.model(b.seg_head(4)), d / "seg.onnx")
    np.savez(d / "x.npz", x=np.random.default_rng(0).normal(size=(400, 3, 8, 8)).astype(np.float32))
    return d


def test_cli_certifies_a_segmentation_model_on_the_per_position_loss(segmentation):
    import json

    d = segmentation
    r = CliRunner().invoke(main, ["certify", str(d / "seg.onnx"), "--calib", str(d / "x.npz"), "--tolerance", "0.1",
                                  "--grid", "0:0.6:0.15", "--round-to", "1", "--json", "-o", str(d / "cert.onnx")])
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)
    assert c["loss"] == "positions" and c["pvalue_method"] == "hb" and c["loss_tau"] is None
    assert "fraction of positions" in c["risk"] and "fraction of positions" in c["message"]
    assert c["certified_ratio"] == 0.3 and c["empirical_risk"][0] == 0.0
    assert c["certified"] == [True, True, True, False, False] and c["tested"] == [True] * 4 + [False]
    # The written model is the certified candidate: its per-position disagreement on the certification split is
    # the certified row's risk.
    dense, written = load_model(d / "seg.onnx"), load_model(d / "cert.onnx")
    cert = load_dataset(d / "x.npz", dense).subset(split_indices(400, 0.5, 0)[1])
    loss = position_disagreement_loss(predict(written, cert), predict(dense, cert))
    assert loss.mean() == pytest.approx(c["empirical_risk"][2], abs=1e-12)
    assert np.any((loss > 0) & (loss < 1))  # a bounded loss: fractions of positions, not 0/1


def test_cli_compress_tolerance_on_a_segmentation_model_writes_the_certified_candidate(segmentation, tmp_path):
    import json

    d = segmentation
    r = CliRunner().invoke(main, ["compress", str(d / "seg.onnx"), "--calib", str(d / "x.npz"), "--tolerance", "0.1",
                                  "--grid", "0:0.6:0.15", "--round-to", "1", "--no-bench", "--json",
                                  "-o", str(tmp_path / "c.onnx")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert any("certified ratio 0.3" in n and "fraction of positions" in n for n in out["notes"])
    assert load_model(tmp_path / "c.onnx").graph == load_model(d / "cert.onnx").graph  # same candidate as certify


def test_cli_refuses_a_loss_that_does_not_fit_in_one_line(segmentation):
    d = segmentation
    r = CliRunner().invoke(main, ["certify", str(d / "seg.onnx"), "--calib", str(d / "x.npz"), "--tolerance", "0.1",
                                  "--loss", "cosine"])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and r.output.startswith("error: --loss cosine needs")
