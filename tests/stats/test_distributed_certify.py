"""Certification's candidate evaluation over sample ranges (workflows.certify._observe with shards / Ray): the
observations, hence the losses and the certificate, equal the single-process run's; a lost or short range is an
error, never dropped; on Ray a failed task and a lost worker are retried."""
from __future__ import annotations

import numpy as np
import pytest

from builders import convnet
from onnxprune.errors import OnnxPruneError
from onnxprune.io.data import load_dataset
from onnxprune.select.plan import PruneSettings
from onnxprune.stats.distributed import Shard, gather, plan_shards
from onnxprune.workflows.certify import _observe, run



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cert")
    rng = np.random.default_rng(5)
    np.savez(tmp / "d.npz", x=rng.normal(size=(400, 3, 8, 8)).astype(np.float32), y=rng.integers(0, 3, 400))
    m = convnet()
    return m, load_dataset(tmp / "d.npz", m)


@pytest.mark.parametrize("loss", ["disagreement", "relative"])
@pytest.mark.parametrize("shards", [2, 5])
def test_ranges_give_the_single_process_observations(setup, loss, shards):
    m, data = setup
    one = _observe(m, data, loss, 32, "dense")
    many = _observe(m, data, loss, 32, "dense", shards=shards)
    assert many.shape == one.shape and many.shape[0] == 400
    np.testing.assert_array_equal(many, one)


def test_a_lost_or_short_range_is_an_error_naming_it():
    plan = plan_shards(100, 32, None, 3)
    full = [(s.index, np.zeros(s.expected)) for s in plan]
    with pytest.raises(OnnxPruneError, match="did not come back"):
        gather(plan, full[:-1], "certification", len)
    short = full[:-1] + [(plan[-1].index, np.zeros(plan[-1].expected - 1))]
    with pytest.raises(OnnxPruneError, match=f"shard {plan[-1].index} .* counted .* expected"):
        gather(plan, short, "certification", len)
    with pytest.raises(OnnxPruneError, match="came back twice"):
        gather(plan, full + full[:1], "certification", len)
    assert sorted(gather(plan, full, "certification", len)) == [s.index for s in plan]
    assert isinstance(plan[0], Shard)


def test_compress_ray_without_ray_is_one_clear_error_before_any_work(without_ray, tmp_path):
    from onnxprune import api

    with pytest.raises(OnnxPruneError, match=r"--ray needs Ray, which is not installed"):
        api.compress(tmp_path / "missing.onnx", ray="auto")  # refused before the model is even read


@pytest.mark.slow
def test_ray_certification_equals_the_single_process_run(setup, ray_local):
    m, data = setup
    grid = np.array([0.25, 0.5])
    s = PruneSettings(batch_size=32, criterion="l1")
    one = run(m, data, s, grid, 0.3, 0.1, loss="disagreement")
    many = run(m, data, s, grid, 0.3, 0.1, loss="disagreement", ray="auto")
    assert one.to_dict() == many.to_dict()


@pytest.mark.slow
def test_ray_retries_a_lost_worker_and_a_failed_range(setup, ray_local, tmp_path):
    m, data = setup
    one = _observe(m, data, "disagreement", 32, "dense")
    many = _observe(m, data, "disagreement", 32, "dense", ray="auto", shards=3, fault=str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-0", "shard-1"]  # both failed once, then ran
    np.testing.assert_array_equal(many, one)
