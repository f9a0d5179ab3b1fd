"""reconstruct.blocks.BlockForward: the requested tensors, carried block to block, equal a pass from the data per
tensor — with one run of each node in all, weights read when each step starts, and a fallback for tensors whose
first axis is not the sample axis."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from units.generate import Builder
from units.helpers import TINY

from onnxprune.io.data import Dataset
from onnxprune.io.graph import initializer_map, set_initializer
from onnxprune.io.runtime import input_specs
from onnxprune.io.subgraph import upstream
from onnxprune.reconstruct import blocks
from onnxprune.reconstruct.blocks import BlockForward
from onnxprune.select.plan import PruneSettings
from onnxprune.stats import stream
from onnxprune.workflows.prune import prepare


def dataset(model: onnx.ModelProto, n: int, seed: int = 0) -> Dataset:
    spec = input_specs(model)[0]
    x = np.random.default_rng(seed).normal(size=(n, *spec.sample_shape)).astype(np.float32)
    return Dataset({spec.name: x}, None, input_specs(model))


def conv_inputs(model: onnx.ModelProto) -> list[str]:
    return [n.input[0] for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")][1:]


def from_data(model, data, t, batch) -> np.ndarray:
    return np.concatenate([b[t] for b in stream(model, data, [t], batch_size=batch)])


@pytest.mark.parametrize("arch", sorted(TINY))
def test_every_requested_tensor_equals_a_pass_from_the_data(arch):
    model = TINY[arch](0)
    data = dataset(model, 10)
    requests = conv_inputs(model)
    for t, chunks in zip(requests, BlockForward(model, requests).run(model, data, 4)):
        np.testing.assert_allclose(np.concatenate(list(chunks)), from_data(model, data, t, 4), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["resnet", "densenet"])
def test_each_node_runs_once_in_all(arch, monkeypatch):
    """The work is one pass: the pieces together hold each node the last request depends on exactly once."""
    model = TINY[arch](1)
    built: list[str] = []
    real = blocks.piece
    monkeypatch.setattr(blocks, "piece", lambda m, nodes, *a: built.extend(n.name for n in nodes) or real(m, nodes, *a))
    requests = conv_inputs(model)
    for chunks in BlockForward(model, requests).run(model, dataset(model, 8), 4):
        list(chunks)
    assert len(built) == len(set(built))
    assert set(built) == {n.name for n in upstream(model, [requests[-1]]).graph.node}


def test_a_step_sees_the_weights_as_they_are_when_it_starts():
    model = TINY["resnet"](2)
    data = dataset(model, 6)
    requests = conv_inputs(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    steps = BlockForward(model, requests).run(model, data, 2)
    list(next(steps))
    w = initializer_map(model)[convs[1].input[1]]
    set_initializer(model, convs[1].input[1], (w * 0.5).astype(w.dtype))  # what a re-fit does between steps
    np.testing.assert_allclose(np.concatenate(list(next(steps))), from_data(model, data, requests[1], 2),
                               rtol=1e-5, atol=1e-5)


def test_carried_bytes_per_sample_count_what_is_held_at_once():
    model = TINY["resnet"](0)
    data = dataset(model, 4)
    fwd = BlockForward(model, conv_inputs(model))
    from onnxprune.io.shapes import data_shapes, tensor_shapes
    shapes = tensor_shapes(model, data_shapes(data))
    biggest = max(4 * int(np.prod(shapes[t][1:])) for t in conv_inputs(model))
    per = fwd.bytes_per_sample(shapes)
    assert biggest <= per <= 4 * biggest  # a residual block holds its input and its branch at once


def _graph(nodes, inits, shape, name="g"):
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return m


def test_shape_computations_are_rerun_not_carried():
    """Reshape(h, [Shape(x)[0], -1]) after the first layer: the shape tensor depends on the batch (the last batch is
    smaller), so it is recomputed in each piece instead of being carried per sample."""
    rng = np.random.default_rng(0)
    inits = {"w1": rng.normal(size=(6, 6)).astype(np.float32), "w2": rng.normal(size=(12, 3)).astype(np.float32),
             "s0": np.array([0], np.int64), "s1": np.array([1], np.int64), "m1": np.array([-1], np.int64)}
    nodes = [helper.make_node("Shape", ["x"], ["sx"]), helper.make_node("Slice", ["sx", "s0", "s1"], ["n"]),
             helper.make_node("Concat", ["n", "m1"], ["tgt"], axis=0),
             helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Reshape", ["r", "tgt"], ["flat"]), helper.make_node("MatMul", ["flat", "w2"], ["y"])]
    model = _graph(nodes, inits, (2, 6))
    data = dataset(model, 7)
    requests = ["r", "flat"]
    fwd = BlockForward(model, requests)
    assert all("tgt" not in p.carried and "sx" not in p.carried for p in fwd.pieces)
    for t, chunks in zip(requests, fwd.run(model, data, 3)):
        np.testing.assert_allclose(np.concatenate(list(chunks)), from_data(model, data, t, 3), rtol=1e-6)


def test_a_tensor_without_the_sample_axis_first_falls_back_to_passes_from_the_data():
    """A [T, N, D] layout (an attention export) cannot be carried by samples: found before anything is yielded."""
    rng = np.random.default_rng(1)
    inits = {"w1": rng.normal(size=(4, 4)).astype(np.float32), "w2": rng.normal(size=(4, 4)).astype(np.float32)}
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             helper.make_node("MatMul", ["xt", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["h2"]),
             helper.make_node("Transpose", ["h2"], ["y"], perm=[1, 0, 2])]
    model = _graph(nodes, inits, (3, 4))
    data = dataset(model, 5)
    requests = ["xt", "r"]
    for t, chunks in zip(requests, BlockForward(model, requests).run(model, data, 2)):
        np.testing.assert_allclose(np.concatenate(list(chunks), axis=1), np.concatenate(
            [b[t] for b in stream(model, data, [t], batch_size=2)], axis=1), rtol=1e-6)


def long_skip_model(seed: int = 0) -> tuple[onnx.ModelProto, str]:
    """An LR-ASPP-like graph: an early feature map `low` feeds the next backbone block and, through a long skip,
    the head's last conv (after the high-level classifier in graph order); the two classifiers' outputs are added.
    Returns the model and `low`."""
    b = Builder(np.random.default_rng(seed))
    b.stem()
    b.conv_chain()
    low, c_low = b.x, b.c
    b.conv_chain()
    b.residual()
    b.conv_chain()
    high = b.seg_head(classes=4)
    low_cls = b.conv(low, c_low, 4, k=1, bias=True)  # the head's long skip: read after every backbone layer
    return b.model(b.op("Add", [high, low_cls])[0]), low


def test_an_early_tensor_read_by_the_last_block_is_carried_past_the_pieces_in_between():
    """The last request reads `low`, which the pieces in between neither compute nor read: it is still carried."""
    model, low = long_skip_model()
    requests = conv_inputs(model)
    assert requests[-1] == low and requests.count(low) == 2
    fwd = BlockForward(model, requests)
    assert all(low in p.carried for p in fwd.pieces[requests.index(low):-1])
    assert low not in fwd.pieces[-1].carried  # ... and dropped once its last reader has been served
    data = dataset(model, 6)
    for t, chunks in zip(requests, fwd.run(model, data, 2)):
        np.testing.assert_allclose(np.concatenate(list(chunks)), from_data(model, data, t, 2), rtol=1e-5, atol=1e-5)


def test_the_block_by_block_refit_of_a_long_skip_model_equals_the_per_layer_refit(monkeypatch):
    """The re-fit with inputs carried block to block gives the weights of the per-layer path (every layer's input
    from a pass over the data, the fallback `run` takes when a piece cannot be carried)."""
    model, low = long_skip_model(1)
    data = dataset(model, 32)
    settings = PruneSettings(batch_size=2, criterion="l1", round_to=1, allocation="uniform")
    prep = prepare(model, data, settings)
    fitted: list[str] = []
    real_run = BlockForward.run

    def run(self, m, d, *a, **k):
        fitted.extend(p.tensor for p in self.pieces)
        return real_run(self, m, d, *a, **k)
    monkeypatch.setattr(BlockForward, "run", run)
    carried = initializer_map(prep.build(0.5, data, reconstruct=True).model)
    assert fitted and fitted[-1] == low  # the long-skip reader is re-fitted, last

    def per_layer(self, p, *a):
        raise blocks._NotSampleLeading(p.tensor)
    monkeypatch.setattr(BlockForward, "_run_piece", per_layer)
    reference = initializer_map(prep.build(0.5, data, reconstruct=True).model)
    assert carried.keys() == reference.keys()
    for name, w in reference.items():
        np.testing.assert_allclose(carried[name], w, rtol=1e-4, atol=1e-5, err_msg=name)
