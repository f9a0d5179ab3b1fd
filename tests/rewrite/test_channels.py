"""remove_channels ≡ zero_consumers on generated graphs and tiny bundled-like models; fold_bn; plan errors."""
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import BUNDLED
from units.generate import Builder, random_keep, random_model
from units.helpers import TINY, assert_prunes_exactly, rel_err, run, sample_input
from onnx import helper

from onnxprune.errors import OnnxPruneError
from onnxprune.units.count import count
from onnxprune.units.groups import analyse
from onnxprune.rewrite.channels import remove_channels, zero_consumers
from onnxprune.rewrite.fold_bn import fold_bn
from onnxprune.io.model import load_model

REPO = Path(__file__).resolve().parents[2]
N_GENERATED = 120


@pytest.mark.parametrize("seed", range(N_GENERATED))
def test_generated_graph_prunes_exactly(seed):
    assert_prunes_exactly(random_model(seed), seed)


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_bundled_architectures_prune_exactly(name):
    model = TINY[name]()
    assert any(g.prunable for g in analyse(model))
    assert_prunes_exactly(model, 0)


def test_lenet300_from_the_repo():
    model = load_model(REPO / "models" / "lenet300_mnist.onnx")
    groups = analyse(model)
    assert [g.size for g in groups if g.prunable] == [300, 100]
    pruned = assert_prunes_exactly(model, 1)
    assert count(pruned).params < count(model).params


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_every_bundled_model(path):
    assert_prunes_exactly(load_model(path), 2)


def test_constant_node_weights_are_pruned_after_load(tmp_path):
    """paddle2onnx-style models keep weights in Constant nodes; load_model turns them into initializers."""
    model = TINY["resnet"](3)
    g = model.graph
    consts = [helper.make_node("Constant", [], [t.name], value=t) for t in g.initializer]
    nodes = list(g.node)
    del g.initializer[:], g.node[:]
    g.node.extend(consts + nodes)
    del g.value_info[:]
    assert count(model).params > 0  # counted from the Constant nodes themselves
    path = tmp_path / "constants.onnx"
    onnx.save(model, path)
    loaded = load_model(path)
    assert not any(n.op_type == "Constant" for n in loaded.graph.node)
    assert count(loaded).params == count(model).params
    assert any(gr.prunable for gr in analyse(loaded))
    assert_prunes_exactly(loaded, 3)


def test_depthwise_group_attribute_follows_the_kept_channels():
    model = TINY["mobilenet"](1)
    group = next(g for g in analyse(model) if any(m.role == "attr" for m in g.members))
    keep = {group.id: np.arange(0, group.size, 2)}
    pruned = remove_channels(model, keep)
    dw = {m.node for m in group.members if m.role == "attr"}
    for node in pruned.graph.node:
        if node.name in dw:
            assert helper.get_attribute_value(next(a for a in node.attribute if a.name == "group")) == len(keep[group.id])


def test_shape_constants_are_rewritten():
    """Split sizes, Slice bounds and a Reshape with a literal feature count all follow the removed channels."""
    b = Builder(np.random.default_rng(5))
    b.stem()
    b.split_block()
    b.slice_block()
    f = b.op("Reshape", [b.x, b.const(np.array([2, b.c * 64], np.int64), "shape")])[0]
    model = b.model(b._gemm(f, b.c * 64, 4))
    groups = {g.id: g for g in analyse(model)}
    keep = {gid: np.array([0, g.size - 1]) for gid, g in groups.items() if g.prunable and g.size > 2}
    for g in groups.values():  # each partial range keeps at least one channel
        if g.id in keep:
            keep[g.id] = np.unique(np.concatenate([keep[g.id]] + [[m.lo] for m in g.members]))
    pruned = remove_channels(model, keep)
    x = sample_input(model, np.random.default_rng(0))
    assert rel_err(run(pruned, x), run(zero_consumers(model, keep), x)) <= 1e-4
    assert {n.op_type for n in pruned.graph.node} >= {"Split", "Slice", "Reshape"}


def test_shared_constants_are_copied_not_sliced_twice():
    b = Builder(np.random.default_rng(0))
    b.stem()
    k = b.const(np.linspace(0.5, 1.5, b.c).reshape(b.c, 1, 1).astype(np.float32), "shared")
    c = b.c
    y1 = b.op("Mul", [b.conv(b.x, c, c), k])[0]
    y2 = b.op("Mul", [b.conv(y1, c, c), k])[0]
    b.x = y2
    model = b.model(b.head())
    keep = {g.id: np.array([0, 2]) for g in analyse(model) if g.prunable and g.size == c}
    assert len(keep) >= 2
    pruned = remove_channels(model, keep)
    x = sample_input(model, np.random.default_rng(1))
    assert rel_err(run(pruned, x), run(zero_consumers(model, keep), x)) <= 1e-4


def test_keeping_everything_changes_nothing_numerically():
    model = TINY["densenet"]()
    keep = {g.id: np.arange(g.size) for g in analyse(model) if g.prunable}
    x = sample_input(model, np.random.default_rng(0))
    assert rel_err(run(remove_channels(model, keep), x), run(model, x)) <= 1e-6


@pytest.mark.parametrize("bad, message", [
    ({"nope": [0]}, "unknown channel group"),
    ("unprunable", "cannot be pruned"),
    ("empty", "at least one channel"),
    ("unsorted", "sorted, unique"),
])
def test_bad_plans_are_one_line_errors(bad, message):
    model = TINY["resnet"]()
    groups = analyse(model)
    ok = next(g for g in groups if g.prunable)
    if bad == "unprunable":
        bad = {next(g for g in groups if not g.prunable).id: [0]}
    elif bad == "empty":
        bad = {ok.id: []}
    elif bad == "unsorted":
        bad = {ok.id: [2, 1]}
    with pytest.raises(OnnxPruneError, match=message):
        remove_channels(model, bad)


@pytest.mark.parametrize("seed", range(8))
def test_fold_bn_is_numerically_equal(seed):
    model = random_model(seed)
    folded = fold_bn(model)
    x = sample_input(model, np.random.default_rng(seed))
    assert rel_err(run(folded, x), run(model, x)) <= 1e-4
    n_bn = sum(n.op_type == "BatchNormalization" for n in folded.graph.node)
    assert n_bn <= sum(n.op_type == "BatchNormalization" for n in model.graph.node)


def test_fold_bn_removes_conv_bn_pairs():
    model = TINY["resnet"]()
    folded = fold_bn(model)
    assert not any(n.op_type == "BatchNormalization" for n in folded.graph.node)
    x = sample_input(model, np.random.default_rng(0))
    assert rel_err(run(folded, x), run(model, x)) <= 1e-4


def test_pruning_then_folding():
    model = TINY["mobilenet"]()
    keep = random_keep(analyse(model), np.random.default_rng(0))
    pruned = remove_channels(model, keep)
    x = sample_input(model, np.random.default_rng(0))
    assert rel_err(run(fold_bn(pruned), x), run(zero_consumers(model, keep), x)) <= 1e-4


def test_the_input_model_is_not_modified():
    model = TINY["lenet5bn"]()
    before = model.SerializeToString(deterministic=True)
    keep = random_keep(analyse(model), np.random.default_rng(0))
    remove_channels(model, keep)
    zero_consumers(model, keep)
    fold_bn(model)
    assert model.SerializeToString(deterministic=True) == before


def test_the_reference_is_not_trivial():
    """Zeroing the removed channels must actually change the outputs, or the equivalence tests prove nothing."""
    changed = 0
    for seed in range(20):
        model = random_model(seed)
        rng = np.random.default_rng(seed)
        keep = random_keep(analyse(model), rng)
        x = sample_input(model, rng)
        changed += rel_err(run(zero_consumers(model, keep), x), run(model, x)) > 1e-3
    assert changed >= 18
