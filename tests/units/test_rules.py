"""The per-op channel rules, one small graph each."""
import numpy as np
import pytest
from units.generate import Builder

from onnxprune.units.groups import ChannelGroup, analyse
from onnxprune.units.table import RULES

KINDS = {"pass", "norm", "elementwise", "producer", "index", "stop"}


def stem(c: int = 4, **kw) -> Builder:
    b = Builder(np.random.default_rng(0), **kw)
    b.stem()
    b.x, b.c = b.conv(b.x, b.c, c, bias=False), c
    b.target = b.x  # the conv whose group each test inspects
    return b


def finish(b: Builder) -> list[ChannelGroup]:
    return analyse(b.model(b._gemm(b.op("Flatten", [b.op("GlobalAveragePool", [b.x])[0]], axis=1)[0], b.c, 3)))


def group_of(groups: list[ChannelGroup], tensor: str) -> ChannelGroup:
    """The group opened by the conv that outputs `tensor`."""
    return next(g for g in groups if tensor.split("_out")[0] in g.producers)


def target(b: Builder) -> ChannelGroup:
    return group_of(finish(b), b.target)


def test_every_rule_has_a_documented_kind():
    assert {r.kind for r in RULES.values()} <= KINDS
    assert {"Conv", "Gemm", "BatchNormalization", "Add", "Mul", "Concat", "Split", "Slice", "Flatten", "Reshape",
            "Relu", "GlobalAveragePool", "MaxPool", "Resize", "Pad", "ConvTranspose", "MatMul"} <= set(RULES)


@pytest.mark.parametrize("shape", [(4, 1, 1), (1, 4, 1, 1), (4, 3, 3)])
def test_per_channel_constant_is_a_member(shape):
    b = stem()
    b.x = b.op("Mul", [b.x, b.const(np.ones(shape, np.float32), "k")])[0] if shape != (4, 3, 3) else b.x
    g = target(b)
    consts = [m for m in g.members if m.role == "const"]
    if shape == (4, 3, 3):
        assert not consts
    else:
        assert len(consts) == 1 and consts[0].axis == len(shape) - 3 and g.prunable


def test_scalar_constant_is_pass_through_without_member():
    b = stem()
    b.x = b.op("Add", [b.x, b.const(np.float32(1.0), "s")])[0]
    g = target(b)
    assert g.prunable and not [m for m in g.members if m.role == "const"]


def test_bn_vectors_are_members_and_bn_is_recorded():
    b = stem()
    b.x = b.bn(b.x, 4)
    g = target(b)
    assert len([m for m in g.members if m.role == "bn"]) == 4 and len(g.bn) == 1


@pytest.mark.parametrize("op, attrs", [("Softmax", {"axis": 1}), ("LRN", {"size": 3})])
def test_channel_mixing_ops_stop_the_group(op, attrs):
    # (Transpose there and back is followed since channel-last layouts are: units/rules_tokens.py)
    b = stem()
    b.x = b.op(op, [b.x], **attrs)[0]
    g = target(b)
    assert not g.prunable and ("channel" in g.reason or op in g.reason)


def test_custom_domain_op_never_crashes_and_is_reported():
    b = stem()
    b.x = b.op("Mystery", [b.x], domain="com.example")[0]
    model = b.model(b._gemm(b.op("Flatten", [b.op("GlobalAveragePool", [b.x])[0]], axis=1)[0], 4, 3))
    groups = analyse(model)
    g = group_of(groups, b.target)
    assert not g.prunable and "com.example.Mystery" in g.reason
    made = [gr for gr in groups if "Mystery" in gr.id or "Mystery" in gr.reason]
    assert made and not any(gr.prunable for gr in made)


def test_grouped_conv_ties_positions_across_groups_and_depthwise_passes_through():
    b = stem()
    b.x = b.conv(b.x, 4, 6, group=2)
    g = target(b)  # input 4 channels in 2 conv groups: 2 free positions, each standing for 2 channels
    assert g.prunable and (g.size, g.tiles, g.channels) == (2, 2, 4)
    slots = next(m for m in g.members if m.role == "consumer" and m.node == b.x.split("_out")[0])
    assert (slots.axis, slots.lo, slots.hi, slots.tiles) == (1, 0, 2, 1)
    assert sorted(next(m for m in g.members if m.role == "producer").indices(np.array([1]))) == [1, 3]
    b = stem()
    b.x = b.conv(b.x, 4, 4, group=4)
    g = target(b)
    assert g.prunable and {m.role for m in g.members} >= {"depthwise", "attr", "consumer", "producer"}


def test_flatten_to_gemm_maps_channel_to_hw_features():
    b = stem()
    f = b.op("Flatten", [b.x], axis=1)[0]
    groups = analyse(b.model(b._gemm(f, 4 * 64, 3)))
    m = next(m for m in group_of(groups, b.target).members if m.role == "consumer" and m.repeat > 1)
    assert (m.repeat, m.offset) == (64, 0)
    assert list(m.indices(np.array([2]))) == list(range(128, 192))


def test_concat_inputs_are_separate_groups_at_offsets():
    b = stem()
    other = b.conv(b.x, 4, 3)
    b.x, b.c = b.op("Concat", [b.x, other], axis=1)[0], 7
    b.x = b.conv(b.x, 7, 5)
    b.c = 5
    groups = analyse(b.model(b._gemm(b.op("Flatten", [b.op("GlobalAveragePool", [b.x])[0]], axis=1)[0], 5, 3)))
    second = group_of(groups, other)
    consumer = next(m for m in second.members if m.role == "consumer")
    assert consumer.offset == 4 and second.activation_offsets == [4]


def test_split_gives_sub_ranges_of_one_group():
    b = stem(6)
    p, q = b.op("Split", [b.x, b.const(np.array([2, 4], np.int64))], n_out=2, axis=1)
    b.x, b.c = b.op("Add", [b.conv(p, 2, 3), b.conv(q, 4, 3)])[0], 3
    g = target(b)
    ranges = sorted((m.lo, m.hi, m.offset) for m in g.members if m.role == "consumer")
    assert ranges == [(0, 2, 0), (2, 6, -2)] and g.prunable


def test_pad_on_channels_stops_and_spatial_pad_passes():
    for pads, ok in (([0, 0, 1, 1, 0, 0, 1, 1], True), ([0, 1, 0, 0, 0, 0, 0, 0], False)):
        b = stem()
        b.x = b.op("Pad", [b.x, b.const(np.array(pads, np.int64))])[0]
        if not ok:
            b.x = b.op("Slice", [b.x] + [b.const(np.array([v], np.int64)) for v in (1, 5, 1)])[0]
        assert target(b).prunable is ok


@pytest.mark.parametrize("axes, ok", [([2, 3], True), ([1], False)])
def test_reductions_pass_only_over_spatial_axes(axes, ok):
    b = stem()
    b.x = b.op("ReduceMean", [b.x, b.const(np.array(axes, np.int64))], keepdims=1)[0]
    assert target(b).prunable is ok


def test_resize_passes_channels_through():
    b = stem()
    b.x = b.op("Resize", [b.x, "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")[0]
    assert target(b).prunable


def test_se_mul_couples_x_with_the_excitation_conv():
    b = stem()
    s = b.op("Sigmoid", [b.conv(b.op("Relu", [b.conv(b.op("GlobalAveragePool", [b.x])[0], 4, 2, k=1)])[0], 2, 4, k=1)])[0]
    b.x = b.op("Mul", [b.x, s])[0]
    g = target(b)
    assert len(g.producers) == 2 and g.prunable
    squeeze = next(gr for gr in finish(b) if gr.size == 2 and gr.id != g.id)
    assert squeeze.prunable


def test_conv_transpose_and_matmul_are_producers():
    b = stem()
    w = b.const(b.weight(4, 6, 2, 2), "wt")
    b.x, b.c = b.op("ConvTranspose", [b.x, w], kernel_shape=[2, 2], strides=[2, 2])[0], 6
    f = b.op("ReduceMean", [b.x, b.const(np.array([2, 3], np.int64))], keepdims=0)[0]
    out = b.op("MatMul", [b.op("Relu", [b.op("MatMul", [f, b.const(b.weight(6, 5), "m")])[0]])[0],
                          b.const(b.weight(5, 3), "m")])[0]
    groups = analyse(b.model(out))
    assert [g.size for g in groups if g.prunable][-3:] == [4, 6, 5]
