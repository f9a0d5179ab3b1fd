"""The ONNX `Attention` op (opset 23): heads are pruned through it, exactly, or left alone with a reason.

torch's exporter writes scaled_dot_product_attention as this op at opset 23 (4-D q, k, v [N, H, T, dh], the dynamo
fixtures `dynamo_sdpa*`, grouped-query too); the 3-D form [N, T, H·dh] with `q_num_heads` / `kv_num_heads`,
grouped- and multi-query attention and per-head masks are built by hand (`tf_build.attention_graph`). Exact = the
pruned model equals the dense one with the removed heads' output-projection rows zeroed (rel. ≤ 1e-4), and that
zeroing changed the output."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_equivalence import DEPTH, HEADS, HIDDEN, check_exact, dynamo, torchscript
from test_stats import data
from tf_build import attention_graph

from onnxprune.io.graph import attr
from onnxprune.rewrite.channels import remove_channels, zero_consumers
from onnxprune.rewrite.check import RTOL, max_rel_diff
from onnxprune.select.plan import PruneSettings
from onnxprune.units.count import count
from onnxprune.units.groups import analyse
from onnxprune.units.tokens import analyse_views, head_dim
from onnxprune.workflows.prune import prepare

TOKENS = 5


def heads_of(model: onnx.ModelProto) -> list:
    return [g for g in analyse(model) if g.prunable and g.size == HEADS]


def attention_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "Attention"]


@pytest.mark.parametrize("name", ["sdpa", "sdpa_mask", "sdpa_bias"])
def test_sdpa_export_prunes_heads_through_the_attention_op(name):
    """q, k, v come out of one packed projection by Slice + Squeeze (`unbind`) into one Attention node per block:
    each block's heads are one group opened by the three parts, and removing heads keeps the fused op."""
    model = dynamo(name)
    assert len(attention_nodes(model)) == DEPTH
    heads = heads_of(model)
    assert len(heads) == DEPTH and all(len(g.producers) == 3 for g in heads)
    pruned = check_exact(model, {g.id: [0, 2, 3] for g in heads})
    assert len(attention_nodes(pruned)) == DEPTH


def test_hugging_face_sdpa_export_with_dynamic_batch_and_sequence():
    """BERT-style blocks with Hugging Face's sdpa attention (head split / merge shapes read at run time, the padding
    mask expanded to [N, 1, T, T] as attn_mask), batch and sequence dynamic: exact at other batches and lengths."""
    model = dynamo("bert_sdpa")
    groups = analyse(model)
    assert sorted(g.size for g in groups if g.prunable) == [HEADS] * DEPTH + [HIDDEN] * DEPTH
    keep = {g.id: [1, 2] if g.size == HEADS else np.arange(0, HIDDEN, 3) for g in groups if g.prunable}
    pruned, ref = remove_channels(model, keep), zero_consumers(model, keep)
    rng = np.random.default_rng(0)
    for n, t in ((1, 5), (3, 9)):
        mask = np.ones((n, t), np.int64)
        mask[0, t - 2:] = 0
        feed = {"ids": rng.integers(1, 11, (n, t)) * mask, "mask": mask}
        assert max_rel_diff(ref, pruned, feed) <= RTOL
        assert max_rel_diff(model, ref, feed) > 1e-3


@pytest.mark.parametrize("name, batches", [("mha_sdpa_b2", [2]), ("mha_sdpa_dyn", [1, 2, 3])])
def test_multihead_attention_module_with_heads_through_the_batch(name, batches):
    """nn.MultiheadAttention exported by dynamo at batch 2 or with a dynamic batch: the heads go through [T, B·H, dh]
    (target B·H, or -1) and back to [B, H, T, dh] before the Attention op; both targets follow the kept count."""
    model = dynamo(name)
    groups = analyse(model)
    assert sorted(g.size for g in groups if g.prunable) == [HEADS] * DEPTH + [HIDDEN] * DEPTH
    keep = {g.id: [0, 3] if g.size == HEADS else np.arange(0, HIDDEN, 2) for g in groups if g.prunable}
    pruned, ref = remove_channels(model, keep), zero_consumers(model, keep)
    for n in batches:
        feed = {"x": np.random.default_rng(n).standard_normal((n, TOKENS, 6)).astype(np.float32)}
        assert max_rel_diff(ref, pruned, feed) <= RTOL
        assert max_rel_diff(model, ref, feed) > 1e-3


def test_a_constant_per_head_bias_is_cut_with_the_heads():
    """attn_mask = a learned bias [H, T, T]: its slices of the removed heads go with them."""
    model = dynamo("sdpa_bias")
    pruned = check_exact(model, {g.id: [1, 2] for g in heads_of(model)})
    inits = {t.name: tuple(t.dims) for t in pruned.graph.initializer}
    assert [inits[n.input[3]] for n in attention_nodes(pruned)] == [(2, TOKENS, TOKENS)] * DEPTH


@pytest.mark.parametrize("form", [3, 4])
@pytest.mark.parametrize("mask", [None, "broadcast", "const"])
@pytest.mark.parametrize("seed", range(2))
def test_both_input_forms_prune_exactly(form, mask, seed):
    model = attention_graph(form, mask=mask)
    groups = analyse(model)
    assert sorted(g.size for g in groups if g.prunable) == [HEADS] * DEPTH + [HIDDEN] * DEPTH
    rng = np.random.default_rng(seed)
    keep = {g.id: np.sort(rng.choice(g.size, int(rng.integers(1, g.size)), replace=False))
            for g in groups if g.prunable}
    pruned = check_exact(model, keep)
    kept = sorted(len(keep[g.id]) for g in groups if g.prunable and g.size == HEADS)
    if form == 3:  # the head counts are attributes: rewritten to the kept count
        assert sorted(attr(n, "q_num_heads") for n in attention_nodes(pruned)) == kept
        assert all(attr(n, "kv_num_heads") == attr(n, "q_num_heads") for n in attention_nodes(pruned))


@pytest.mark.parametrize("form", [3, 4])
@pytest.mark.parametrize("mask", [None, "const"])
def test_grouped_query_attention_prunes_whole_key_value_groups(form, mask):
    """4 query heads on 2 key/value heads (query head i reads key/value head i // 2): a channel is a key/value head
    with its 2 query heads, so the ratio stays 2 (3-D form: both head counts rewritten)."""
    model = attention_graph(form, kv_heads=2, mask=mask)
    groups = analyse(model)
    assert sorted(g.size for g in groups if g.prunable) == [2] * DEPTH + [HIDDEN] * DEPTH
    kv = [g for g in groups if g.prunable and g.size == 2]
    assert all(len(g.producers) == 3 and head_dim(g) == 2 * 16 // HEADS for g in kv)  # q, k, v; 2 heads × dh
    pruned = check_exact(model, {g.id: [1] for g in kv})
    if form == 3:
        assert [(attr(n, "q_num_heads"), attr(n, "kv_num_heads")) for n in attention_nodes(pruned)] == [(2, 1)] * DEPTH


def test_the_grouped_query_export_prunes_key_value_groups():
    """torch's export of scaled_dot_product_attention(enable_gqa=True): one Attention node reading 4 query and 2
    key/value heads; each key/value head goes with its 2 query heads, exactly."""
    model = dynamo("sdpa_gqa")
    groups = analyse(model)
    assert sorted(g.size for g in groups if g.prunable) == [2] * DEPTH + [HIDDEN] * DEPTH
    kv = [g for g in groups if g.prunable and g.size == 2]
    assert all(len(g.producers) == 3 for g in kv)
    pruned = check_exact(model, {g.id: [b % 2] for b, g in enumerate(kv)})
    assert len(attention_nodes(pruned)) == DEPTH


@pytest.mark.parametrize("form", [3, 4])
def test_multi_query_attention_prunes_query_heads_alone(form):
    """One key/value head read by every query head: each query head is free on its own; the key/value head stays,
    with a reason."""
    model = attention_graph(form, kv_heads=1)
    groups = analyse(model)
    assert sorted(g.size for g in groups if g.prunable) == [HEADS] * DEPTH + [HIDDEN] * DEPTH
    assert any("the one key/value head every query head reads" in g.reason for g in groups)
    pruned = check_exact(model, {g.id: [0, 3] for g in groups if g.prunable and g.size == HEADS})
    if form == 3:
        assert [(attr(n, "q_num_heads"), attr(n, "kv_num_heads")) for n in attention_nodes(pruned)] == [(2, 1)] * DEPTH


@pytest.mark.parametrize("form", [3, 4])
@pytest.mark.parametrize("kv_heads", [HEADS, 2])
def test_a_mask_per_head_computed_at_run_time_is_read_through_a_gather(form, kv_heads):
    """attn_mask [N, H, T, T] fed at run time: each Attention node reads the kept heads' slices through a Gather."""
    model = attention_graph(form, kv_heads=kv_heads, mask="input")
    groups = analyse(model)
    assert sorted(g.size for g in groups if g.prunable) == [kv_heads] * DEPTH + [HIDDEN] * DEPTH
    pruned = check_exact(model, {g.id: [0] for g in groups if g.prunable and g.size == kv_heads})
    picks = [n for n in pruned.graph.node if n.op_type == "Gather" and n.input[0] == "mask"]
    assert len(picks) == DEPTH and all(attr(n, "axis") == 1 for n in picks)


def test_the_key_value_cache_is_refused():
    """present_key / present_value outputs used by the caller: their heads would change under it."""
    model = attention_graph(4)
    node = attention_nodes(model)[0]
    node.output.extend(["present_key", "present_value"])
    model.graph.output.extend([helper.make_tensor_value_info(t, TensorProto.FLOAT, None)
                               for t in ("present_key", "present_value")])
    groups = analyse(model)
    assert len([g for g in groups if g.prunable and g.size == HEADS]) == DEPTH - 1
    first = [g for g in groups if g.size == HEADS and g.producers][:3]  # block 0's q, k, v projections
    assert all(not g.prunable and "key / value cache" in g.reason for g in first)


@pytest.mark.parametrize("form", [3, 4])
@pytest.mark.parametrize("kv_heads", [HEADS, 2])
def test_head_statistics_are_read_at_the_output_projection(form, kv_heads):
    """A head's energy is read where the output projection reads it, after the Attention op (4-D: after the merge
    Reshape; 3-D: the op's output itself), dh features per head (a key/value group: its query heads' features);
    F-screen scores and re-fits through it."""
    model = attention_graph(form, kv_heads=kv_heads)
    groups, views = analyse_views(model)
    heads = [g for g in groups if g.prunable and g.size == kv_heads]
    for g in heads:
        (t,) = g.activations
        assert views[t].kind == "heads" and views[t].block == 16 // kv_heads == head_dim(g)
        consumer = next(n for n in model.graph.node if n.op_type == "MatMul" and n.input[0] == t)
        assert any(m.node == consumer.name and m.role == "consumer" for m in g.members)
    d = data(model)
    prep = prepare(model, d, PruneSettings(criterion="fscreen", ratio=0.3, round_to=1, batch_size=16))
    assert all(len(prep.scores.channel_scores[g.id]) == kv_heads for g in heads)
    assert prep.build(0.3, d, reconstruct=True).plan.channels


@pytest.mark.parametrize("form", [3, 4])
def test_macs_count_the_products_inside_the_op(form):
    """q·kᵀ and weights·v, B·H·T·T·(dh + dv) per node (batch 1, dh = dv = 4), also after heads are removed."""
    model = attention_graph(form)
    assert [n.macs for n in count(model).nodes if n.op_type == "Attention"] == [HEADS * TOKENS * TOKENS * 8] * DEPTH
    pruned = remove_channels(model, {g.id: [0, 1] for g in heads_of(model)})
    assert [n.macs for n in count(pruned).nodes if n.op_type == "Attention"] == [2 * TOKENS * TOKENS * 8] * DEPTH


def test_the_fused_export_counts_the_macs_of_the_written_out_one():
    fused, written = dynamo("sdpa"), torchscript("sdpa")  # the dynamo fixture's batch is 2
    assert count(fused).macs == count(written, {"x": (2, TOKENS, 6)}).macs
