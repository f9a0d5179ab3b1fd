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
