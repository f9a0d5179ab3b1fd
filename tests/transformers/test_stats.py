"""Per-token statistics: [N, T, F] reduced over tokens per sample in the graph (F-screen, APoZ), per-head energy,
the BERT unstructured crash (T·F flattened) and GPT-2's [B·T, F] rows."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_equivalence import torchscript

from onnxprune.io.data import Dataset
from onnxprune.io.runtime import input_specs
from onnxprune.select.plan import PruneSettings
from onnxprune.stats import Request, collect
from onnxprune.stats.accumulators import ClassMoments, ZeroCounts
from onnxprune.stats.instrument import Tap, instrument
from onnxprune.io.runtime import make_session
from onnxprune.units.tokens import analyse_views, feature_kind
from onnxprune.stats import tensor_infos
from onnxprune.workflows.prune import prepare


def token_model(rows: bool = False) -> onnx.ModelProto:
    """x [N, 4, 6] → MatMul 6→8 → Relu → MatMul 8→3 → mean over tokens → y [N, 3]; rows=True: GPT-2 style, the
    tokens flattened into the rows ([N·4, 6] → Gemm → Relu → Gemm → [N, 4, 3])."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(6, 8)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(8, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([-1, 6], np.int64), "flat"),
             numpy_helper.from_array(np.array([-1, 4, 3], np.int64), "back"),
             numpy_helper.from_array(np.array([1], np.int64), "ax")]
    if rows:
        nodes = [helper.make_node("Reshape", ["x", "flat"], ["xr"], name="flatten_tokens"),
                 helper.make_node("Gemm", ["xr", "w1"], ["h"], name="fc1"),
                 helper.make_node("Relu", ["h"], ["a"], name="relu"),
                 helper.make_node("Gemm", ["a", "w2"], ["o"], name="fc2"),
                 helper.make_node("Reshape", ["o", "back"], ["o3"], name="unflatten")]
    else:
        nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
                 helper.make_node("Relu", ["h"], ["a"], name="relu"),
                 helper.make_node("MatMul", ["a", "w2"], ["o3"], name="fc2")]
    nodes.append(helper.make_node("ReduceMean", ["o3", "ax"], ["y"], keepdims=0, name="pool"))
    g = helper.make_graph(nodes, "tokens", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return m


def data(model: onnx.ModelProto, n: int = 40, labelled: bool = True) -> Dataset:
    rng = np.random.default_rng(1)
    specs = input_specs(model)
    x = {s.name: rng.normal(size=(n, *[d or 5 for d in s.sample_shape])).astype(np.float32) for s in specs}
    return Dataset(x, rng.integers(0, 3, n) if labelled else None, specs)


def test_token_taps_reduce_over_tokens_in_the_graph():
    model = token_model()
    taps = [Tap("a", "tmean"), Tap("a", "tzfrac"), Tap("a", "tenergy", block=2)]
    sess = make_session(instrument(model, taps))
    x = np.random.default_rng(2).normal(size=(3, 4, 6)).astype(np.float32)
    a = np.maximum(x @ numpy_helper.to_array(model.graph.initializer[0]), 0)
    mean, zf, en = sess.run([t.output for t in taps], {"x": x})
    np.testing.assert_allclose(mean, a.mean(1), rtol=1e-5)
    np.testing.assert_allclose(zf, (a == 0).mean(1), rtol=1e-6)
    np.testing.assert_allclose(en, (a ** 2).mean(1).reshape(3, 4, 2).mean(2), rtol=1e-5)


def masked_model() -> onnx.ModelProto:
    """token_model plus an attention mask input [N, 4] (int64, as Hugging Face exports it) applied to the output."""
    model = token_model()
    g = model.graph
    g.input.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", 4]))
    g.node.remove(g.node[-1])
    g.node.extend([helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT, name="mask_cast"),
                   helper.make_node("Unsqueeze", ["mf", "two"], ["m3"], name="mask_3d"),
                   helper.make_node("Mul", ["o3", "m3"], ["om"], name="mask_out"),
                   helper.make_node("ReduceMean", ["om", "ax"], ["y"], keepdims=0, name="pool")])
    g.initializer.append(numpy_helper.from_array(np.array([2], np.int64), "two"))
    return model


def test_token_statistics_skip_padded_tokens():
    """Under an attention mask, token means, zero fractions and head energies are over the real tokens only."""
    model = masked_model()
    taps = [Tap("a", "tmean"), Tap("a", "tzfrac"), Tap("a", "tenergy", block=2)]
    sess = make_session(instrument(model, taps))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 4, 6)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], np.int64)
    a = np.maximum(x @ numpy_helper.to_array(model.graph.initializer[0]), 0)
    mean, zf, en = sess.run([t.output for t in taps], {"x": x, "attention_mask": mask})
    w = mask[:, :, None] / mask.sum(1)[:, None, None]
    np.testing.assert_allclose(mean, (a * w).sum(1), rtol=1e-5)
    np.testing.assert_allclose(zf, ((a == 0) * w).sum(1), rtol=1e-6)
    np.testing.assert_allclose(en, (a ** 2 * w).sum(1).reshape(3, 4, 2).mean(2), rtol=1e-5)
    assert not np.allclose(mean, a.mean(1))  # the padding mattered


@pytest.mark.parametrize("rows", [False, True])
def test_fscreen_and_apoz_of_token_features(rows):
    model = token_model(rows)
    d = data(model)
    t = "a"
    stats = collect(model, d, [Request(t, "tokens", frozenset({"class_moments", "zeros"}))], batch_size=16)
    x = d.inputs["x"] if hasattr(d, "inputs") else next(d.batches(len(d)))["x"]
    a = np.maximum(x @ numpy_helper.to_array(model.graph.initializer[0]), 0)  # [N, 4, 8]
    ref = ClassMoments(3)
    ref.update(a.mean(1), d.labels)
    np.testing.assert_allclose(stats.get(t, "f"), ref.finalize()["f"], rtol=1e-4)
    z = ZeroCounts(fractions=True)
    z.update((a == 0).mean(1))
    np.testing.assert_allclose(stats.get(t, "apoz"), z.finalize()["apoz"], rtol=1e-6)


@pytest.mark.parametrize("rows", [False, True])
@pytest.mark.parametrize("criterion", ["fscreen", "wanda", "apoz"])
def test_unstructured_criteria_on_token_inputs(rows, criterion):
    """BERT's crash ('statistic has 4096 features, weight expects 128') and GPT-2's ([B, K] one-hot × [B·T, F])."""
    model = token_model(rows)
    infos = tensor_infos(model)
    assert feature_kind(model, infos, "xr" if rows else "x") == "tokens"
    d = data(model, labelled=False)
    prep = prepare(model, d, PruneSettings(mode="unstructured", criterion=criterion, ratio=0.5, batch_size=16))
    prep.build(0.5, d, reconstruct=True)


def test_head_groups_get_per_head_statistics():
    model = torchscript("packed")
    groups, views = analyse_views(model)
    heads = [g for g in groups if g.prunable and g.size == 4]
    assert heads and all(views[g.activations[0]].kind == "heads" and views[g.activations[0]].block == 4
                         for g in heads)
    mlp = [g for g in groups if g.prunable and g.size == 24]
    assert all(views[g.activations[0]].kind == "tokens" for g in mlp)
    d = data(model)
    prep = prepare(model, d, PruneSettings(criterion="fscreen", ratio=0.3, round_to=1, batch_size=16))
    assert all(len(prep.scores.channel_scores[g.id]) == 4 for g in heads)
    cand = prep.build(0.3, d, reconstruct=True)
    assert cand.plan.channels


def test_refit_bias_adds_are_folded():
    """The re-fit's MatMul bias Add and the exporter's bias Add become one Add (same function)."""
    from onnxprune.io.runtime import make_session
    from onnxprune.rewrite.fold_bias import fold_bias_adds

    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"), helper.make_node("Add", ["m", "b1"], ["a"], name="a1"),
         helper.make_node("Add", ["b2", "a"], ["y0"], name="a2"), helper.make_node("Relu", ["y0"], ["y"], name="r")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 5])],
        [numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32), "w"),
         numpy_helper.from_array(np.arange(5, dtype=np.float32), "b1"),
         numpy_helper.from_array(-np.ones(5, np.float32), "b2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    folded = fold_bias_adds(onnx.ModelProto.FromString(m.SerializeToString()))
    assert [n.op_type for n in folded.graph.node] == ["MatMul", "Add", "Relu"]
    x = np.random.default_rng(1).normal(size=(2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(make_session(folded).run(None, {"x": x})[0], make_session(m).run(None, {"x": x})[0],
                               rtol=1e-5, atol=1e-6)


def test_head_contribution_is_head_energy_times_its_output_block():
    """criteria.heads: E_h·‖W_h‖_F², E_h the mean x² of head h's features at the output projection's input."""
    from onnxprune.criteria.heads import contributions
    from onnxprune.io.graph import initializer_map
    from onnxprune.modes.structured import STRUCTURED
    from onnxprune.stats import stream

    model = torchscript("packed")
    d = data(model)
    stats = collect(model, d, STRUCTURED.requests(model, PruneSettings(batch_size=16)), batch_size=16)
    groups, _ = analyse_views(model)
    g = next(g for g in groups if g.prunable and g.size == 4)
    t = g.activations[0]
    x = np.concatenate([b[t] for b in stream(model, d, [t], batch_size=16)])  # [N, T, 4 heads · 4]
    energy = (x.astype(np.float64) ** 2).reshape(len(x), x.shape[1], 4, 4).mean((1, 3)).mean(0)
    m = next(m for m in g.members if m.role == "consumer")
    w = np.moveaxis(initializer_map(model)[m.tensor].astype(np.float64), m.axis, 0)
    block = np.array([np.sum(w[m.indices(np.array([h]))] ** 2) for h in range(4)])
    np.testing.assert_allclose(contributions(model, g, stats), energy * block, rtol=1e-4)


def test_report_counts_a_head_as_its_features():
    """Selection counts a head as dh channels; the report's rows and totals do too (shape column: heads × dh)."""
    from onnxprune.modes.structured import STRUCTURED
    from onnxprune.select.plan import Plan

    model = torchscript("packed")
    groups, _ = analyse_views(model)
    heads = [g for g in groups if g.prunable and g.size == 4]
    plan = Plan("structured", "", {"criterion": "l1", "ratio": 0.5}, channels={g.id: [0, 3] for g in heads})
    pruned = STRUCTURED.apply(model, plan)
    rows = {r["layer"]: r for r in STRUCTURED.report(model, pruned, plan)["layers"]}
    for g in heads:
        assert (rows[g.id]["weights"], rows[g.id]["kept"]) == (16, 8)
        assert (rows[g.id]["shape"], rows[g.id]["pruned_shape"]) == ([4, 4], [2, 4])


def test_structured_refit_on_token_rows():
    """GPT-2's [B·T, F] rows: the re-fit's targets and inputs line up row by row (B·T rows a batch, not B), and the
    re-fit brings the pruned output closer to the dense one."""
    model = token_model(rows=True)
    d = data(model, n=64)
    prep = prepare(model, d, PruneSettings(criterion="fscreen", ratio=0.5, round_to=1, batch_size=16))
    feed = {"x": d.inputs["x"]}
    dense = make_session(model).run(None, feed)[0]
    errs = [np.abs(make_session(prep.build(0.5, d, reconstruct=r).model).run(None, feed)[0] - dense).mean()
            for r in (False, True)]
    assert errs[1] < errs[0]
