"""Parameter and MAC counts, checked by hand on small models."""
from pathlib import Path

import numpy as np
from units.generate import Builder
from units.helpers import TINY
from onnx import helper

from onnxprune.units.count import count
from onnxprune.units.groups import analyse
from onnxprune.rewrite.channels import remove_channels
from onnxprune.io.model import load_model

REPO = Path(__file__).resolve().parents[2]


def test_lenet300_by_hand():
    c = count(load_model(REPO / "models" / "lenet300_mnist.onnx"))
    assert c.params == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10 + 2  # + input scale and shift
    assert c.macs == 784 * 300 + 300 * 100 + 100 * 10
    assert not c.unknown


def test_conv_gemm_and_depthwise_by_hand():
    b = Builder(np.random.default_rng(0), batch="N", channels=3, hw=8)
    y = b.conv("x", 3, 4, k=3, bias=True)  # 4·3·9 + 4 params; 8·8·4 outputs × 27 MACs
    y = b.conv(y, 4, 4, k=3, group=4, bias=False)  # 36 params; 256 outputs × 9 MACs
    f = b.op("Flatten", [y], axis=1)[0]
    out = b._gemm(f, 256, 5)  # 256·5 + 5; 1280 MACs
    c = count(b.model(out))
    assert c.params == 112 + 36 + 1285
    assert c.macs == 256 * 27 + 256 * 9 + 1280
    assert [n.macs for n in c.nodes] == [256 * 27, 256 * 9, 1280]


def test_conv_transpose_and_matmul():
    b = Builder(np.random.default_rng(0), channels=2, hw=4)
    w = b.const(b.weight(2, 3, 2, 2), "wt")
    y = b.op("ConvTranspose", ["x", w], kernel_shape=[2, 2], strides=[2, 2])[0]  # each input elt → 3·4 outputs
    f = b.op("ReduceMean", [y, b.const(np.array([2, 3], np.int64))], keepdims=0)[0]
    out = b.op("MatMul", [f, b.const(b.weight(3, 7), "m")])[0]
    c = count(b.model(out))
    assert c.macs == 2 * (2 * 16) * 12 + 2 * 3 * 7  # batch 2 is fixed in this model's input


def test_constant_node_weights_are_counted():
    model = TINY["lenet5bn"]()
    expected = count(model).params
    g = model.graph
    consts = [helper.make_node("Constant", [], [t.name], value=t) for t in g.initializer]
    nodes = list(g.node)
    del g.initializer[:], g.node[:]
    g.node.extend(consts + nodes)
    assert count(model).params == expected


def test_pruning_reduces_counts_consistently():
    model = TINY["resnet"]()
    keep = {g.id: np.arange(g.size // 2 or 1) for g in analyse(model) if g.prunable}
    before, after = count(model), count(remove_channels(model, keep))
    assert after.params < before.params and after.macs < before.macs
