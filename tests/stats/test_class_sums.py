"""Class statistics (fscreen) computed in the onnxruntime graph: per-batch class sums, merged in float64."""
import numpy as np
import onnxruntime as ort
import pytest
from scipy.stats import f_oneway

from onnxprune.io.data import Dataset, load_dataset
from onnxprune.errors import OnnxPruneError
from onnxprune.stats import ClassMoments, Request, collect, stream
from onnxprune.stats.collect import _plan
from onnxprune.stats.instrument import (
    CLASS_COUNT,
    Classes,
    Tap,
    instrument,
    tensor_infos,
)

CM = frozenset({"class_moments"})


def _numpy_reference(model, data, views: dict[str, str], labels) -> dict[str, dict[str, np.ndarray]]:
    """ClassMoments.update (numpy, float64) over the full tensors, viewed as collect views them."""
    parts = list(stream(model, data, list(views), batch_size=64, optimize="disable"))
    out = {}
    for t, view in views.items():
        a = np.concatenate([p[t] for p in parts]).astype(np.float64)
        x = a.mean(tuple(range(2, a.ndim))) if view == "channels" else a.reshape(len(a), -1)
        acc = ClassMoments(int(labels.max()) + 1)
        for i in range(0, len(x), 37):
            acc.update(x[i:i + 37], labels[i:i + 37])
        out[t] = acc.finalize()
    return out


def _assert_same(st, ref: dict[str, dict[str, np.ndarray]]) -> None:
    for t, r in ref.items():
        np.testing.assert_array_equal(st.get(t, "class_n"), r["class_n"], err_msg=t)
        np.testing.assert_allclose(st.get(t, "f"), r["f"], rtol=1e-5, err_msg=t)
        np.testing.assert_allclose(st.get(t, "class_mean"), r["class_mean"], rtol=1e-5, atol=1e-6, err_msg=t)


def test_in_graph_class_sums_equal_the_numpy_path(mlp, mlp_data, convnet, conv_data):
    # features: a graph input, intermediate activations; a conv map flattened as features; channel means
    st = collect(mlp, mlp_data, [Request(t, "features", CM) for t in ("input", "a1", "a2")], batch_size=32)
    _assert_same(st, _numpy_reference(mlp, mlp_data, {"input": "features", "a1": "features", "a2": "features"},
                                       mlp_data.labels))
    reqs = [Request("input", "channels", CM), Request("r1", "channels", CM), Request("r2", "features", CM)]
    st = collect(convnet, conv_data, reqs, batch_size=16)
    _assert_same(st, _numpy_reference(convnet, conv_data, {"input": "channels", "r1": "channels", "r2": "features"},
                                      conv_data.labels))


def test_constant_features_give_f_zero_and_large_means_keep_precision(tmp_path, mlp):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, size=300)
    x = rng.normal(size=(300, 6)) + y[:, None] * 0.5
    x[:, 2] = 3.7  # constant
    x[:, 4] = 0.0  # dead
    x[:, 5] += 1e4  # large mean, small spread
    x = x.astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load_dataset(tmp_path / "d.npz", mlp)
    f = collect(mlp, data, [Request("input", "features", CM)], batch_size=16).get("input", "f")
    assert f[2] == 0 and f[4] == 0
    x64 = x.astype(np.float64)
    for j in (0, 1, 3, 5):
        assert f[j] == pytest.approx(f_oneway(*[x64[y == c, j] for c in range(3)]).statistic, rel=1e-5)


def test_label_free_mode_equals_true_labels_that_are_the_predictions(tmp_path, mlp, mlp_data):
    x = mlp_data.inputs["input"]
    pred = np.concatenate([o["logits"].argmax(1) for o in stream(mlp, mlp_data, ["logits"])])
    np.savez(tmp_path / "pred.npz", x=x, y=pred)
    np.savez(tmp_path / "unlabelled.npz", x=x)
    reqs = [Request("a1", "features", CM), Request("a2", "features", CM)]
    true = collect(mlp, load_dataset(tmp_path / "pred.npz", mlp), reqs, batch_size=50)
    free = collect(mlp, load_dataset(tmp_path / "unlabelled.npz", mlp), reqs, batch_size=50)
    assert (true.label_mode, free.label_mode) == ("true", "predicted")
    assert true.keys() == free.keys()
    for t, k in true.keys():
        np.testing.assert_allclose(free.get(t, k), true.get(t, k), rtol=1e-12, atol=0, err_msg=f"{t}::{k}")


def test_labels_out_of_range_are_a_clear_error(mlp, mlp_data):
    req = [Request("a1", "features", CM)]
    x = mlp_data.inputs["input"]

    def data(labels):
        return Dataset({"input": x}, labels, mlp_data.specs, "bad.npz")

    with pytest.raises(OnnxPruneError, match=r"bad.npz: labels must lie in 0\.\.2, found -1\.\.2"):
        collect(mlp, data(np.where(np.arange(len(x)) == 5, -1, mlp_data.labels)), req, labels="true")
    with pytest.raises(OnnxPruneError, match="labels must be integers"):
        collect(mlp, data(mlp_data.labels.astype(np.float32)), req, labels="true")
    with pytest.raises(OnnxPruneError, match="labels have shape"):
        collect(mlp, data(mlp_data.labels[:-1]), req, labels="true")


def test_class_sums_do_not_depend_on_the_batch_size(mlp, mlp_data):
    reqs = [Request("input", "features", CM), Request("a1", "features", CM)]
    runs = [collect(mlp, mlp_data, reqs, batch_size=bs) for bs in (1, 7, 64, len(mlp_data))]
    for other in runs[1:]:
        for t, k in runs[0].keys():
            np.testing.assert_allclose(other.get(t, k), runs[0].get(t, k), rtol=1e-5, atol=1e-7, err_msg=f"{t}::{k}")


def test_class_moments_alone_fetch_no_per_sample_values(mlp, convnet):
    # with every batch only the class sums; the first sample's values are read once, for the shift
    for model, kind, tensors in ((mlp, "features", ["input", "a1"]), (convnet, "channels", ["r1", "r2"])):
        plan = _plan(model, [Request(t, kind, CM) for t in tensors], tensor_infos(model), 3)
        assert {t.what for t in plan.taps} == {"class_sum", "class_sumsq"}
        assert [v.tensor for v in plan.shifts.values()] == tensors
    # another statistic of the same tensor still fetches its values
    plan = _plan(mlp, [Request("a1", "features", CM | {"moments"})], tensor_infos(mlp), 3)
    assert [t.what for t in plan.taps if t.per_sample] == ["raw"]


def test_label_free_class_count_with_a_symbolic_output_width(mlp, mlp_data):
    # predicted mode, output width unknown before running: the one-hot depth is read from the output at run time
    tap = Tap("a1", "class_sum")
    inst = instrument(mlp, [tap], classes=Classes(0, "logits"))
    sess = ort.InferenceSession(inst.SerializeToString(), providers=["CPUExecutionProvider"])
    x = mlp_data.inputs["input"]
    shift = np.full((1, 5), 0.25, np.float32)
    count, s = sess.run([CLASS_COUNT, tap.output], {"input": x, tap.shift_input: shift})
    ref = next(stream(mlp, mlp_data, ["logits", "a1"], batch_size=len(x)))
    pred = ref["logits"].argmax(1)
    np.testing.assert_array_equal(count, np.bincount(pred, minlength=3))
    np.testing.assert_allclose(s[1], (ref["a1"][pred == 1] - shift).sum(0), rtol=1e-4, atol=1e-5)
