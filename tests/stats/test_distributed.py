"""The statistics pass over shards merges to the single-process result; a lost shard is an error; Ray (optional)
runs the shards as tasks and retries a lost worker."""
from __future__ import annotations

import numpy as np
import pytest

from builders import convnet
from onnxprune.criteria.needs import default_requests
from onnxprune.errors import OnnxPruneError
from onnxprune.io.data import load_dataset
from onnxprune.stats import collect
from onnxprune.stats.collect import collect_partial
from onnxprune.stats.distributed import Shard, collect_sharded, merge_shards, plan_shards



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 3, 8, 8)).astype(np.float32) + 2.0  # a mean far from 0: exercises the re-basing
    y = rng.integers(0, 3, 500)
    np.savez(tmp / "d.npz", x=x, y=y)
    return tmp, convnet()


def same(a, b, rtol=1e-10) -> None:
    assert a.n == b.n and a.label_mode == b.label_mode and a.keys() == b.keys()
    for k in a.keys():
        va, vb = a.get(*k), b.get(*k)
        if k[1] in ("n", "class_n", "ri_count"):
            np.testing.assert_array_equal(va, vb, err_msg=str(k))  # counts exactly
        else:
            np.testing.assert_allclose(vb, va, rtol=rtol, atol=1e-12, err_msg=str(k))


@pytest.mark.parametrize("labels", ["true", "predicted"])
@pytest.mark.parametrize("shards", [1, 3, 7])
def test_sharded_pass_equals_one_pass(setup, labels, shards):
    tmp, m = setup
    data = load_dataset(tmp / "d.npz", m)
    reqs = default_requests(m, "all")
    one = collect(m, data, reqs, batch_size=32, labels=labels)
    many = collect_sharded(m, data, reqs, shards=shards, batch_size=32, labels=labels)
    same(one, many)
    assert many.meta["shards"] == min(shards, 16)


def test_shards_are_whole_batches_and_cover_every_sample():
    plan = plan_shards(500, 32, None, 7)
    assert plan[0].start == 0 and plan[-1].stop == 500
    assert all(a.stop == b.start for a, b in zip(plan, plan[1:]))
    assert all(s.start % 32 == 0 for s in plan) and sum(s.expected for s in plan) == 500
    fixed = plan_shards(10, 4, 4, 3)  # a fixed batch of 4: the pass drops the remainder of the last range only
    assert [(s.start, s.stop, s.expected) for s in fixed] == [(0, 4, 4), (4, 10, 4)]


def test_a_lost_or_short_shard_is_an_error_not_a_smaller_sample(setup):
    tmp, m = setup
    data = load_dataset(tmp / "d.npz", m)
    reqs = default_requests(m, "fscreen")
    plan = plan_shards(len(data), 32, None, 3)
    parts = [(s.index, collect_partial(m, data.range(s.start, s.stop), reqs, batch_size=32)) for s in plan]
    with pytest.raises(OnnxPruneError, match=r"1 shard\(s\) did not come back \(samples 160\.\.351\)"):
        merge_shards(plan, [parts[0], parts[2]], len(data))
    short = [Shard(s.index, s.start, s.stop, s.expected + (s.index == 2)) for s in plan]
    with pytest.raises(OnnxPruneError, match=r"shard 2 \(samples 352\.\.499\) counted 148 samples, expected 149"):
        merge_shards(short, parts, len(data))


def test_ray_missing_is_one_clear_error(setup, without_ray):
    from onnxprune import api

    tmp, m = setup
    with pytest.raises(OnnxPruneError, match=r"--ray needs Ray, which is not installed: pip install 'onnxprune\[ray"):
        api.stats(m, tmp / "d.npz", criteria="fscreen", ray="auto")


@pytest.mark.slow
def test_ray_pass_equals_one_pass_on_folder_data(setup, ray_local, tmp_path):
    from onnxprune.stats.distributed import ray_runner

    tmp, m = setup
    with np.load(tmp / "d.npz") as z:
        x, y = z["x"], z["y"]
    (tmp_path / "s").mkdir()
    for k, i in enumerate(range(0, 500, 120)):
        np.savez(tmp_path / "s" / f"{k:03d}.npz", x=x[i:i + 120], y=y[i:i + 120])
    reqs = default_requests(m, "all")
    one = collect(m, load_dataset(tmp / "d.npz", m), reqs, batch_size=32)
    many = collect_sharded(m, load_dataset(tmp_path / "s", m), reqs, shards=4, batch_size=32,
                           runner=ray_runner("auto"))
    same(one, many)


@pytest.mark.slow
def test_ray_retries_a_lost_worker_and_a_failed_task(setup, ray_local, tmp_path):
    from onnxprune.stats.distributed import ray_runner

    tmp, m = setup
    data = load_dataset(tmp / "d.npz", m)
    reqs = default_requests(m, "fscreen")
    one = collect(m, data, reqs, batch_size=32)
    many = collect_sharded(m, data, reqs, shards=3, batch_size=32, runner=ray_runner("auto", retries=2),
                           fault=str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-0", "shard-1"]  # both failed once, then ran
    same(one, many)
    assert many.n == 500


@pytest.mark.slow
def test_prepare_with_ray_gives_the_same_plan(setup, ray_local):
    from onnxprune.select.plan import PruneSettings
    from onnxprune.workflows.prune import prepare

    tmp, m = setup
    data = load_dataset(tmp / "d.npz", m)
    s = PruneSettings(ratio=0.5, batch_size=32)
    one = prepare(m, data, s).build(0.5, data, reconstruct=False).plan.to_json()
    many = prepare(m, data, s, ray="auto").build(0.5, data, reconstruct=False).plan.to_json()
    assert one == many
