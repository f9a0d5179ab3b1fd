import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import f_oneway

from onnxprune.cli import main
from onnxprune.io.data import load_dataset
from onnxprune.errors import OnnxPruneError
from onnxprune.io.model import model_hash
from onnxprune.units.weights import contrib_spec, weight_layer
from onnxprune.criteria.needs import default_requests
from onnxprune.stats import Request, Stats, collect, stream

from .conftest import build_mlp, write_npz

ALL = frozenset({"class_moments", "zeros", "moments", "gram"})


def _spec(model, layer):
    """What the statistics engine needs of a layer, as the product makes it."""
    return contrib_spec(model, weight_layer(model, layer))


def _full(model, data, tensors):
    """Reference: full tensors over the whole set, with graph optimisations off."""
    parts = list(stream(model, data, tensors, batch_size=50, optimize="disable"))
    return {t: np.concatenate([p[t] for p in parts]).astype(np.float64) for t in tensors}


def test_conv_channels_match_numpy(convnet, conv_data):
    reqs = [Request("r1", "channels", ALL), Request("r2", "channels", ALL), Request("input", "channels", ALL)]
    st = collect(convnet, conv_data, reqs, batch_size=16)
    ref = _full(convnet, conv_data, ["r1", "r2"])
    ref["input"] = conv_data.inputs["input"].astype(np.float64)
    y = conv_data.labels
    for t, a in ref.items():
        means = a.mean((2, 3))
        np.testing.assert_allclose(st.get(t, "apoz"), (a == 0).mean((0, 2, 3)), rtol=1e-6)
        np.testing.assert_allclose(st.get(t, "mean"), means.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(st.get(t, "var"), means.var(0), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(st.get(t, "sqnorm"), (a ** 2).sum((0, 2, 3)), rtol=1e-5)
        np.testing.assert_allclose(st.get(t, "gram"), means.T @ means, rtol=1e-4, atol=1e-5)
        fref = np.array([f_oneway(*[means[y == c, j] for c in range(3)]).statistic for j in range(a.shape[1])])
        np.testing.assert_allclose(st.get(t, "f"), np.nan_to_num(fref), rtol=1e-4)
        assert st.get(t, "n") == len(y)
    assert st.n == len(y) and st.label_mode == "true" and st.model_hash == model_hash(convnet)


def test_batch_size_and_optimisation_do_not_change_results(convnet, conv_data):
    reqs = default_requests(convnet, "all")
    a = collect(convnet, conv_data, reqs, batch_size=97, pipeline=True)
    b = collect(convnet, conv_data, reqs, batch_size=10, optimize="disable")
    assert a.keys() == b.keys()
    for t, k in a.keys():
        np.testing.assert_allclose(a.get(t, k), b.get(t, k), rtol=2e-5, atol=1e-7, err_msg=f"{t}::{k}")


def test_features_and_contributions_match_numpy(mlp, mlp_data):
    reqs = [Request("input", "features", ALL | {"contrib"}, contrib=_spec(mlp, "fc1")),
            Request("a1", "features", frozenset({"contrib", "zeros"}), contrib=_spec(mlp, "fc2")),
            Request("a2", "features", frozenset({"contrib"}), contrib=_spec(mlp, "fc3"))]
    st = collect(mlp, mlp_data, reqs, batch_size=32)
    x = mlp_data.inputs["input"].astype(np.float64)
    full = _full(mlp, mlp_data, ["h1", "a1", "h2", "a2", "h3"])
    np.testing.assert_allclose(st.get("input", "sqnorm"), (x ** 2).sum(0), rtol=1e-10)
    np.testing.assert_allclose(st.get("input", "gram"), x.T @ x, rtol=1e-10)
    np.testing.assert_allclose(st.get("a1", "apoz"), (full["a1"] == 0).mean(0))
    init = {t.name: t for t in mlp.graph.initializer}
    from onnx import numpy_helper
    W = {k: numpy_helper.to_array(v).astype(np.float64) for k, v in init.items()}
    cases = [("fc1", x, W["w1"], W["b1"], full["h1"] > 0),           # Gemm transB=1, Relu after
             ("fc2", full["a1"], W["w2"].T, W["b2"], full["h2"] > 0),  # Gemm transB=0
             ("fc3", full["a2"], W["w3"].T, W["b3"], np.ones_like(full["h3"], bool))]  # MatMul+Add, no activation
    for layer, xin, w, b, active in cases:
        c = np.abs(w[None] * xin[:, None, :])
        r = c / (c.sum(2, keepdims=True) + np.abs(b)[None, :, None] + 1e-12)
        m = active[:, :, None]
        cnt = m.sum(0)
        mean = (r * m).sum(0) / np.maximum(cnt, 1)
        std = np.sqrt(((r - mean) ** 2 * m).sum(0) / np.maximum(cnt, 1))
        np.testing.assert_allclose(st.get(layer, "ri_mean"), mean, rtol=1e-5, atol=1e-9, err_msg=layer)
        np.testing.assert_allclose(st.get(layer, "ri_std"), std, rtol=1e-4, atol=1e-7, err_msg=layer)
        np.testing.assert_array_equal(st.get(layer, "ri_count"), np.broadcast_to(cnt, mean.shape))
    # the layer's input tensor also finds its (only) layer's contributions
    np.testing.assert_array_equal(st.get("a1", "ri_mean"), st.get("fc2", "ri_mean"))


def test_clip_blind_range(tmp_path):
    m = build_mlp(act="Clip")
    rng = np.random.default_rng(5)
    data = load_dataset(write_npz(tmp_path / "d.npz", rng.normal(size=(64, 6)).astype(np.float32)), m)
    st = collect(m, data, [Request("input", "features", frozenset({"contrib"}), contrib=_spec(m, "fc1"))])
    h1 = next(stream(m, data, ["h1"], batch_size=64))["h1"]
    kept = ((h1 > -0.5) & (h1 < 1.0)).sum(0)
    np.testing.assert_array_equal(st.get("fc1", "ri_count")[:, 0], kept)


def test_conv_contributions(convnet, conv_data):
    st = collect(convnet, conv_data, [Request("r1", "channels", frozenset({"contrib"}), contrib=_spec(convnet, "conv2"))])
    from onnx import numpy_helper
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in convnet.graph.initializer}
    full = _full(convnet, conv_data, ["r1", "c2"])
    xm = full["r1"].mean((2, 3))  # per-sample input channel means
    wk = np.abs(w["cw2"]).sum((2, 3))  # (6, 2): the kernel's L1 norm (Σ|w| over space); group 2
    active = full["c2"].max((2, 3)) > 0  # ReLU after conv2: skip samples where the whole map is ≤ 0
    for i in range(6):
        xs = xm[:, (i // 3) * 2:(i // 3) * 2 + 2]
        c = np.abs(wk[i] * xs)
        r = c / (c.sum(1, keepdims=True) + abs(w["cb2"][i]) + 1e-12)
        np.testing.assert_allclose(st.get("conv2", "ri_mean")[i], r[active[:, i]].mean(0), rtol=1e-4)
        assert st.get("conv2", "ri_count")[i, 0] == active[:, i].sum()
    assert st.get("r1", "ri_mean").shape == (6, 2)


def test_labels_modes(tmp_path, mlp, mlp_data):
    x = mlp_data.inputs["input"]
    unl = load_dataset(write_npz(tmp_path / "u.npz", x), mlp)
    req = [Request("a1", "features", frozenset({"class_moments"}))]
    st = collect(mlp, unl, req, batch_size=50)
    assert st.label_mode == "predicted"
    pred = np.concatenate([o["logits"].argmax(1) for o in stream(mlp, unl, ["logits"])])
    np.testing.assert_array_equal(st.get("a1", "class_n"), np.bincount(pred, minlength=3))
    assert collect(mlp, mlp_data, req, labels="predicted").label_mode == "predicted"
    assert collect(mlp, mlp_data, req).label_mode == "true"
    with pytest.raises(OnnxPruneError, match="no labels"):
        collect(mlp, unl, req, labels="true")
    with pytest.raises(OnnxPruneError, match="labels must be one of"):
        collect(mlp, unl, req, labels="yes")


def test_request_errors(mlp, mlp_data, convnet, conv_data):
    with pytest.raises(OnnxPruneError, match="kind"):
        Request("a1", "pixels", frozenset({"moments"}))
    with pytest.raises(OnnxPruneError, match="unknown statistics"):
        Request("a1", "features", frozenset({"median"}))
    with pytest.raises(OnnxPruneError, match="needs the consuming layer"):
        Request("a1", "features", frozenset({"contrib"}))
    with pytest.raises(OnnxPruneError, match="no such tensor"):
        collect(mlp, mlp_data, [Request("nope", "features", frozenset({"moments"}))])
    with pytest.raises(OnnxPruneError, match="initializer"):
        collect(mlp, mlp_data, [Request("w1", "features", frozenset({"moments"}))])
    with pytest.raises(OnnxPruneError, match="reads 'input'"):
        collect(mlp, mlp_data, [Request("a1", "features", frozenset({"contrib"}), contrib=_spec(mlp, "fc1"))])
    with pytest.raises(OnnxPruneError, match="need kind 'channels'"):
        collect(convnet, conv_data, [Request("r1", "features", frozenset({"contrib"}), contrib=_spec(convnet, "conv2"))])
    with pytest.raises(OnnxPruneError, match="not a prunable weight layer"):
        _spec(mlp, "fc9")


def test_wrong_data_shape_is_a_clear_error(tmp_path, mlp):
    with pytest.raises(OnnxPruneError, match=r"shape \(10, 5\), model expects"):
        load_dataset(write_npz(tmp_path / "bad.npz", np.zeros((10, 5), np.float32)), mlp)


def test_stats_roundtrip_and_lookup_errors(tmp_path, convnet, conv_data):
    st = collect(convnet, conv_data, default_requests(convnet, "fscreen,apoz,ri"))
    p = st.save(tmp_path / "s.npz")
    back = Stats.load(p)
    assert back.keys() == st.keys() and back.model_hash == st.model_hash and back.label_mode == "true"
    for k in st.keys():
        np.testing.assert_array_equal(back.get(*k), st.get(*k))
    back.check_model(convnet)
    with pytest.raises(OnnxPruneError, match="another model"):
        back.check_model(build_mlp())
    with pytest.raises(OnnxPruneError, match="no 'gram' for tensor 'r1'"):
        back.get("r1", "gram")
    assert not back.has("r1", "gram") and back.has("r1", "f") and back.has("conv2", "ri_mean")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(OnnxPruneError, match="not a readable statistics file"):
        Stats.load(tmp_path / "junk.npz")


def test_default_requests_conv(convnet):
    reqs = {(r.tensor, r.kind, r.layer): r.stats for r in default_requests(convnet, "all")}
    assert reqs[("input", "channels", None)] == {"class_moments", "moments"}
    assert reqs[("r1", "channels", None)] == {"class_moments", "moments", "zeros"}  # conv2 input + conv1 producer
    assert reqs[("r1", "channels", "conv2")] == {"contrib"}
    assert reqs[("flat", "features", None)] == {"class_moments", "moments", "gram"}
    assert ("r2", "channels", None) in reqs  # conv2's post-activation output
    with pytest.raises(OnnxPruneError, match="unknown criteria"):
        default_requests(convnet, "fscreen,magic")


def test_cli(tmp_path, mlp, mlp_data):
    import onnx
    mp = tmp_path / "m.onnx"
    onnx.save(mlp, mp)
    x = mlp_data.inputs["input"]
    lab = write_npz(tmp_path / "l.npz", x, mlp_data.labels)
    unl = write_npz(tmp_path / "u.npz", x)
    out = tmp_path / "s.npz"
    r = CliRunner().invoke(main, ["stats", str(mp), "--calib", str(lab), "-o", str(out), "--criteria", "all",
                                  "--json"])
    assert r.exit_code == 0, r.output
    assert '"label_mode": "true"' in r.output
    st = Stats.load(out)
    assert st.has("fc1", "ri_mean") and st.has("input", "gram") and st.n == len(x)
    r = CliRunner().invoke(main, ["stats", str(mp), "--calib", str(unl), "-o", str(out)])
    assert r.exit_code == 0 and "label-free" in r.output
    r = CliRunner().invoke(main, ["stats", str(mp), "--calib", str(unl), "-o", str(out), "--labels", "true"])
    assert r.exit_code == 2 and "no labels" in r.output
    r = CliRunner().invoke(main, ["stats", str(mp), "--calib", str(lab), "-o", str(out), "--criteria", "bogus"])
    assert r.exit_code == 2 and "unknown criteria" in r.output


def test_relative_importance_of_an_edge_filter_is_not_zero(tmp_path):
    """Paper 003's contribution |w·x| of a Conv connection uses the kernel's L1 norm: a Laplacian kernel (weights
    summing to 0) on an input with signal gets the whole of its output's contribution, as the box filter does."""
    from builders import edge_conv

    m = edge_conv()
    x = np.random.default_rng(0).uniform(0.5, 1.5, size=(32, 1, 8, 8)).astype(np.float32)
    data = load_dataset(write_npz(tmp_path / "d.npz", x), m)
    st = collect(m, data, [Request("x", "channels", frozenset({"contrib"}), contrib=_spec(m, "conv"))])
    mean = st.get("conv", "ri_mean")
    assert mean.shape == (2, 1)
    np.testing.assert_allclose(mean[:, 0], [1.0, 1.0])  # one input channel: it carries all of each output


# ---------------------------------------------------------------------------------------------------- issue 13
def _gen(model, n=24, y=None):
    from robustness.exporters import data

    from onnxprune.io.data import Dataset
    from onnxprune.io.runtime import input_specs

    d = data(n=n)
    return Dataset({"x": d["x"]}, y, input_specs(model), "gen")


def _fscreen_requests(model):
    return default_requests(model, "fscreen")


def test_label_values_never_size_the_class_statistics():
    """A classifier's K comes from its output: a label ≥ K is an error (not a million-class allocation); a
    non-classifier's labels are only groups, renumbered over their distinct values."""
    from robustness.exporters import cnn, vector_head

    m = cnn()
    y = np.zeros(24, np.int64)
    y[5] = 1_000_000
    with pytest.raises(OnnxPruneError, match=r"labels must lie in 0\.\.3"):
        collect(m, _gen(m, y=y), _fscreen_requests(m))
    r = vector_head("regression")
    st = collect(r, _gen(r, y=y), _fscreen_requests(r))
    assert st.meta["n_classes"] == 2 and st.label_mode == "true"


@pytest.mark.filterwarnings("error")
def test_non_classifiers_fall_back_to_groups_from_the_output_and_say_so():
    from robustness.exporters import dense_head, vector_head

    seg = dense_head()
    st = collect(seg, _gen(seg), _fscreen_requests(seg))
    assert st.label_mode.startswith("predicted (dominant class") and st.meta["n_classes"] <= 4
    emb = vector_head("embedding")
    st = collect(emb, _gen(emb), _fscreen_requests(emb))
    assert st.label_mode.startswith("none: the output is not a class score") and st.meta["n_classes"] <= 10


def test_a_fixed_batch_of_one_is_fed_one_sample_at_a_time():
    from robustness.exporters import cnn

    m1, mn = cnn(batch=1, out_dims=[1, 4]), cnn()
    y = np.arange(24) % 4
    a = collect(m1, _gen(m1, y=y), _fscreen_requests(m1), batch_size=256)
    b = collect(mn, _gen(mn, y=y), _fscreen_requests(mn), batch_size=256)
    assert a.n == b.n == 24 and set(a._a) == set(b._a)
    for key, v in b._a.items():
        np.testing.assert_allclose(a._a[key], v, rtol=1e-5, atol=1e-6)
