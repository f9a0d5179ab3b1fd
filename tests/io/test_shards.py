"""Folder data: `.npy` memmaps and `.npz` shards give the same statistics and evaluation as one `.npz`, with flat
memory, and a shard that disagrees is one clear error."""
from __future__ import annotations

import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from builders import convnet
from onnxprune.criteria.needs import default_requests
from onnxprune.errors import OnnxPruneError
from onnxprune.io.data import load_dataset
from onnxprune.io.shards import LazyArray, read_dir
from onnxprune.measure.evaluate import evaluate
from onnxprune.stats import collect
from onnxprune.workflows.certify import sample_hashes


def data(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3, 8, 8)).astype(np.float32), rng.integers(0, 3, n)


def write_shards(folder, x, y, size: int, compressed: bool = True):
    folder.mkdir(parents=True, exist_ok=True)
    save = np.savez_compressed if compressed else np.savez
    for k, i in enumerate(range(0, len(x), size)):
        save(folder / f"part-{k:04d}.npz", x=x[i:i + size], y=y[i:i + size])
    return folder


def same_stats(a, b) -> None:
    assert a.n == b.n and a.label_mode == b.label_mode and set(a._a) == set(b._a)
    for k, v in a._a.items():
        np.testing.assert_allclose(b._a[k], v, rtol=1e-10, atol=1e-12, err_msg=str(k))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shards")
    x, y = data(300)
    np.savez(tmp / "one.npz", x=x, y=y)
    write_shards(tmp / "shards", x, y, 70)  # uneven: 70·4 + 20
    (tmp / "mm").mkdir()
    np.save(tmp / "mm" / "x.npy", x)
    np.save(tmp / "mm" / "y.npy", y)
    (tmp / "named").mkdir()
    np.save(tmp / "named" / "input.npy", x)
    return tmp, convnet(), x, y


@pytest.mark.parametrize("kind", ["shards", "mm", "named"])
def test_folder_data_gives_the_same_statistics_and_evaluation(setup, kind):
    tmp, m, x, y = setup
    one = load_dataset(tmp / "one.npz", m)
    lazy = load_dataset(tmp / kind, m)
    assert isinstance(lazy.inputs["input"], LazyArray) and len(lazy) == 300
    reqs = default_requests(m, "all")
    labels = "predicted" if kind == "named" else "true"
    same_stats(collect(m, one, reqs, batch_size=64, labels=labels), collect(m, lazy, reqs, batch_size=64,
                                                                              labels=labels))
    if kind != "named":
        assert evaluate(m, one, batch_size=50).accuracy == evaluate(m, lazy, batch_size=50).accuracy


def test_lazy_array_indexing_matches_numpy(setup):
    tmp, _, x, _ = setup
    a = read_dir(tmp / "shards")["x"]
    assert a.shape == x.shape and a.dtype == x.dtype and a.ndim == 4 and len(a) == 300
    idx = np.array([299, 0, 69, 70, 140, 5, 5])
    np.testing.assert_array_equal(a[idx], x[idx])
    np.testing.assert_array_equal(a[65:145], x[65:145])
    np.testing.assert_array_equal(a[::37], x[::37])
    np.testing.assert_array_equal(a[-1], x[-1])
    np.testing.assert_array_equal(a[3:9, 1], x[3:9, 1])
    sub = a.take(np.arange(60, 250, 3))  # lazy, composable
    np.testing.assert_array_equal(sub[10:20], x[60:250:3][10:20])
    np.testing.assert_array_equal(sub.take([0, 5])[:], x[[60, 75]])
    np.testing.assert_array_equal(np.asarray(a), x)


def test_subset_and_sample_hashes_on_folder_data(setup):
    tmp, m, x, y = setup
    one, lazy = load_dataset(tmp / "one.npz", m), load_dataset(tmp / "shards", m)
    idx = np.sort(np.random.default_rng(0).permutation(300)[:120])
    s1, s2 = one.subset(idx), lazy.subset(idx)
    assert isinstance(s2.inputs["input"], LazyArray)
    np.testing.assert_array_equal(np.asarray(s2.inputs["input"]), s1.inputs["input"])
    np.testing.assert_array_equal(s2.labels, s1.labels)
    assert sample_hashes(s1) == sample_hashes(s2)


def test_a_shard_that_disagrees_is_one_error_naming_it(tmp_path):
    x, y = data(40)
    write_shards(tmp_path / "d", x, y, 10)
    np.savez(tmp_path / "d" / "part-0002.npz", x=x[:10, :, :4], y=y[:10])
    with pytest.raises(OnnxPruneError, match=r"part-0002\.npz: shard array 'x' has per-sample shape \(3, 4, 8\)"):
        load_dataset(tmp_path / "d", convnet())
    np.savez(tmp_path / "d" / "part-0002.npz", x=x[:10].astype(np.float64), y=y[:10])
    with pytest.raises(OnnxPruneError, match=r"part-0002\.npz: .*dtype float64.*part-0000\.npz has .*float32"):
        load_dataset(tmp_path / "d", convnet())
    np.savez(tmp_path / "d" / "part-0002.npz", x=x[:10])
    with pytest.raises(OnnxPruneError, match=r"part-0002\.npz: shard holds arrays x; the first shard"):
        load_dataset(tmp_path / "d", convnet())


def test_non_finite_value_in_a_later_shard_is_found(tmp_path):
    x, y = data(40)
    x[33, 0, 0, 0] = np.nan
    write_shards(tmp_path / "d", x, y, 10)
    with pytest.raises(OnnxPruneError, match=r"NaN or Inf values in 1 sample\(s\) \(indices 33\)"):
        load_dataset(tmp_path / "d", convnet())


def _peak(folder, m) -> int:
    tracemalloc.start()
    try:
        d = load_dataset(folder, m)  # includes the finite-value check over every sample
        for _ in d.batches(50):
            pass
        sample_hashes(d)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_flat_in_the_number_of_shards(tmp_path, monkeypatch):
    import onnxprune.io.data as io_data

    monkeypatch.setattr(io_data, "CHUNK", 64)  # checks read 64 samples at a time (4096 in use: tiny data fits)
    m = convnet()
    x, y = data(800)
    small = write_shards(tmp_path / "small", x[:200], y[:200], 50)
    big = write_shards(tmp_path / "big", x, y, 50)  # 4x the shards and samples
    p_small, p_big = _peak(small, m), _peak(big, m)
    # labels (8 bytes a sample) and per-sample hashes (~50 bytes) grow with N; the inputs (768 bytes a sample) do not
    assert p_big - p_small < 150 * 600, (p_small, p_big)
    assert p_big < 800 * 768  # less than the inputs of the big folder


def test_folder_mixing_npz_and_npy_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 8, 8), np.float32))
    np.savez(tmp_path / "s.npz", x=np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(OnnxPruneError, match="both .npz shards and .npy files"):
        load_dataset(tmp_path, convnet())
