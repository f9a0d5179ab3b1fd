"""Training-time pruning's ingredients: the logistic annealing schedule (001 Fig. 1), the F statistics accumulated
online from training forward passes (001 §3.2), and a distillation run whose student is swapped between epochs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from builders import MNIST_CALIB, REPO
from onnxprune.errors import OnnxPruneError
from onnxprune.io.data import load_dataset
from onnxprune.io.graph import initializer_map
from onnxprune.modes import get as get_mode
from onnxprune.recover.distill import Cosine, Distiller
from onnxprune.recover.schedule import OnlineScreen, annealed_ratios, online_supported
from onnxprune.recover.torch_graph import TorchGraph
from onnxprune.rewrite.masks import masked
from onnxprune.select.plan import PruneSettings
from onnxprune.stats import collect

LENET5BN = REPO / "models" / "lenet5bn_mnist.onnx"
LENET300 = REPO / "models" / "lenet300_mnist.onnx"


def _mnist(model: onnx.ModelProto, n: int):
    return load_dataset(MNIST_CALIB, model).subset(np.arange(n))


@pytest.mark.parametrize("steps", [1, 2, 5, 12])
@pytest.mark.parametrize("rate", [0.0, 2.0, 4.0, 8.0])
def test_annealed_ratios_rise_monotonically_to_the_target(steps, rate):
    r = annealed_ratios(0.6, steps, rate)
    assert len(r) == steps and r[-1] == 0.6
    assert all(0 < a < b for a, b in zip(r, r[1:])) and r[0] > 0


def test_annealing_is_logistic_slow_then_fast_then_slow():
    r = np.diff([0.0] + annealed_ratios(1 - 1e-9, 10, 4.0))
    assert r[0] < r[4] and r[-1] < r[5]  # small first and last increments, the largest in the middle
    assert np.allclose(annealed_ratios(0.5, 4, 0.0), [0.125, 0.25, 0.375, 0.5])  # rate 0: linear


def test_annealing_rejects_bad_arguments():
    with pytest.raises(OnnxPruneError):
        annealed_ratios(0.5, 0)
    with pytest.raises(OnnxPruneError):
        annealed_ratios(1.0, 3)


@pytest.mark.parametrize("mode", ["structured", "unstructured"])
def test_online_F_equals_the_onnxruntime_pass_on_the_same_forward_passes(mode):
    """001 §3.2: the sufficient statistics merge over batches, so F accumulated from torch forward passes (here in
    inference mode, un-augmented) equals the one-pass onnxruntime statistics the one-shot path uses."""
    model = onnx.load(str(LENET5BN))
    data = _mnist(model, 160)
    settings = PruneSettings(mode=mode)
    reqs = get_mode(mode).requests(model, settings)
    assert online_supported(reqs)
    screen = OnlineScreen(reqs)
    g = TorchGraph(model)
    g.eval()
    name = g.input_names[0]
    with torch.no_grad():
        for i in range(0, 160, 64):
            x = torch.from_numpy(data.inputs[name][i:i + 64].astype(np.float32))
            screen.update(g.run({name: x}, fetch=screen.tensors), data.labels[i:i + 64])
    online = screen.stats("h", "true")
    offline = collect(model, data, reqs, batch_size=64, labels="true")
    for t in screen.tensors:
        a, b = online.get(t, "f"), offline.get(t, "f")
        assert a.shape == b.shape and np.all(np.isfinite(b))
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


@pytest.mark.slow
def test_masks_stay_exactly_zero_when_the_student_is_swapped_between_epochs():
    """Training-time pruning adds zeros between epochs (`set_student` with a more sparse model); every zero of the
    current student stays exactly zero through the optimiser steps, and the written model is the trained graph."""
    dense = onnx.load(str(LENET300))
    data = _mnist(dense, 400)
    mode, s = get_mode("unstructured"), PruneSettings(mode="unstructured", criterion="magnitude")
    scores = mode.score(dense, None, s)
    m1 = masked(dense, mode.select(dense, scores, 0.5, s))
    torch.manual_seed(0)
    d = Distiller(m1, dense, data, batch_size=64, lr=0.1)
    lr = Cosine(d.base_lr, 2 * d.steps_per_epoch, 0.0)
    d.epoch(lr)
    trained = d.written()
    m2 = masked(trained, mode.select(trained, mode.score(trained, None, s), 0.8, s))
    zeros2 = {k: v == 0 for k, v in initializer_map(m2).items() if v.ndim == 2}
    d.set_student(m2)
    d.epoch(lr)
    out = initializer_map(d.written())
    assert sum(int(z.sum()) for z in zeros2.values()) >= 0.79 * sum(z.size for z in zeros2.values())
    for k, z in zeros2.items():
        assert z.any()
        assert np.all(out[k][z] == 0), k
        assert np.any(out[k][~z] != initializer_map(m2)[k][~z]), k  # the kept weights did train
