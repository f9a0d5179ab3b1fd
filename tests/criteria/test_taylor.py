"""`--criterion taylor`: first-order Taylor scores through the torch graph, a selectable criterion in both modes."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "units"))
from generate import Builder  # noqa: E402

from builders import LENET300, MNIST_CALIB  # noqa: E402
from onnxprune.cli import main  # noqa: E402
from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.modes import get  # noqa: E402
from onnxprune.select.plan import PruneSettings  # noqa: E402
from onnxprune.stats import Stats  # noqa: E402
from onnxprune.units.groups import analyse  # noqa: E402
from onnxprune.workflows.prune import prepare  # noqa: E402


class Data:
    def __init__(self, x: np.ndarray, y: np.ndarray | None):
        self.inputs, self.labels = {"x": x}, y

    def __len__(self) -> int:
        return len(self.labels) if self.labels is not None else len(self.inputs["x"])


def cnn(seed: int = 0):
    """x → 3×(conv → BN → ReLU) → global pool → Gemm: three channel groups of 6, 8 and 8 channels."""
    b = Builder(np.random.default_rng(seed), batch="N")
    x, c = "x", 3
    for k in (6, 8, 8):
        x, c = b.op("Relu", [b.bn(b.conv(x, c, k, bias=False), k)])[0], k
    return b.model(b._gemm(b.op("Flatten", [b.op("GlobalAveragePool", [x])[0]], axis=1)[0], c, 5))


def silenced(channel: int = 0):
    """The CNN with one channel of its middle group read by nobody: every consumer weight of it is zero, so the
    loss does not depend on it (its Taylor score is exactly 0), while its filter and BN γ stay as they were."""
    m = cnn()
    group = analyse(m)[1]
    inits = {t.name: k for k, t in enumerate(m.graph.initializer)}
    for mem in group.members:
        if mem.role == "consumer":
            t = m.graph.initializer[inits[mem.tensor]]
            w = numpy_helper.to_array(t).copy()
            np.moveaxis(w, mem.axis, 0)[mem.indices(np.array([channel]))] = 0
            t.CopyFrom(numpy_helper.from_array(w, t.name))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3, 8, 8)).astype(np.float32)
    return m, group.id, Data(x, rng.integers(0, 5, 32))


def test_structured_taylor_ranks_a_channel_without_effect_on_the_loss_last():
    m, gid, data = silenced()
    p = prepare(m, data, PruneSettings(criterion="taylor"))
    scores = p.scores.channel_scores
    assert scores[gid][0] == 0.0
    assert (np.concatenate(list(scores.values())) > 0).sum() == sum(v.size for v in scores.values()) - 1
    bn = prepare(m, data, PruneSettings(criterion="bn")).scores.channel_scores[gid]
    assert bn[0] > bn.min()  # magnitude alone would not have picked it
    # the smallest-ratio plan that removes one channel of that group removes this one
    plan = get("structured").select(m, p.scores, 0.05, PruneSettings(criterion="taylor", round_to=1))
    assert 0 not in plan.channels.get(gid, [0])


def test_unstructured_taylor_scores_are_abs_gradient_times_weight_and_silent_weights_go_first():
    m, gid, data = silenced()
    p = prepare(m, data, PruneSettings(mode="unstructured", criterion="taylor"))
    assert p.scores.scope == "allocation" and any("taylor" in n for n in p.scores.notes)
    g = next(g for g in analyse(m) if g.id == gid)
    producer = next(mem for mem in g.members if mem.role == "producer")
    row = np.moveaxis(p.scores.values[producer.tensor], producer.axis, 0)[0]
    assert (row == 0).all()  # the silenced channel's filter has zero gradient: |g·w| = 0 however large w is


def test_labels_true_needs_labels_and_predicted_is_label_free():
    m, _, data = silenced()
    with pytest.raises(OnnxPruneError, match="no labels"):
        prepare(m, Data(data.inputs["x"], None), PruneSettings(criterion="taylor", labels="true"))
    p = prepare(m, Data(data.inputs["x"], None), PruneSettings(criterion="taylor"))
    assert p.label_mode == "predicted"


def test_without_torch_the_cli_says_so_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch → ImportError
    r = CliRunner().invoke(main, ["prune", str(LENET300), "--mode", "unstructured", "--criterion", "taylor",
                                  "--calib", str(MNIST_CALIB), "-o", str(tmp_path / "out.onnx")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "pip install" in errors[0] and "PyTorch" in errors[0]
    assert not (tmp_path / "out.onnx").exists()


def test_saved_statistics_cannot_stand_in_for_gradients():
    m, _, data = silenced()
    saved = Stats({}, model_hash="x", n=0, label_mode="true")
    with pytest.raises(OnnxPruneError, match="drop --stats"):
        prepare(m, data, PruneSettings(criterion="taylor"), stats=saved)
