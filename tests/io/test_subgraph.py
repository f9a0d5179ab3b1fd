"""graph.subgraph.upstream: a model cut to what some tensors depend on computes them unchanged."""
from __future__ import annotations

import numpy as np
import onnx
from units.helpers import TINY, sample_input

from onnxprune.io.subgraph import upstream
from onnxprune.io.runtime import make_session


def fetch(model: onnx.ModelProto, x: np.ndarray, tensors: list[str]) -> list[np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
    sess = make_session(m, threads=1)
    return sess.run(tensors, {sess.get_inputs()[0].name: x})


def test_an_early_tensor_keeps_only_its_prefix_and_its_value():
    model = TINY["resnet"](0)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    t = convs[2].input[0]
    cut = upstream(model, [t])
    assert [o.name for o in cut.graph.output] == [t]
    assert len(cut.graph.node) < len(model.graph.node)
    assert {i.name for i in cut.graph.initializer} <= {i for n in cut.graph.node for i in n.input}
    x = sample_input(model, np.random.default_rng(0))
    np.testing.assert_array_equal(fetch(cut, x, [t])[0], fetch(model, x, [t])[0])


def test_several_tensors_and_the_last_one_keep_every_node_they_need():
    model = TINY["densenet"](1)
    last = model.graph.output[0].name
    first = next(n for n in model.graph.node if n.op_type == "Conv").output[0]
    cut = upstream(model, [first, last])
    assert len(cut.graph.node) == len(model.graph.node)  # the output needs everything
    x = sample_input(model, np.random.default_rng(1))
    for a, b in zip(fetch(cut, x, [first, last]), fetch(model, x, [first, last])):
        np.testing.assert_array_equal(a, b)


def test_the_input_model_is_not_modified():
    model = TINY["resnet"](2)
    before = model.SerializeToString()
    upstream(model, [next(n for n in model.graph.node if n.op_type == "Conv").output[0]])
    assert model.SerializeToString() == before


def test_a_piece_between_two_tensors_computes_the_later_from_the_earlier():
    """`between` + `piece`: the nodes from one tensor to another, as a model of their own with only their weights."""
    from onnxprune.io.subgraph import between, piece

    model = TINY["resnet"](3)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    a, b = convs[1].input[0], convs[1].output[0]
    nodes = between(model, {a}, [b])
    assert [n.name for n in nodes] == [convs[1].name]  # nothing before `a` runs
    p = piece(model, nodes, [(a, onnx.TensorProto.FLOAT)], [(b, onnx.TensorProto.FLOAT)])
    assert {t.name for t in p.graph.initializer} <= {x for n in p.graph.node for x in n.input}
    x = sample_input(model, np.random.default_rng(4))
    xa, xb = fetch(model, x, [a, b])
    np.testing.assert_allclose(make_session(p, threads=1).run([b], {a: xa})[0], xb, rtol=1e-5, atol=1e-6)
