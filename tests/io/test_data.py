"""data: calibration files are validated against the model up front, with one-line errors."""
from __future__ import annotations

import numpy as np
import pytest

from onnxprune.io.data import load_dataset
from onnxprune.errors import OnnxPruneError

from builders import tiny_mlp


def _npz(tmp_path, **arrays):
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    return p


def test_labelled_data_loads_and_batches_cast_to_model_dtype(tmp_path):
    d = load_dataset(_npz(tmp_path, x=np.arange(40, dtype=np.uint8).reshape(10, 4), y=np.arange(10) % 2), tiny_mlp())
    assert len(d) == 10 and d.labelled
    batches = list(d.batches(4))
    assert [len(b["input"]) for b in batches] == [4, 4, 2]
    assert batches[0]["input"].dtype == np.float32


def test_unlabelled_data_is_allowed(tmp_path):
    d = load_dataset(_npz(tmp_path, x=np.zeros((3, 4), np.float32)), tiny_mlp())
    assert not d.labelled


def test_wrong_feature_shape_names_both_shapes(tmp_path):
    with pytest.raises(OnnxPruneError, match=r"shape \(3, 5\).*input: \(N,4\)"):
        load_dataset(_npz(tmp_path, x=np.zeros((3, 5), np.float32)), tiny_mlp())


def test_missing_input_array(tmp_path):
    with pytest.raises(OnnxPruneError, match="no array for model input 'input'"):
        load_dataset(_npz(tmp_path, images=np.zeros((3, 4), np.float32)), tiny_mlp())


def test_labels_must_match_sample_count(tmp_path):
    with pytest.raises(OnnxPruneError, match="'y' has shape"):
        load_dataset(_npz(tmp_path, x=np.zeros((3, 4), np.float32), y=np.zeros(4, np.int64)), tiny_mlp())


def test_float_labels_are_rejected(tmp_path):
    with pytest.raises(OnnxPruneError, match="integer class labels"):
        load_dataset(_npz(tmp_path, x=np.zeros((3, 4), np.float32), y=np.zeros(3)), tiny_mlp())


def test_not_an_npz(tmp_path):
    p = tmp_path / "d.npz"
    p.write_text("nope")
    with pytest.raises(OnnxPruneError, match="not a readable .npz"):
        load_dataset(p, tiny_mlp())


def test_empty_data(tmp_path):
    with pytest.raises(OnnxPruneError, match="no samples"):
        load_dataset(_npz(tmp_path, x=np.zeros((0, 4), np.float32)), tiny_mlp())


# ---------------------------------------------------------------------------------------------------- issue 13
def test_nan_and_inf_name_the_first_bad_samples(tmp_path):
    x = np.zeros((1000, 4), np.float32)
    x[[7, 300, 999], 1] = [np.nan, np.inf, -np.inf]
    with pytest.raises(OnnxPruneError, match=r"NaN or Inf values in 3 sample\(s\) \(indices 7, 300, 999\)"):
        load_dataset(_npz(tmp_path, x=x), tiny_mlp())
    x[:20, 0] = np.nan  # many: the first five, and an ellipsis
    with pytest.raises(OnnxPruneError, match=r"in 22 sample\(s\) \(indices 0, 1, 2, 3, 4, …\)"):
        load_dataset(_npz(tmp_path, x=x), tiny_mlp())


def test_integer_inputs_need_no_finite_check(tmp_path):
    assert len(load_dataset(_npz(tmp_path, x=np.full((3, 4), 255, np.uint8)), tiny_mlp())) == 3


def test_labels_must_lie_below_the_models_class_count(tmp_path):
    """tiny_mlp has 2 outputs: a label 2 (or 1,000,000) is refused up front, naming the sample."""
    x = np.zeros((5, 4), np.float32)
    with pytest.raises(OnnxPruneError, match=r"labels up to 2, but the model's output gives 2 classes .*indices 4"):
        load_dataset(_npz(tmp_path, x=x, y=np.array([0, 1, 0, 1, 2])), tiny_mlp())
    with pytest.raises(OnnxPruneError, match="labels up to 1000000"):
        load_dataset(_npz(tmp_path, x=x, y=np.array([0, 1, 0, 1, 1_000_000])), tiny_mlp())
    with pytest.raises(OnnxPruneError, match=r"negative labels \(samples indices 1\)"):
        load_dataset(_npz(tmp_path, x=x, y=np.array([0, -1, 0, 1, 1])), tiny_mlp())


def test_fixed_batch_is_honoured_whatever_batch_size_is_asked(tmp_path):
    from robustness.exporters import cnn, data

    d = load_dataset(_npz(tmp_path, **data(n=10)), cnn(batch=1))
    assert [len(b["x"]) for b in d.batches(256)] == [1] * 10
    d4 = load_dataset(_npz(tmp_path, **data(n=10)), cnn(batch=4))
    assert len(d4) == 8 and "fixes its batch size to 4: using the first 8 of 10" in d4.notes[0]
    assert [len(b["x"]) for b in d4.batches(3)] == [4, 4]
    assert len(d4.subset(np.arange(6))) == 4
    with pytest.raises(OnnxPruneError, match="at least 4"):
        load_dataset(_npz(tmp_path, **data(n=3)), cnn(batch=4))
