"""Structured pipeline: scores per channel group, selection that hits the ratio, removal, reconstruction."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from units.helpers import TINY, rel_err, run, sample_input

from onnxprune.modes import structured
from onnxprune.reconstruct.channels import _repair_variance
from onnxprune.io.data import Dataset
from onnxprune.errors import OnnxPruneError
from onnxprune.workflows.prune import prepare
from onnxprune.select.plan import PruneSettings
from onnxprune.io.runtime import input_specs


B = 2  # the tiny test models have a fixed batch of 2


def settings(**kw) -> PruneSettings:
    return PruneSettings(batch_size=B, **kw)


def dataset(model: onnx.ModelProto, n: int = 96, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    spec = input_specs(model)[0]
    x = rng.normal(size=(n, *spec.sample_shape)).astype(np.float32)
    return Dataset({spec.name: x}, rng.integers(0, 3, n), input_specs(model))


def removed_fraction(scores: structured.ChannelScores, plan) -> float:
    kept = structured.STRUCTURED.kept(scores, plan)
    return 1 - sum(k for k, _ in kept.values()) / sum(t for _, t in kept.values())


@pytest.mark.parametrize("arch", sorted(TINY))
@pytest.mark.parametrize("criterion", structured.CRITERIA)
def test_every_criterion_prunes_every_architecture(arch, criterion):
    model = TINY[arch](0)
    data = dataset(model)
    s = settings(ratio=0.5, criterion=criterion, alpha=0.4, round_to=1)
    prep = prepare(model, data, s)
    pruned, plan = prep.build(0.5, data, reconstruct=prep.settings.reconstruct)[:2]
    assert plan.channels, "something must be removed at ratio 0.5"
    assert abs(removed_fraction(prep.scores, plan) - 0.5) <= 0.15
    assert pruned.graph.node  # validated inside apply; runs:
    run(pruned, sample_input(pruned, np.random.default_rng(0)))


def test_round_to_keeps_multiples_of_n():
    model = TINY["resnet"](0)
    prep = prepare(model, None, settings(criterion="l1", round_to=4))
    plan = prep.build(0.5, None, reconstruct=False).plan
    sizes = {g.id: g.size for g in prep.scores.groups}
    for gid, kept in plan.channels.items():
        assert len(kept) % 4 == 0 or len(kept) == sizes[gid]


def test_global_selection_is_not_uniform_and_uniform_is():
    model = TINY["resnet"](1)
    s = settings(criterion="l1", round_to=1)
    glob = prepare(model, None, s).build(0.5, None, reconstruct=False)[1]
    uni_prep = prepare(model, None, settings(criterion="l1", round_to=1, allocation="uniform"))
    uni = uni_prep.build(0.5, None, reconstruct=False).plan
    fracs = [k / t for k, t in structured.STRUCTURED.kept(uni_prep.scores, uni).values()]
    assert max(fracs) - min(fracs) <= 0.25  # ceil rounding on small groups only
    assert glob.channels != uni.channels


def test_fscreen_with_alpha_zero_is_the_magnitude_order():
    model = TINY["resnet"](2)
    data = dataset(model)
    a0 = prepare(model, data, settings(criterion="fscreen", alpha=0.0, round_to=1)).build(0.5, data, reconstruct=False)[1]
    bn = prepare(model, data, settings(criterion="bn", round_to=1)).build(0.5, data, reconstruct=False)[1]
    assert a0.channels == bn.channels


def test_protect_leaves_the_named_layer_alone():
    model = TINY["resnet"](0)
    groups, _ = structured.candidate_groups(model, settings())
    target = groups[0].producers[0]
    kept, skipped = structured.candidate_groups(model, settings(protect=(target,)))
    assert groups[0].id in {g for g, _ in skipped}
    assert all(g.id != groups[0].id for g in kept)
    with pytest.raises(OnnxPruneError, match="no node or weight"):
        structured.candidate_groups(model, settings(protect=("nope",)))


def test_plans_are_deterministic():
    model = TINY["densenet"](0)
    data = dataset(model)
    s = settings(criterion="fscreen", round_to=1)
    p1 = prepare(model, data, s).build(0.4, data, reconstruct=False)[1]
    p2 = prepare(model, data, s).build(0.4, data, reconstruct=False)[1]
    assert p1.to_json() == p2.to_json()


@pytest.mark.parametrize("arch", ["resnet", "lenet5bn"])
def test_reconstruction_brings_outputs_closer_to_the_dense_model(arch):
    model = TINY[arch](3)
    data = dataset(model, n=256)
    prep = prepare(model, data, settings(criterion="l1", round_to=1))
    plain, plan = prep.build(0.5, data, reconstruct=False)[:2]
    refit = prep.build(0.5, data, reconstruct=True).model
    x = sample_input(model, np.random.default_rng(9), batch=64)
    dense = run(model, x)
    assert rel_err(run(refit, x), dense) < 0.8 * rel_err(run(plain, x), dense)


def test_criterion_without_data_is_a_clear_error():
    with pytest.raises(OnnxPruneError, match="calibration data"):
        prepare(TINY["resnet"](0), None, settings(criterion="fscreen"))


def test_min_channels_keeps_at_least_that_many_per_group():
    model = TINY["resnet"](0)
    prep = prepare(model, None, settings(criterion="l1", round_to=1, min_channels=6))
    plan = prep.build(0.7, None, reconstruct=False).plan
    sizes = {g.id: g.size for g in prep.scores.groups}
    assert plan.channels
    for gid, kept in plan.channels.items():
        assert len(kept) >= min(6, sizes[gid])


def test_variance_repair_gives_the_fitted_outputs_the_target_spread():
    rng = np.random.default_rng(0)
    x = np.hstack([rng.normal(size=(500, 3)), np.ones((500, 1))])
    t = x[:, :2] @ np.array([[2.0, 0.5], [0.0, -1.0]]) + rng.normal(scale=1.5, size=(500, 2)) + 3.0
    t = np.hstack([t, x[:, 2:3] * 4.0])  # an output the inputs explain exactly
    h, c = x.T @ x, x.T @ t
    wb = np.linalg.solve(h, c).T  # least squares: shrunk spread for the noisy outputs
    fixed = _repair_variance(wb, h, c, (t ** 2).sum(0))
    pred, pred_fixed = x @ wb.T, x @ fixed.T
    assert np.all(pred[:, :2].std(0) < 0.95 * t[:, :2].std(0))
    np.testing.assert_allclose(pred_fixed.std(0), t.std(0), rtol=1e-9)
    np.testing.assert_allclose(pred_fixed.mean(0), t.mean(0), rtol=1e-9)
    np.testing.assert_allclose(fixed[2], wb[2], rtol=1e-9, atol=1e-12)  # an exact fit is left alone


def test_every_rewrite_is_checked_against_its_zeroed_reference(monkeypatch):
    """A rewrite that changes the function is an error naming the group, before anything is written."""
    model = TINY["resnet"](0)
    prep = prepare(model, None, settings(criterion="l1", round_to=1))
    plan = prep.mode.select(model, prep.scores, 0.5, prep.settings)
    real = structured.remove_channels

    def broken(m, keep):
        out = real(m, keep)
        t = out.graph.initializer[-1]
        w = onnx.numpy_helper.to_array(t) + 1.0
        t.CopyFrom(onnx.numpy_helper.from_array(w, t.name))
        return out

    monkeypatch.setattr(structured, "remove_channels", broken)
    with pytest.raises(OnnxPruneError, match="group '.*' changed the model's function.*nothing was written"):
        structured.STRUCTURED.apply(model, plan)


def test_ri_works_on_a_model_whose_nodes_have_no_names(tmp_path):
    """Nodes are named once at load, so criteria that refer to layers by name work on any export."""
    from onnxprune import api
    from onnxprune.io.model import save_model

    model = TINY["lenet5bn"](0)
    for n in model.graph.node:
        n.name = ""
    src = tmp_path / "unnamed.onnx"
    save_model(model, src)
    data = tmp_path / "d.npz"
    spec = input_specs(model)[0]
    np.savez(data, x=np.random.default_rng(0).normal(size=(16, *spec.sample_shape)).astype(np.float32))
    r = api.prune(src, tmp_path / "out.onnx", calib=data, settings=settings(criterion="ri", round_to=1))
    assert r.plan.channels
