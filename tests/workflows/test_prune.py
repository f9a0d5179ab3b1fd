"""One pruning run: data reaches every stage explicitly; nothing is remembered between `prepare` and `build`."""
from __future__ import annotations

import numpy as np
import pytest
from builders import LENET300, MNIST_CALIB

from onnxprune.errors import OnnxPruneError
from onnxprune.io.data import Dataset, load_dataset
from onnxprune.io.model import load_model, serialize
from onnxprune.select.plan import PruneSettings
from onnxprune.workflows.prune import Candidate, prepare, prune, replay

SETTINGS = PruneSettings(mode="unstructured", criterion="magnitude", ratio=0.8)


@pytest.fixture(scope="module")
def lenet():
    return load_model(LENET300)


@pytest.fixture(scope="module")
def halves(lenet):
    data = load_dataset(MNIST_CALIB, lenet)
    return data.subset(np.arange(0, 300)), data.subset(np.arange(300, 600))


def test_prepared_holds_no_data(lenet, halves):
    prepared = prepare(lenet, halves[0], SETTINGS)
    assert not any(isinstance(v, Dataset) for v in vars(prepared).values())


def test_build_refits_on_exactly_the_data_it_is_given(lenet, halves):
    prepared = prepare(lenet, halves[0], SETTINGS)
    a, b = (prepared.build(0.8, d, reconstruct=True) for d in halves)
    again = prepared.build(0.8, halves[0], reconstruct=True)
    assert isinstance(a, Candidate) and a.plan.masks.keys() == b.plan.masks.keys()
    assert serialize(a.model) == serialize(again.model)
    assert serialize(a.model) != serialize(b.model)  # same plan, re-fitted on other samples


def test_reconstruct_without_data_is_a_clear_error(lenet):
    prepared = prepare(lenet, None, SETTINGS)
    with pytest.raises(OnnxPruneError, match="needs calibration data"):
        prepared.build(0.8, None, reconstruct=True)


def test_replay_reproduces_the_bytes(lenet, halves):
    r = prune(lenet, halves[0], SETTINGS)
    assert serialize(replay(lenet, r.plan, halves[0]).model) == serialize(r.model)


def test_saved_statistics_replace_the_pass_and_must_fit(tmp_path):
    """`--stats S.npz` reuses a saved pass: same plan as a fresh one; another model's or an incomplete file is refused."""
    import pytest
    from builders import LENET300, MNIST_CALIB
    from onnxprune import api
    from onnxprune.errors import OnnxPruneError

    s = tmp_path / "s.npz"
    api.stats(LENET300, MNIST_CALIB, s, criteria="fscreen")
    kw = dict(ratio=0.9, mode="unstructured", criterion="fscreen", reconstruct=False)
    fresh = api.prune(LENET300, tmp_path / "a.onnx", calib=MNIST_CALIB, **kw)
    reused = api.prune(LENET300, tmp_path / "b.onnx", stats=s, **kw)
    assert all((fresh.plan.masks[k] == reused.plan.masks[k]).all() for k in fresh.plan.masks)
    with pytest.raises(OnnxPruneError, match="lack what criterion 'wanda' needs"):
        api.prune(LENET300, tmp_path / "c.onnx", stats=s, **{**kw, "criterion": "wanda"})


def test_saved_statistics_serve_structured_pruning_too(tmp_path):
    """`onnxprune stats` collects what either mode asks of a criterion, so `prune --stats` works for channels."""
    from builders import MNIST_CALIB, REPO
    from onnxprune import api

    model = REPO / "models" / "lenet5bn_mnist.onnx"
    s = tmp_path / "s.npz"
    api.stats(model, MNIST_CALIB, s, criteria="fscreen")
    a = api.prune(model, tmp_path / "a.onnx", calib=MNIST_CALIB, ratio=0.5, reconstruct=False)
    b = api.prune(model, tmp_path / "b.onnx", stats=s, ratio=0.5, reconstruct=False)
    assert a.plan.channels == b.plan.channels and a.plan.channels


def test_macs_of_a_dynamic_sequence_model_are_counted_at_the_data_shape(tmp_path):
    """A Hugging Face-style export has a dynamic sequence length: its MACs are those of the data's 16 tokens,
    never 0 → 0."""
    import sys
    from pathlib import Path

    import onnx
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "transformers"))
    from tf_build import TOKEN_MODELS, TokenModel, export, randomise, token_inputs

    m = randomise(TokenModel(**TOKEN_MODELS["bert_ids"]), 0)
    model = export(m, token_inputs(m))
    onnx.save(model, tmp_path / "bert.onnx")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 11, (64, 16)).astype(np.int64)  # its vocabulary has 11 tokens
    names = [i.name for i in model.graph.input]
    np.savez(tmp_path / "d.npz", **{names[0]: ids, **({names[1]: np.ones_like(ids)} if len(names) > 1 else {})})
    loaded = load_model(tmp_path / "bert.onnx")
    data = load_dataset(tmp_path / "d.npz", loaded)
    report = prune(loaded, data, PruneSettings(mode="structured", ratio=0.5, reconstruct=False)).report
    assert 0 < report["macs"]["pruned"] < report["macs"]["dense"]
