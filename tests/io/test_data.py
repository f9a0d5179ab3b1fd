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
