"""evaluate / check on models that are not (N, K) classifiers, and on models with a fixed batch size."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from robustness.exporters import cnn, data, dense_head, vector_head

from onnxprune.io.data import Dataset
from onnxprune.io.runtime import input_specs
from onnxprune.measure.check import check
from onnxprune.measure.evaluate import closeness, evaluate, predict


def _dataset(model: onnx.ModelProto, n: int = 24, labels: bool = True) -> Dataset:
    d = data(n=n, labels=labels)
    return Dataset({"x": d["x"]}, d.get("y"), input_specs(model), "gen")


def _scaled(model: onnx.ModelProto, name: str, factor: float) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        if t.name == name:
            a = onnx.numpy_helper.to_array(t) * np.float32(factor)
            t.CopyFrom(onnx.numpy_helper.from_array(a.astype(np.float32), name))
    return m


@pytest.mark.filterwarnings("error")  # never a raw numpy RuntimeWarning
def test_segmentation_agreement_is_per_position():
    m = dense_head()
    other = _scaled(m, "w2", -1.0)
    d = _dataset(m)
    e = evaluate(other, d, reference=m)
    ref = predict(m, d)
    assert ref.shape == (24, 64)  # per position
    assert e.kind == "dense" and e.accuracy is None and "per position" in e.note
    assert e.agreement == pytest.approx(float((predict(other, d) == ref).mean()))
    assert 0.0 < e.agreement < 1.0
    assert evaluate(m, d, reference=m).agreement == 1.0
    r = check(other, m, d, max_drop=1.0)
    assert r.kind == "dense" and r.passed and r.value == pytest.approx(1 - e.agreement)
    assert "per-position disagreement" in r.verdict()


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("kind", ["regression", "embedding"])
def test_outputs_without_classes_are_compared_by_cosine_and_relative_error(kind):
    m = vector_head(kind)
    d = _dataset(m)
    same = evaluate(m, d, reference=m)
    assert same.kind == "values" and same.accuracy is None and same.agreement is None
    assert same.cosine == pytest.approx(1.0) and same.rel_error == pytest.approx(0.0)
    other = _scaled(m, "w2", 1.1)
    e = evaluate(other, d, reference=m)
    assert e.rel_error > 0.0 and "cosine" in e.note
    r = check(other, m, d, max_drop=0.001)
    assert r.kind == "values" and not r.passed and r.metric == "relative_error" and r.value == pytest.approx(e.rel_error)


@pytest.mark.filterwarnings("error")
def test_closeness_handles_zero_outputs():
    z = np.zeros((3, 2), np.float32)
    assert closeness(z, z) == (1.0, 0.0)
    cos, rel = closeness(np.ones((3, 2), np.float32), z)
    assert rel == np.inf


def test_classifier_with_fixed_batch_one_evaluates_in_batches_of_one():
    m = cnn(batch=1, out_dims=[1, 4])
    d = _dataset(m, n=10)
    e = evaluate(m, d, reference=m, batch_size=256)
    assert e.n == 10 and e.agreement == 1.0 and e.accuracy is not None
    assert check(m, m, d, max_drop=0.0, batch_size=256).passed
