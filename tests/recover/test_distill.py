"""recover(): exact round trip at zero epochs, masks stay zero, BN re-estimation, determinism, augmentation policy."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from recover_builders import REPO, ArrayData, conv_chain, residual, tiny_data  # noqa: E402

from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.recover.distill import (_augment, _augment_plan, channels_last_safe, match_features,  # noqa: E402
                                       recover)
from onnxprune.recover.torch_graph import TorchGraph  # noqa: E402


def _mlp(seed: int = 0) -> onnx.ModelProto:
    """input (N, 1, 8, 8) → Flatten → Gemm 64→32 → Relu → Gemm 32→5."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.normal(size=(32, 64)) / 8).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.normal(size=32) * 0.1).astype(np.float32), "b1"),
             numpy_helper.from_array((rng.normal(size=(5, 32)) / 6).astype(np.float32), "w2"),
             numpy_helper.from_array(np.zeros(5, np.float32), "b2"),
             numpy_helper.from_array(np.float32(1 / 255), "scale")]
    nodes = [helper.make_node("Mul", ["input", "scale"], ["xs"], name="pre"),
             helper.make_node("Flatten", ["xs"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], transB=1, name="fc1"),
             helper.make_node("Relu", ["h"], ["a"], name="relu"),
             helper.make_node("Gemm", ["a", "w2", "b2"], ["out"], transB=1, name="fc2")]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 1, 8, 8])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return m


def _sparsify(m: onnx.ModelProto, frac: float, seed: int = 1) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(m)
    rng = np.random.default_rng(seed)
    for k, t in enumerate(out.graph.initializer):
        if t.name in ("w1", "w2"):
            a = numpy_helper.to_array(t).copy()
            a[rng.random(a.shape) < frac] = 0.0
            out.graph.initializer[k].CopyFrom(numpy_helper.from_array(a, t.name))
    return out


def _inits(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


def _valid(m: onnx.ModelProto, data) -> np.ndarray:
    onnx.checker.check_model(m, full_check=True)
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    y = s.run(None, next(data.batches(16)))[0]
    assert np.isfinite(y).all()
    return y


def test_zero_epochs_is_byte_identical() -> None:
    dense = conv_chain()
    pruned = _sparsify(dense, 0.0)
    out, rep = recover(pruned, dense, tiny_data(dense, 32), epochs=0, progress=False)
    assert out.SerializeToString() == pruned.SerializeToString()
    assert rep.epochs_run == 0 and rep.steps == 0


def test_unstructured_zeros_stay_exactly_zero() -> None:
    dense = _mlp()
    pruned = _sparsify(dense, 0.7)
    data = tiny_data(dense, 96)
    out, rep = recover(pruned, dense, data, epochs=3, batch_size=16, lr=0.05, augment=False,
                       holdout_fraction=0.1, progress=False)
    before, after = _inits(pruned), _inits(out)
    for nm in ("w1", "w2"):
        z = before[nm] == 0
        assert z.any()
        assert np.array_equal(after[nm] == 0, z), nm          # same zeros, no new ones
        assert np.all(after[nm][z] == 0) and not np.array_equal(after[nm], before[nm])
    assert rep.masked_tensors == 2 and rep.masked_zeros == int(sum((before[n] == 0).sum() for n in ("w1", "w2")))
    assert np.array_equal(after["scale"], before["scale"])    # preprocessing constant is frozen
    _valid(out, data)


def test_bn_running_stats_reestimated_and_model_valid() -> None:
    dense = residual()
    pruned = _sparsify(dense, 0.0)
    data = tiny_data(dense, 48)
    out, rep = recover(pruned, dense, data, epochs=1, batch_size=16, lr=0.01, augment=False,
                       bn_reestimate=True, progress=False)
    assert rep.bn_reestimated
    b, a = _inits(pruned), _inits(out)
    stats = [n.input[i] for n in dense.graph.node if n.op_type == "BatchNormalization" for i in (3, 4)]
    assert stats and all(not np.array_equal(a[s], b[s]) for s in stats)
    assert all((a[s] > 0).all() for s in stats[1::2])          # variances stay positive
    # the re-estimated statistics are the data's: a BN's running mean equals its input's mean over the data
    tg = TorchGraph(out).eval()
    bn = next(n for n in out.graph.node if n.op_type == "BatchNormalization")
    idx = np.sort(np.random.default_rng(0).permutation(48)[int(round(48 * 0.05)):])  # recover's train split
    x = data.inputs["input"][idx]
    with torch.no_grad():
        feat = tg.run({"input": x}, fetch=[bn.input[0]])[bn.input[0]]
    np.testing.assert_allclose(a[bn.input[3]], feat.mean((0, 2, 3)).numpy(), rtol=1e-4, atol=1e-4)
    _valid(out, data)


def test_deterministic_for_seed_and_threads() -> None:
    dense = conv_chain()
    pruned = _sparsify(dense, 0.0)
    for k, t in enumerate(pruned.graph.initializer):  # perturb so there is something to learn
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32 and a.ndim == 4:
            pruned.graph.initializer[k].CopyFrom(numpy_helper.from_array(a * 0.9, t.name))
    data = tiny_data(dense, 48)
    n_threads = torch.get_num_threads()
    runs = [recover(pruned, dense, data, epochs=2, batch_size=16, seed=s, threads=1, augment=True,
                    progress=False)[0].SerializeToString() for s in (3, 3, 4)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert torch.get_num_threads() == n_threads                # restored


def test_progress_callback_and_report() -> None:
    dense = _mlp()
    pruned = _sparsify(dense, 0.5)
    logs = []
    _, rep = recover(pruned, dense, tiny_data(dense, 64), epochs=2, batch_size=16, progress=logs.append)
    assert [lg.epoch for lg in logs] == [1, 2] and rep.epochs_run == 2
    assert all(lg.agreement is not None and np.isfinite(lg.loss) for lg in logs)
    assert rep.holdout_samples == 3 and rep.train_samples == 61
    assert rep.to_dict()["history"][0]["epoch"] == 1


def test_errors_before_training() -> None:
    dense = _mlp()
    with pytest.raises(OnnxPruneError, match="labels=True"):
        recover(dense, dense, tiny_data(dense, 16, labels=None), epochs=1, labels=True, progress=False)
    bad = onnx.ModelProto()
    bad.CopyFrom(dense)
    bad.graph.node[3].op_type = "TopK"
    with pytest.raises(OnnxPruneError, match="unsupported op TopK at node 'relu'"):
        recover(bad, dense, tiny_data(dense, 16), epochs=1, progress=False)


def test_augmentation_policy() -> None:
    cifar = {"input": np.zeros((2, 3, 32, 32), np.uint8)}
    mnist = {"input": np.zeros((2, 1, 28, 28), np.uint8)}
    assert _augment_plan(cifar, None)[:2] == (4, True)
    assert _augment_plan(mnist, None)[:2] == (2, False)
    assert _augment_plan({"input": np.zeros((2, 64), np.float32)}, None)[:2] == (0, False)
    assert _augment_plan({"input": np.zeros((2, 3, 8, 8), np.float32)}, None)[:2] == (0, False)
    assert _augment_plan(cifar, False)[:2] == (0, False)
    with pytest.raises(OnnxPruneError):
        _augment_plan({"input": np.zeros((2, 64), np.float32)}, True)
    x = np.arange(2 * 3 * 32 * 32, dtype=np.float32).reshape(2, 3, 32, 32)
    y = _augment(x, 4, True, np.random.default_rng(0))
    assert y.shape == x.shape and y.dtype == x.dtype


def test_match_features_identity_on_same_graph() -> None:
    dense = residual()
    tg = TorchGraph(dense)
    feed = {"input": tiny_data(dense, 32).inputs["input"]}
    idx = match_features(tg, dense, None, dense, feed, threads=1)
    assert idx and all(np.array_equal(v, np.arange(len(v))) for v in idx.values())


@pytest.mark.slow
def test_recovers_pruned_lenet300() -> None:
    """LeNet-300-100 at 95 % magnitude sparsity: one epoch on 2,000 calibration images raises agreement."""
    dense = onnx.load(REPO / "models" / "lenet300_mnist.onnx")
    pruned = _sparsify(dense, 0.0)
    for k, t in enumerate(pruned.graph.initializer):
        a = numpy_helper.to_array(t)
        if a.ndim == 2:
            thr = np.quantile(np.abs(a), 0.95)
            pruned.graph.initializer[k].CopyFrom(numpy_helper.from_array(np.where(np.abs(a) > thr, a, 0)
                                                                         .astype(a.dtype), t.name))
    with np.load(REPO / "calib_data" / "mnist_calib.npz") as z:
        data = ArrayData({"input": z["x"][:2000]}, z["y"][:2000])
    out, rep = recover(pruned, dense, data, epochs=2, holdout_fraction=0.1, progress=False)
    assert rep.agreement_after > rep.agreement_before
    assert all(np.array_equal(numpy_helper.to_array(a) == 0, numpy_helper.to_array(b) == 0)
               for a, b in zip(out.graph.initializer, pruned.graph.initializer) if a.dims and len(a.dims) == 2)


def test_bn_align_keeps_the_function_and_matches_batch_statistics() -> None:
    from onnxprune.recover.distill import _align_bn

    m = residual()
    tg = TorchGraph(m)
    x = tiny_data(m, 64, seed=5).inputs["input"]
    feed = {"input": torch.from_numpy(x)}
    with torch.no_grad():
        before = tg.eval().run(feed)["out"].clone()
    _align_bn(tg, {"input": x}, lambda b: {k: torch.from_numpy(v) for k, v in b.items()}, 64, 0, False,
              np.random.default_rng(0))
    with torch.no_grad():
        after_eval = tg.eval().run(feed)["out"]
        train_out = tg.train().run(feed)
    np.testing.assert_allclose(after_eval.numpy(), before.numpy(), rtol=1e-4, atol=1e-4)  # same inference function
    np.testing.assert_allclose(train_out["out"].numpy(), before.numpy(), rtol=2e-2, atol=2e-2)  # batch ≈ running


def test_time_budget_replans_and_stops() -> None:
    dense = _mlp()
    pruned = _sparsify(dense, 0.5)
    _, rep = recover(pruned, dense, tiny_data(dense, 64), epochs=100_000, batch_size=16, time_budget_s=1.0,
                     progress=False)
    assert rep.epochs_run < 100_000 and rep.epochs_planned < 100_000
    assert rep.wall_s < 30


def test_channels_last_only_when_every_conv_width_is_a_multiple_of_8() -> None:
    """torch's CPU conv backward on channels-last images aborts the process for widths like 7 or 9 (a Torch-Pruning
    ResNet-20, `--round-to 1`): such graphs train in the default layout; RGB/grey stems (3 or 1 inputs) are fine."""
    assert channels_last_safe(onnx.load(REPO / "models" / "resnet20_cifar10.onnx"))
    assert not channels_last_safe(conv_chain())  # its last conv has 6 output channels


def test_training_that_only_hurts_keeps_the_input_weights() -> None:
    """A learning rate that wrecks the student (held-out agreement falls far below the start) must not be written:
    the start is a candidate like every epoch, and the report says the input was kept (best epoch 0)."""
    dense = _mlp(0)
    data = tiny_data(dense, 400)
    out, rep = recover(dense, dense, data, epochs=2, lr=50.0, holdout_fraction=0.25, progress=False)
    assert rep.agreement_before == 1.0
    assert rep.best_epoch == 0 and rep.agreement_after == 1.0
    for name, a in _inits(dense).items():
        np.testing.assert_array_equal(_inits(out)[name], a)


def test_diverged_training_is_never_written() -> None:
    """A NaN student predicts class 0 everywhere, which can tie a start at chance on held-out agreement (a Torch-Pruning
    ResNet-20 trained without BN: 0.108 → 0.104): training that goes non-finite stops, says "diverged", and the
    written model is the best finite state (here the input); without a kept state it is an error, not NaN weights."""
    dense, student = _mlp(0), _mlp(1)
    data = tiny_data(dense, 400)
    out, rep = recover(student, dense, data, epochs=3, lr=1e30, holdout_fraction=0.25, progress=False)
    assert rep.stopped == "diverged" and rep.epochs_run == 1 and rep.best_epoch == 0
    assert not np.isfinite(rep.history[-1].loss)
    _valid(out, data)
    for name, a in _inits(student).items():
        np.testing.assert_array_equal(_inits(out)[name], a)
    with pytest.raises(OnnxPruneError, match="diverged"):
        recover(student, dense, data, epochs=3, lr=1e30, holdout_fraction=0.0, progress=False)
