"""Folder data: `.npy` memmaps and `.npz` shards give the same statistics and evaluation as one `.npz`, with flat
memory, and a shard that disagrees is one clear error."""
from __future__ import annotations

import pickle
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


@pytest.mark.parametrize("compressed", [True, False])
def test_lazy_array_indexing_matches_numpy(setup, tmp_path, compressed):
    _, _, x, y = setup
    a = read_dir(write_shards(tmp_path / "d", x, y, 70, compressed))["x"]
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
    for i, j in [(200, 210), (5, 8), (6, 9), (209, 211)]:  # forward, back (a compressed shard starts over), …
        np.testing.assert_array_equal(a[i:j], x[i:j])
    b = pickle.loads(pickle.dumps(a))  # mid-stream: pickles as names and indices
    np.testing.assert_array_equal(b[[7, 3, 3, 250]], x[[7, 3, 3, 250]])


def test_a_damaged_compressed_shard_is_one_error_naming_it(tmp_path):
    x, y = data(40)
    folder = write_shards(tmp_path / "d", x, y, 20)
    shard = folder / "part-0001.npz"
    raw = bytearray(shard.read_bytes())
    mid = len(raw) // 3
    raw[mid:mid + 200] = bytes(200)  # zeros in the middle of the deflated data
    shard.write_bytes(bytes(raw))
    with pytest.raises(OnnxPruneError, match=r"part-0001\.npz: cannot read 'x' \(bad CRC-32"):
        load_dataset(folder, convnet())  # the headers are fine; the finite-value check reads every sample


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


def _peaks(folder, m) -> tuple[int, int]:
    """(peak of loading with its checks + one batched pass, peak added on top of that by the sample hashes)."""
    tracemalloc.start()
    try:
        d = load_dataset(folder, m)  # includes the finite-value check over every sample
        for _ in d.batches(50):
            pass
        first = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        sample_hashes(d)
        return first, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("compressed", [True, False])
def test_memory_is_flat_in_the_number_of_shards(tmp_path, monkeypatch, compressed):
    import onnxprune.io.data as io_data

    monkeypatch.setattr(io_data, "CHUNK", 64)  # checks read 64 samples at a time (4096 in use: tiny data fits)
    m = convnet()
    x, y = data(800)
    small = write_shards(tmp_path / "small", x[:200], y[:200], 50, compressed)
    big = write_shards(tmp_path / "big", x, y, 50, compressed)  # 4x the shards and samples
    (pass_small, hash_small), (pass_big, hash_big) = _peaks(small, m), _peaks(big, m)
    # the inputs are 768 bytes a sample: 600 more samples would be 460 KB. What may grow with N is the labels
    # (8 bytes a sample) and the per-sample hashes (~70 bytes); reads are a chunk or a batch, never a shard.
    assert pass_big - pass_small < 100 * 768, (pass_small, pass_big)
    assert hash_big - hash_small < 600 * 70 + 64 * 768, (hash_small, hash_big)
    assert max(pass_big, hash_big) < 800 * 768 / 2  # less than half the inputs of the big folder


def test_a_read_touches_only_the_samples_it_asks_for(tmp_path):
    x, y = data(1000)
    for compressed in (True, False):
        folder = write_shards(tmp_path / f"c{compressed}", x, y, 1000, compressed)  # one big shard
        a = read_dir(folder)["x"]
        tracemalloc.start()
        try:
            rows = a[[10, 500, 501, 999]]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        np.testing.assert_array_equal(rows, x[[10, 500, 501, 999]])
        assert peak < 1000 * 768 / 4, (compressed, peak)  # a whole shard would be 768 KB


def test_folder_mixing_npz_and_npy_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 8, 8), np.float32))
    np.savez(tmp_path / "s.npz", x=np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(OnnxPruneError, match="both .npz shards and .npy files"):
        load_dataset(tmp_path, convnet())
