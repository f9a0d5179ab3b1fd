"""Unstructured pipeline: selection (global / uniform / row / protect / min-keep), α = 0 ≡ magnitude, dead-neuron
removal (numerically checked), and one small end-to-end run on the bundled LeNet-300-100."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from builders import LENET300, MNIST_CALIB, tiny_mlp
from onnxprune.workflows import prune as pipeline
from onnxprune.modes.unstructured import UNSTRUCTURED as U
from onnxprune.modes.unstructured import candidates
from onnxprune.rewrite.masks import masked
from onnxprune.io.data import load_dataset
from onnxprune.errors import OnnxPruneError
from onnxprune.units.weights import weight_layers
from onnxprune.io.graph import initializer_map, set_initializer
from onnxprune.io.model import load_model
from onnxprune.select.plan import Plan, PruneSettings
from onnxprune.io.runtime import make_session


class FakeStats:
    label_mode = "true"

    def __init__(self, arrays: dict):
        self.a = arrays

    def get(self, tensor, key):
        return self.a[(tensor, key)]

    def has(self, tensor, key):
        return (tensor, key) in self.a


@pytest.fixture(scope="module")
def lenet() -> onnx.ModelProto:
    return load_model(LENET300)


def settings(**kw) -> PruneSettings:
    return PruneSettings(mode="unstructured", **kw)


def random_stats(model, key, seed=0):
    rng = np.random.default_rng(seed)
    return FakeStats({(L.input, key): rng.random(L.shape[L.in_axis]) * 10 for L in weight_layers(model)})


def kept(plan: Plan) -> int:
    return sum(int(m.sum()) for m in plan.masks.values())


@pytest.mark.parametrize("ratio", [0.5, 0.9, 0.97])
def test_fscreen_alpha_zero_is_global_magnitude_exactly(lenet, ratio):
    mag = U.select(lenet, U.score(lenet, None, settings(criterion="magnitude")), ratio, settings())
    s = settings(criterion="fscreen", alpha=0.0)
    fs = U.select(lenet, U.score(lenet, random_stats(lenet, "f"), s), ratio, s)
    assert mag.masks.keys() == fs.masks.keys()
    assert all(np.array_equal(mag.masks[k], fs.masks[k]) for k in mag.masks)


def test_fscreen_alpha_moves_the_mask(lenet):
    s = settings(criterion="fscreen", alpha=0.4)
    a = U.select(lenet, U.score(lenet, random_stats(lenet, "f"), s), 0.9, s)
    b = U.select(lenet, U.score(lenet, None, settings(criterion="magnitude")), 0.9, s)
    assert not np.array_equal(a.masks["2.weight"], b.masks["2.weight"])
    for plan in (a, b):  # in the file: entries folded away with a neuron count as pruned
        w = initializer_map(U.apply(lenet, plan))
        assert sum(np.count_nonzero(w[k]) for k in plan.masks) == round(0.1 * 266200)


def test_global_magnitude_prunes_smallest_weights(lenet):
    plan = U.select(lenet, U.score(lenet, None, settings(criterion="magnitude")), 0.5, settings(min_keep=0.0))
    w = initializer_map(lenet)
    kept_min = min(np.abs(w[k][m]).min() for k, m in plan.masks.items())
    pruned_max = max(np.abs(w[k][~m]).max() for k, m in plan.masks.items())
    assert pruned_max <= kept_min
    assert kept(plan) == 266200 - 133100


def test_min_keep_and_uniform_allocation(lenet):
    s = settings(criterion="magnitude", min_keep=0.3)
    plan = U.select(lenet, U.score(lenet, None, s), 0.5, s)
    for L in weight_layers(lenet):
        assert plan.masks[L.weight].sum() >= np.ceil(0.3 * L.size)
    # a floor never outweighs the ratio: at most 2/3 of the kept density (select/weights.py: floor_fraction)
    plan = U.select(lenet, U.score(lenet, None, s), 0.95, s)
    w = initializer_map(U.apply(lenet, plan))
    assert sum(np.count_nonzero(w[k]) for k in plan.masks) == round(0.05 * 266200)
    for L in weight_layers(lenet):
        assert plan.masks[L.weight].sum() >= np.ceil(2 / 3 * 0.05 * L.size)
    s = settings(criterion="magnitude", allocation="uniform")
    plan = U.select(lenet, U.score(lenet, None, s), 0.8, s)
    for L in weight_layers(lenet):
        assert plan.masks[L.weight].sum() == L.size - round(0.8 * L.size)


def test_protect_first_and_last(lenet):
    s = settings(criterion="magnitude", protect=("first", "last"))
    plan = U.select(lenet, U.score(lenet, None, s), 0.9, s)
    assert list(plan.masks) == ["4.weight"]
    assert plan.masks["4.weight"].sum() == 3000
    with pytest.raises(OnnxPruneError, match="no prunable layer"):
        candidates(lenet, settings(protect=("nope",)))


def test_wanda_keeps_the_same_count_per_row(lenet):
    s = settings(criterion="wanda")
    plan = U.select(lenet, U.score(lenet, random_stats(lenet, "sqnorm"), s), 0.5, s)
    assert (plan.masks["6.weight"].sum(1) == 50).all()  # Gemm transB=1: rows are outputs
    # fc2 rows whose neuron lost every outgoing weight are dropped whole; their budget is shared by the others
    rows = plan.masks["4.weight"].sum(1)
    live = rows[rows > 0]
    assert live.max() - live.min() <= 1 and plan.masks["4.weight"].sum() == 15000


def test_requests_follow_the_criterion(lenet):
    assert U.requests(lenet, settings(criterion="magnitude")) == []
    reqs = U.requests(lenet, settings(criterion="fscreen"))
    assert [r.tensor for r in reqs] == [L.input for L in weight_layers(lenet)]
    assert all(r.stats == {"class_moments"} and r.kind == "features" for r in reqs)
    assert all(r.layer for r in U.requests(lenet, settings(criterion="ri")))


def _mlp_with_bias(b1):
    m = tiny_mlp()
    set_initializer(m, "b1", np.array(b1, np.float32))
    return m


def test_dead_neurons_removed_with_bias_folding():
    m = _mlp_with_bias([0.7, -0.2, 0.5])
    w1 = np.ones((3, 4), bool)
    w1[0] = False  # neuron 0: no incoming → constant relu(0.7) folded into fc2's bias
    w2 = np.ones((2, 3), bool)
    w2[:, 2] = False  # neuron 2: no outgoing
    from onnxprune.io.model import model_hash

    plan = Plan("unstructured", model_hash(m), settings().to_dict(), {"w1": w1, "w2": w2})
    out = U.apply(m, plan)
    w = initializer_map(out)
    assert w["w1"].shape == (1, 4) and w["w2"].shape == (2, 1) and w["b1"].shape == (1,)
    ref = masked(m, plan)
    x = np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32)
    a = make_session(ref).run(None, {"input": x})[0]
    b = make_session(out).run(None, {"input": x})[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.count_nonzero(numpy_helper.to_array(next(t for t in ref.graph.initializer if t.name == "w1"))) == 8


def test_apply_rejects_a_plan_for_another_model(lenet):
    plan = U.select(lenet, U.score(lenet, None, settings(criterion="magnitude")), 0.5, settings())
    with pytest.raises(OnnxPruneError, match="another model"):
        U.apply(tiny_mlp(), plan)


def test_end_to_end_fscreen_on_lenet_subset(lenet, tmp_path):
    z = np.load(MNIST_CALIB)
    p = tmp_path / "calib.npz"
    np.savez(p, x=z["x"][:600], y=z["y"][:600])
    data = load_dataset(p, lenet)
    r = pipeline.prune(lenet, data, settings(criterion="fscreen", ratio=0.9, alpha=0.4))
    assert abs(r.report["sparsity"] - 0.9) <= 0.005
    assert r.report["size"]["pruned_zlib"] < r.report["size"]["dense_zlib"] / 4
    assert any("no speed-up" in n for n in r.report["notes"])
    pred = make_session(r.model).run(None, {"input": data.inputs["input"][:200].astype(np.float32)})[0].argmax(1)
    assert (pred == data.labels[:200]).mean() > 0.6


def test_protected_layers_are_not_refitted(lenet, tmp_path):
    """--protect means untouched: reconstruction re-fits the pruned layers only. The protected last layer keeps its
    dense weights (less the columns of neurons removed upstream, which are exactly dead)."""
    z = np.load(MNIST_CALIB)
    p = tmp_path / "calib.npz"
    np.savez(p, x=z["x"][:400], y=z["y"][:400])
    s = settings(criterion="magnitude", ratio=0.9, protect=("last",))
    r = pipeline.prune(lenet, load_dataset(p, lenet), s)
    dense, pruned = initializer_map(lenet)["6.weight"], initializer_map(r.model)["6.weight"]
    cols = {dense[:, j].tobytes(): j for j in range(dense.shape[1])}
    assert all(pruned[:, j].tobytes() in cols for j in range(pruned.shape[1]))
    assert "6.weight" not in r.plan.masks
