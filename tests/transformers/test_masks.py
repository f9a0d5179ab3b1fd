"""Padding under an attention mask counts for nothing: token statistics and the re-fit's token rows of a padded
batch equal those of the same sequences unpadded — for [B, T, F] tensors (BERT) and for GPT-2's [B·T, F] Conv1D
rows, in TorchScript and dynamo exports (tf_build's token models; no transformers package needed)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_equivalence import graph

from onnxprune.io.data import Dataset
from onnxprune.io.graph import initializer_map
from onnxprune.io.runtime import input_specs, make_session
from onnxprune.modes.structured import STRUCTURED
from onnxprune.select.plan import PruneSettings
from onnxprune.stats import Request, collect
from onnxprune.stats.instrument import Tap, instrument, tensor_infos, token_mask
from onnxprune.units.tokens import analyse_views
from onnxprune.workflows.prune import prepare

REAL, PAD, N = 4, 3, 24  # real tokens per sequence, padded tokens appended, sequences


def rows_model(rows: bool, tokens: int | None = None) -> onnx.ModelProto:
    """x [N, T, 6] (+ attention_mask [N, T]; T = `tokens`, or dynamic) → fc1 6→8 → Relu → a → fc2 8→3 → masked sum
    over tokens. rows=True: GPT-2 style, the tokens flattened into [N·T, 6] rows around the two Gemms (the rows'
    count is not known statically); rows=False: BERT style, MatMuls on [N, T, F]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(6, 8)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(size=(8, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([-1, 6], np.int64), "flat"),
             numpy_helper.from_array(np.array([3], np.int64), "three"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([2], np.int64), "two"),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    if rows:
        nodes = [helper.make_node("Reshape", ["x", "flat"], ["xr"], name="flatten_tokens"),
                 helper.make_node("Gemm", ["xr", "w1", "b1"], ["h"], name="fc1"),
                 helper.make_node("Relu", ["h"], ["a"], name="relu"),
                 helper.make_node("Gemm", ["a", "w2"], ["o"], name="fc2"),
                 helper.make_node("Shape", ["x"], ["xs"], name="x_shape"),
                 helper.make_node("Slice", ["xs", "zero", "two"], ["nt"], name="nt"),
                 helper.make_node("Concat", ["nt", "three"], ["back"], axis=0, name="back"),
                 helper.make_node("Reshape", ["o", "back"], ["o3"], name="unflatten")]
    else:
        nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
                 helper.make_node("Add", ["h0", "b1"], ["h"], name="fc1_bias"),
                 helper.make_node("Relu", ["h"], ["a"], name="relu"),
                 helper.make_node("MatMul", ["a", "w2"], ["o3"], name="fc2")]
    nodes += [helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT, name="mask_cast"),
              helper.make_node("Unsqueeze", ["mf", "two"], ["m3"], name="mask_3d"),
              helper.make_node("Mul", ["o3", "m3"], ["om"], name="mask_out"),
              helper.make_node("ReduceSum", ["om", "one"], ["y"], keepdims=0, name="pool")]
    g = helper.make_graph(nodes, "tokens",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", tokens or "T", 6]),
                           helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", tokens or "T"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return m


def feature_data(model: onnx.ModelProto, padded: bool, lengths: np.ndarray | None = None) -> Dataset:
    """N sequences of REAL real tokens (the same in both), with PAD random tokens appended under mask 0 if padded;
    `lengths` instead: one batch of T = REAL + PAD tokens whose first lengths[i] are real."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, REAL + PAD, 6)).astype(np.float32)
    mask = np.zeros((N, REAL + PAD), np.int64)
    if lengths is None:
        mask[:, :REAL] = 1
        if not padded:
            x, mask = x[:, :REAL], mask[:, :REAL]
    else:
        mask[np.arange(REAL + PAD)[None, :] < lengths[:, None]] = 1
    return Dataset({"x": x, "attention_mask": mask}, rng.integers(0, 3, N), input_specs(model))


def token_data(model: onnx.ModelProto, padded: bool) -> Dataset:
    """Token ids: N sequences of REAL ids (the same in both), with PAD random ids appended under mask 0 if padded."""
    rng = np.random.default_rng(4)
    ids = rng.integers(1, 11, size=(N, REAL + PAD))
    mask = np.zeros_like(ids)
    mask[:, :REAL] = 1
    if not padded:
        ids, mask = ids[:, :REAL], mask[:, :REAL]
    return Dataset({"ids": ids, "mask": mask}, rng.integers(0, 3, N), input_specs(model))


TOKEN_STATS = frozenset({"class_moments", "zeros", "gram", "moments"})


def assert_same_stats(a, b, rtol: float) -> None:
    """Equal arrays; per-class arrays over the classes seen (a [N, T, V] output's group count follows T)."""
    assert a.keys() == b.keys()
    for key in a.keys():
        x, y = a.get(*key), b.get(*key)
        if key[1] in ("class_n", "class_mean"):
            seen = a.get(key[0], "class_n") > 0
            x, y = x[seen], y[np.flatnonzero(seen)]
        np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-6, err_msg=str(key))


@pytest.mark.parametrize("rows", [False, True], ids=["B,T,F", "B*T,F"])
def test_padding_appended_leaves_token_statistics_unchanged(rows):
    """F-screen class sums (F), APoZ, Gram and moments over the tokens, and per-head energies: a padded batch gives
    what the same sequences without padding give. Before, [B·T, F] rows averaged the padding in (F and APoZ
    changed), and rows for Gram / moments counted it for both layouts."""
    model = rows_model(rows)
    assert token_mask(model.graph, tensor_infos(model)["a"]) == "attention_mask"
    reqs = [Request("a", "tokens", TOKEN_STATS), Request("h", "heads", frozenset({"class_moments"}), block=2)]
    plain, padded = (collect(model, feature_data(model, p), reqs, batch_size=7) for p in (False, True))
    assert plain.n == padded.n == N
    assert_same_stats(plain, padded, rtol=1e-5)
    assert np.any(plain.get("a", "apoz") > 0) and np.all(plain.get("a", "f") > 0)  # the check is not vacuous


@pytest.mark.parametrize("rows", [False, True], ids=["B,T,F", "B*T,F"])
def test_token_statistics_of_uneven_lengths_are_over_real_tokens(rows):
    """Sequences of different lengths in one padded batch: the in-graph token means, zero fractions and head
    energies weigh each sequence's real tokens only (a [B·T, F] tensor is put back to [B, T, F] by the mask's
    shape)."""
    model = rows_model(rows)
    lengths = np.arange(N) % (REAL + PAD) + 1
    d = feature_data(model, True, lengths)
    taps = [Tap("a", "tmean"), Tap("a", "tzfrac"), Tap("a", "tenergy", block=2)]
    mean, zf, en = make_session(instrument(model, taps)).run([t.output for t in taps], d.inputs)
    w1, b1 = (numpy_helper.to_array(t) for t in model.graph.initializer[:2])
    a = np.maximum(d.inputs["x"] @ w1 + b1, 0)
    w = d.inputs["attention_mask"][:, :, None] / lengths[:, None, None]
    np.testing.assert_allclose(mean, (a * w).sum(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(zf, ((a == 0) * w).sum(1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(en, (a ** 2 * w).sum(1).reshape(N, 4, 2).mean(2), rtol=1e-5)
    assert not np.allclose(mean, a.mean(1), rtol=1e-3)  # the padding would have mattered


def test_one_row_a_sample_is_its_own_mean_under_a_mask():
    """A [B, F] tensor in a masked model (BERT's pooler) is not [B·T, F] rows: its per-sample mean is itself (the
    mask is used only where the rows are its tokens; chosen at run time)."""
    model = rows_model(True)
    d = feature_data(model, True, np.arange(N) % (REAL + PAD) + 1)
    taps = [Tap("y", "tmean"), Tap("y", "tzfrac")]
    y, mean, zf = make_session(instrument(model, taps)).run(["y", *(t.output for t in taps)], d.inputs)
    np.testing.assert_allclose(mean, y, rtol=1e-6)
    np.testing.assert_array_equal(zf, (y == 0).astype(np.float32))


def test_rows_without_a_single_mask_are_reshaped_by_the_batch():
    """Two mask inputs (say encoder and decoder): which one [B·T, F] rows follow is not known, so the rows are
    averaged per sample over all of their tokens, as before."""
    model = rows_model(True)
    model.graph.input.append(helper.make_tensor_value_info("decoder_attention_mask", TensorProto.INT64, ["N", "S"]))
    assert token_mask(model.graph, tensor_infos(model)["a"]) is None


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("name", ["bert_ids", "gpt2"])
def test_exported_token_models_statistics_ignore_padding(exporter, name):
    """The structured pipeline's statistics (per-token F-screen of every MLP width, per-head energies) and Gram /
    moments of each MLP input, on BERT- and GPT-2-like exports: padded batch = unpadded batch."""
    model = graph(exporter, name)
    groups, views = analyse_views(model)
    mlp = [g.activations[0] for g in groups if g.prunable and views[g.activations[0]].kind == "tokens"]
    assert mlp
    infos = tensor_infos(model)
    if name == "gpt2":  # GPT-2's Conv1D: the MLP's hidden activation is a [B·T, F] row tensor
        assert any(infos[t].rank == 2 for t in mlp)
    reqs = STRUCTURED.requests(model, PruneSettings(batch_size=8))
    reqs += [Request(t, "tokens", frozenset({"zeros", "gram", "moments"})) for t in mlp]
    plain, padded = (collect(model, token_data(model, p), reqs, batch_size=8) for p in (False, True))
    assert_same_stats(plain, padded, rtol=2e-4)


@pytest.mark.parametrize("rows", [False, True], ids=["B,T,F", "B*T,F"])
@pytest.mark.parametrize("mode", ["structured", "unstructured"])
def test_refit_ignores_padded_rows(rows, mode):
    """The least-squares re-fit sums XᵀX and XᵀT over the real tokens only: the re-fitted weights from a padded
    batch equal those from the same sequences unpadded."""
    settings = PruneSettings(mode=mode, criterion="fscreen", ratio=0.5, round_to=1, batch_size=7)
    fitted = []
    for p in (False, True):  # static token counts: the channel analysis needs them here
        model = rows_model(rows, REAL + PAD if p else REAL)
        d = feature_data(model, p)
        prep = prepare(model, d, settings)
        fitted.append(prep.build(0.5, d, reconstruct=True).model)
    a, b = (initializer_map(m) for m in fitted)
    assert set(a) == set(b)
    plain = initializer_map(prep.build(0.5, d, reconstruct=False).model)
    assert any(k in plain and not np.allclose(b[k], plain[k]) for k in b)  # the re-fit changed weights
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("rows", [False, True], ids=["B,T,F", "B*T,F"])
def test_relative_importance_ignores_padded_tokens(rows):
    """Relative importance takes every real token as a sample of r_ij = |w_ij·x_j| / Σ_k |w_ik·x_k|: a padded
    batch gives the means, stds and counts of the same sequences unpadded. Before, padded tokens were samples too."""
    stats = []
    for p in (False, True):  # static token counts: the channel analysis needs them here
        model = rows_model(rows, REAL + PAD if p else REAL)
        reqs = STRUCTURED.requests(model, PruneSettings(criterion="ri", batch_size=7))
        assert any(r.contrib is not None for r in reqs)
        stats.append(collect(model, feature_data(model, p), reqs, batch_size=7))
    plain, padded = stats
    assert_same_stats(plain, padded, rtol=1e-5)
    counts = [plain.get(k[0], "ri_count") for k in plain.keys() if k[1] == "ri_count"]
    assert counts and max(c.max() for c in counts) == N * REAL  # the real tokens are the samples, no more
