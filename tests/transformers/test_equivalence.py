"""Transformer graphs from both torch exporters: heads and MLP widths are groups, removal ≡ zeroed consumers.

TorchScript graphs are exported here (torch is in the dev venv); dynamo graphs are fixtures written by
make_fixtures.py (onnxscript lives only in the torch venv). Token-id models (`bert_ids`, `gpt2`) have a dynamic
sequence length, as Hugging Face exports do. Pruned = reference with consumer weights zeroed, rel. ≤
1e-4, the check `rewrite/check.py` runs; the reference must differ from the dense model, so the check bites."""
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tf_build import (TOKEN_MODELS, VARIANTS, ConvNeXtTiny, Encoder, TokenModel, encoder_inputs, export, randomise,
                      token_inputs)

from onnxprune.io.model import normalise
from onnxprune.rewrite.channels import remove_channels, zero_consumers
from onnxprune.rewrite.check import RTOL, max_rel_diff, probe_feed
from onnxprune.units.count import count
from onnxprune.units.groups import analyse

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HEADS, HIDDEN, DEPTH = 4, 24, 2


@lru_cache(maxsize=None)
def torchscript(name: str) -> onnx.ModelProto:
    torch.manual_seed(0)
    if name == "convnext":
        return export(randomise(ConvNeXtTiny(), 0), (torch.randn(2, 3, 8, 8),))
    if name in TOKEN_MODELS:
        m = randomise(TokenModel(**TOKEN_MODELS[name]), 0)
        return export(m, token_inputs(m))
    m = randomise(Encoder(**VARIANTS[name]), 0)
    return export(m, encoder_inputs(m))


def dynamo(name: str) -> onnx.ModelProto:
    return normalise(onnx.load(FIXTURES / f"dynamo_{name}.onnx"))


GRAPHS = [(e, n) for e in ("torchscript", "dynamo") for n in (*VARIANTS, "convnext", *TOKEN_MODELS)]


def graph(exporter: str, name: str) -> onnx.ModelProto:
    return torchscript(name) if exporter == "torchscript" else dynamo(name)


def check_exact(model: onnx.ModelProto, keep: dict) -> onnx.ModelProto:
    feed = probe_feed(model, None)
    pruned = remove_channels(model, keep)
    ref = zero_consumers(model, keep)
    assert max_rel_diff(ref, pruned, feed) <= RTOL
    assert max_rel_diff(model, ref, feed) > 1e-3  # the zeroed channels mattered: the check is not vacuous
    assert count(pruned).params < count(model).params
    return pruned


@pytest.mark.parametrize("exporter, name", GRAPHS)
def test_groups(exporter, name):
    groups = analyse(graph(exporter, name))
    sizes = sorted(g.size for g in groups if g.prunable)
    if name == "convnext":
        assert sizes == [32, 32]  # the two channel-last MLPs (4 × 8)
    else:  # TorchScript mha: [T, B·H, dh] with a dynamic batch, B·H = Mul(B, H) computed at run time — heads too
        assert sizes == [HEADS] * DEPTH + [HIDDEN] * DEPTH
        heads = [g for g in groups if g.prunable and g.size == HEADS]
        assert all(len(g.producers) == 3 for g in heads)  # q, k and v open the head group together
    streams = [g for g in groups if not g.prunable and g.reason.startswith("residual stream")]
    assert streams and all("LayerNormalization" in g.reason and "none can be removed" in g.reason
                           or "embedding rows gathered" in g.reason for g in streams)


@pytest.mark.parametrize("exporter, name", GRAPHS)
@pytest.mark.parametrize("seed", range(3))
def test_removal_equals_zeroed_consumers(exporter, name, seed):
    model = graph(exporter, name)
    rng = np.random.default_rng(seed)
    keep = {g.id: np.sort(rng.choice(g.size, int(rng.integers(1, g.size)), replace=False))
            for g in analyse(model) if g.prunable}
    check_exact(model, keep)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_head_count_follows_into_reshape_targets(exporter):
    model = graph(exporter, "packed")
    heads = [g for g in analyse(model) if g.prunable and g.size == HEADS]
    pruned = check_exact(model, {g.id: [0, 3] for g in heads})
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer}
    targets = [inits[n.input[1]].tolist() for n in pruned.graph.node if n.op_type == "Reshape" and n.input[1] in inits]
    assert [-1, 5, 3, 2, 4] in targets or any(t[-3:] == [3, 2, 4] for t in targets)
    assert not any(t[-3:] == [3, HEADS, 4] for t in targets)


def test_batch_merged_heads_follow_the_batch():
    """nn.MultiheadAttention's TorchScript form, [T, B·H, dh] with B·H = Mul(B, H) computed from Shape at run time:
    the kept head count replaces H in that Mul (not a constant B·H), so batches of 1, 3 and 8 all stay exact."""
    model = torchscript("mha")
    heads = [g for g in analyse(model) if g.prunable and g.size == HEADS]
    keep = {g.id: [1, 2] for g in heads}
    pruned, ref = remove_channels(model, keep), zero_consumers(model, keep)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer}
    muls = [inits[i] for n in pruned.graph.node if n.op_type == "Mul" for i in n.input if i in inits
            and inits[i].dtype == np.int64]
    assert any(v.size == 1 and int(v) == 2 for v in muls)  # Mul(B, 2): two heads kept per block
    x = model.graph.input[0]
    sample = [d.dim_value for d in x.type.tensor_type.shape.dim[1:]]
    for n in (1, 3, 8):
        feed = {x.name: np.random.default_rng(n).standard_normal((n, *sample)).astype(np.float32)}
        assert max_rel_diff(ref, pruned, feed) <= RTOL
        assert max_rel_diff(model, ref, feed) > 1e-3


def test_head_entry_equal_to_h_only_at_batch_1_is_refused():
    """The same graph with B·H computed as B + (H − 1): equal to H at batch 1 (the traced shapes), wrong at any other
    batch — the entry is evaluated at batch 2 (here the model cannot even run there), is not shown to be H or
    batch × H, and the heads are left alone."""
    model = onnx.ModelProto()
    model.CopyFrom(torchscript("mha"))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    changed = 0
    for n in model.graph.node:
        consts = [i for i in n.input if i in inits and inits[i].dtype == np.int64 and inits[i].size == 1]
        if n.op_type == "Mul" and consts and int(inits[consts[0]]) == HEADS:
            n.op_type = "Add"
            n.input[list(n.input).index(consts[0])] = "heads_minus_1"
            changed += 1
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(HEADS - 1, np.int64), "heads_minus_1"))
    assert changed == DEPTH
    groups = analyse(model)
    assert sorted(g.size for g in groups if g.prunable) == [HIDDEN] * DEPTH
    assert any("computed at run time" in g.reason and "at batch 2" in g.reason for g in groups if not g.prunable)
