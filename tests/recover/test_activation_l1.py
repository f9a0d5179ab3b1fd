"""Pruning-aware training (paper 003): an L1 penalty λ·mean|a| on the outputs of the prunable neurons, added to the
recovery loss — exactly that term, nothing at λ = 0, and smaller activations when λ is large."""
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
from recover_builders import ArrayData, residual, tiny_data  # noqa: E402

from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.recover.distill import (_Optimizer, activation_tensors, check_activation_l1, recover,  # noqa: E402
                                       train_step)
from onnxprune.recover.torch_graph import TorchGraph  # noqa: E402

HIDDEN = ["a1", "a2"]  # the two hidden layers' neuron outputs (32 and 16 neurons)


def _mlp(seed: int = 0) -> onnx.ModelProto:
    """input (N, 1, 8, 8) → Flatten → Gemm 64→32 → Relu (a1) → Gemm 32→16 → Relu (a2) → Gemm 16→5."""
    rng = np.random.default_rng(seed)
    def w(*s: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.normal(size=s) / np.sqrt(s[-1])).astype(np.float32), f"w{s}")

    inits = [w(32, 64), w(16, 32), w(5, 16),
             numpy_helper.from_array((rng.normal(size=32) * 0.1).astype(np.float32), "b1"),
             numpy_helper.from_array((rng.normal(size=16) * 0.1).astype(np.float32), "b2"),
             numpy_helper.from_array(np.zeros(5, np.float32), "b3")]
    nodes = [helper.make_node("Flatten", ["input"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w(32, 64)", "b1"], ["h1"], transB=1, name="fc1"),
             helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
             helper.make_node("Gemm", ["a1", "w(16, 32)", "b2"], ["h2"], transB=1, name="fc2"),
             helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
             helper.make_node("Gemm", ["a2", "w(5, 16)", "b3"], ["out"], transB=1, name="fc3")]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 1, 8, 8])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.checker.check_model(m, full_check=True)
    return m


def _data(n: int, seed: int = 0) -> ArrayData:
    rng = np.random.default_rng(seed)
    return ArrayData({"input": rng.normal(size=(n, 1, 8, 8)).astype(np.float32)}, None)


def _run(m: onnx.ModelProto, x: np.ndarray, names: list[str]) -> list[np.ndarray]:
    """`names` computed by onnxruntime (an independent reference for the torch training graph)."""
    m2 = onnx.ModelProto()
    m2.CopyFrom(m)
    for n in names:
        if n not in {o.name for o in m2.graph.output}:
            m2.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
    s = ort.InferenceSession(m2.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(names, {"input": x})


def _step(m: onnx.ModelProto, x: np.ndarray, t_logits: np.ndarray, **kw) -> tuple[float, dict[str, np.ndarray]]:
    """One train_step on a fresh student; the loss it reports and the weights after it."""
    g = TorchGraph(m)
    opt = _Optimizer([{"params": [g.tensor(n) for n in g.trainable_names()], "weight_decay": 0.0}], "sgd", 0.1)
    (loss, _, _), _ = train_step(g, opt, {}, {"input": torch.from_numpy(x)}, t_logits, temperature=4.0, lr=0.1, **kw)
    return loss, {n: g.tensor(n).detach().numpy().copy() for n in g.trainable_names()}


def test_penalised_tensors_are_the_hidden_neurons_outputs() -> None:
    """Not the input (or its flattened copy: no parameter moves it) and not the logits (not a prunable unit)."""
    assert activation_tensors(_mlp()) == HIDDEN


def test_the_penalty_is_lambda_times_the_mean_absolute_neuron_output() -> None:
    """On a fixed batch the loss grows by exactly λ·Σ|a| / (number of activations), pooled over both layers."""
    m, x = _mlp(), _data(48).inputs["input"]
    t_logits = _run(_mlp(seed=1), x, ["out"])[0]
    a1, a2 = _run(m, x, HIDDEN)
    mean_abs = (np.abs(a1).sum() + np.abs(a2).sum()) / (a1.size + a2.size)
    assert a1.size != a2.size and mean_abs > 0.1
    plain, _ = _step(m, x, t_logits)
    for lam in (0.5, 3.0):
        penalised, _ = _step(m, x, t_logits, activation_l1=lam, l1_tensors=HIDDEN)
        assert penalised - plain == pytest.approx(lam * mean_abs, rel=1e-5)


def test_lambda_zero_is_byte_identical() -> None:
    m, x = _mlp(), _data(32).inputs["input"]
    t_logits = _run(_mlp(seed=1), x, ["out"])[0]
    loss0, w0 = _step(m, x, t_logits)
    loss1, w1 = _step(m, x, t_logits, activation_l1=0.0, l1_tensors=HIDDEN)
    assert loss0 == loss1 and all(w0[k].tobytes() == w1[k].tobytes() for k in w0)
    dense, data = _mlp(seed=1), _data(200)
    a, _ = recover(m, dense, data, epochs=2, progress=False)
    b, rep = recover(m, dense, data, epochs=2, progress=False, activation_l1=0.0)
    assert a.SerializeToString() == b.SerializeToString() and rep.settings["activation_l1"] == 0.0
    c, _ = recover(m, dense, data, epochs=2, progress=False, activation_l1=0.1)
    assert c.SerializeToString() != a.SerializeToString()


def test_a_large_lambda_drives_the_neuron_outputs_down() -> None:
    """Distilling the dense model into itself: without the penalty the activations stay put; with a large λ their
    mean magnitude falls to a fraction, deterministically (same seed, same bytes)."""
    dense, data = _mlp(), _data(400)
    x = data.inputs["input"]

    def mean_abs(m: onnx.ModelProto) -> float:
        a1, a2 = _run(m, x, HIDDEN)
        return float((np.abs(a1).sum() + np.abs(a2).sum()) / (a1.size + a2.size))

    plain, _ = recover(dense, dense, data, epochs=4, lr=0.1, progress=False)
    pat, rep = recover(dense, dense, data, epochs=4, lr=0.1, progress=False, activation_l1=10.0)
    again, _ = recover(dense, dense, data, epochs=4, lr=0.1, progress=False, activation_l1=10.0)
    assert again.SerializeToString() == pat.SerializeToString()
    assert rep.epochs_run == 4 and rep.best_epoch > 0  # the untrained start is no candidate with the penalty on
    assert mean_abs(plain) == pytest.approx(mean_abs(dense), rel=0.2)
    assert mean_abs(pat) < 0.25 * mean_abs(dense)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_lambda_must_be_finite_and_non_negative(bad: float) -> None:
    with pytest.raises(OnnxPruneError, match="--activation-l1"):
        check_activation_l1(bad)
    with pytest.raises(OnnxPruneError, match="--activation-l1"):
        recover(_mlp(), _mlp(), _data(20), epochs=1, progress=False, activation_l1=bad)


def test_a_model_without_prunable_neurons_is_refused() -> None:
    """One Gemm straight from input to output: no neuron output to penalise — an error, not a silent no-op."""
    m = _mlp()
    single = helper.make_graph([helper.make_node("Flatten", ["input"], ["f"]),
                                helper.make_node("Gemm", ["f", "w", "b"], ["out"], transB=1)], "one",
                               list(m.graph.input), list(m.graph.output),
                               [numpy_helper.from_array(np.ones((5, 64), np.float32), "w"),
                                numpy_helper.from_array(np.zeros(5, np.float32), "b")])
    one = helper.make_model(single, opset_imports=[helper.make_opsetid("", 18)])
    one.ir_version = 9
    with pytest.raises(OnnxPruneError, match="no prunable neurons"):
        recover(one, one, _data(20), epochs=1, progress=False, activation_l1=0.1)


def test_a_residual_conv_net_penalises_its_channel_maps_and_trains() -> None:
    """CNNs: the penalised tensors are the channel maps the prunable groups' consumers read (the residual stream
    after each Add + Relu counts once), BatchNorm included; one epoch trains and writes a valid model."""
    m = residual()
    names = activation_tensors(m)
    assert names and all(n in {o for node in m.graph.node for o in node.output} for n in names)
    assert set(names) <= {node.output[0] for node in m.graph.node if node.op_type in ("Relu", "GlobalAveragePool")}
    out, rep = recover(m, m, tiny_data(m, 64), epochs=1, progress=False, activation_l1=0.5)
    onnx.checker.check_model(out, full_check=True)
    assert rep.steps > 0 and out.SerializeToString() != m.SerializeToString()
