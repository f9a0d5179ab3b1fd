"""Channel groups over whole graphs: coupling, offsets, hard stops, determinism, per-channel views."""
import numpy as np
from units.generate import Builder, random_model
from units.helpers import TINY
from onnx import numpy_helper

from onnxprune.units.groups import analyse


def test_residual_add_couples_every_conv_feeding_the_chain():
    b = Builder(np.random.default_rng(0))
    b.stem()
    c = b.c
    for _ in range(2):  # identity shortcuts: the stem conv and both second convs share one group
        y = b.bn(b.conv(b.op("Relu", [b.conv(b.x, c, c)])[0], c, c), c)
        b.x = b.op("Relu", [b.op("Add", [y, b.x])[0]])[0]
    groups = analyse(b.model(b.head()))
    residual = next(g for g in groups if len(g.producers) == 3)
    assert residual.prunable and residual.size == c
    assert len(residual.bn) == 3  # the stem BN and the two block BNs
    assert sum(g.prunable and len(g.producers) == 1 and g.size == c for g in groups) >= 2  # inner convs


def test_densenet_conv_is_consumed_by_every_later_layer_at_its_offset():
    groups = analyse(TINY["densenet"]())
    for g in groups:
        if g.prunable:
            offsets = {m.offset for m in g.members if m.role == "consumer"}
            assert all(o >= 0 for o in offsets)
    assert any(len([m for m in g.members if m.role == "bn"]) > 4 for g in groups)  # BNs of several later layers


def test_input_and_output_channels_are_never_prunable():
    groups = analyse(TINY["resnet"]())
    reasons = [g.reason for g in groups if not g.prunable]
    assert any("model input" in r for r in reasons) and any("graph output" in r for r in reasons)
    first = groups[0]
    assert not first.prunable and {m.role for m in first.members} >= {"const", "consumer"}  # input normalisation


def test_ids_are_deterministic_and_unique():
    for seed in range(10):
        a, b = analyse(random_model(seed)), analyse(random_model(seed))
        assert [(g.id, g.size, g.prunable, g.members) for g in a] == [(g.id, g.size, g.prunable, g.members) for g in b]
        assert len({g.id for g in a}) == len(a)


def test_prunable_groups_have_producers_and_consumers():
    for seed in range(30):
        for g in analyse(random_model(seed)):
            if g.prunable:
                assert g.producers and g.id == g.producers[0]
                assert any(m.role == "consumer" for m in g.members)
                assert g.activations and len(g.activations) == len(g.activation_offsets)
            else:
                assert g.reason


def test_gemm_head_statistics_tensor_is_before_flatten():
    model = TINY["lenet5bn"]()
    shapes = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in model.graph.value_info}
    last_conv = [g for g in analyse(model) if g.prunable and g.size != 8][-1]
    assert all(shapes[a] == 4 for a in last_conv.activations)


def test_unknown_op_groups_are_listed_with_reasons():
    seen = 0
    for seed in range(40):
        model = random_model(seed, unsupported=True)
        stopped = [g for g in analyse(model) if "Softmax" in g.reason or "LRN" in g.reason
                   or "channels" in g.reason and "node" in g.reason]
        seen += bool(stopped)
    assert seen == 40
