"""`instrument` builds byte-identical graphs for every tap kind, and refuses what it cannot tap.

DIGESTS pins sha256(instrumented.SerializeToString(deterministic=True)) for each case below. They were generated
with the single-function `instrument` of commit 2e0b788, before its split into `_TapGraph` builders (onnx 1.23.2), so a
pass here means the refactored builders emit exactly the same nodes, initializers, inputs and outputs, in the same
order, with the same names. If a bundled model is rebuilt (MODEL_DIGESTS fails) or onnx changes its serialisation,
regenerate with a known-good `instrument` (`PYTHONPATH=tests python tests/stats/test_instrument.py`), say why.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from builders import REPO
from onnx import TensorProto, helper, numpy_helper

from onnxprune.errors import OnnxPruneError
from onnxprune.stats.instrument import CLASS_COUNT, LABELS, Classes, Tap, instrument, tensor_infos

MODELS = REPO / "models"
MODEL_DIGESTS = {  # the bundled models the digests were taken on
    "lenet300_mnist": "4c2d93cd8c0d43c2df7c70c8816f7217368b359819c3d659b68ebe14539d6e9d",
    "lenet5bn_mnist": "a4bb75dca4786b37db29d0d0707decec93078d6aada7f5a68332dfae5088773d",
    "resnet20_cifar10": "d3f73aa4a2e9cd0fa5226758f0afd44f87d252aa9d4b5e8acf7763f162a7dc3f",
}
CHANNEL_KINDS = ("mean", "sqsum", "sqmean", "zfrac")
CLASS_KINDS = ("class_first", "class_sum", "class_sumsq")


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _bundled(name: str) -> onnx.ModelProto:
    return onnx.load(MODELS / f"{name}.onnx")


def _small(opset: int = 18, elem: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """input (N,3,8,8) → Conv → Relu → GlobalAveragePool → Flatten → Gemm → logits (N,4), in `elem`."""
    rng = np.random.default_rng(0)
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(dtype), k)
             for k, s in (("w", (5, 3, 3, 3)), ("b", (5,)), ("fw", (4, 5)), ("fb", (4,)))]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], axis=1, name="flatten"),
             helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("input", elem, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", elem, ["N", 4])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    return m


RELU, BOTH, LO, HI = (0.0, math.inf), (-0.5, 6.0), (0.25, math.inf), (-math.inf, 1.0)  # `active` interval forms


def _every_kind(t: str, active: tuple[float, float]) -> list[Tap]:
    """All per-sample kinds on a channel map: raw, the four reductions and `active` (one interval per tensor: the
    tap's output name does not include it, so a second interval on the same tensor would be the first one)."""
    return [Tap(t, "raw"), *(Tap(t, k) for k in CHANNEL_KINDS), Tap(t, "active", *active)]


def _class(t: str, view: str) -> list[Tap]:
    return [Tap(t, k, view=view) for k in CLASS_KINDS]


L300_H1, L300_H2, L300_IN = "/3/Relu_output_0", "/5/Relu_output_0", "/0/Add_output_0"
L5_C1, L5_C2, L5_FC = "/3/Relu_output_0", "/7/Relu_output_0", "/11/Relu_output_0"
L5_BN1, L5_BN2 = "/2/BatchNormalization_output_0", "/6/BatchNormalization_output_0"
R20 = ["/2/Relu_output_0", "/3/body/body.1/Relu_output_0", "/3/Relu_output_0", "/6/Add_output_0",
       "/6/short/short.1/BatchNormalization_output_0", "/9/Relu_output_0"]

# name → (model, taps, keyword arguments of `instrument`)
CASES = {
    "lenet300/true_labels": (
        "lenet300_mnist",
        [Tap("logits", "raw"), Tap(L300_H1, "raw"), *_class(L300_H1, "features"), *_class(L300_H2, "features"),
         *_class(L300_IN, "features")],  # rank-4 input: Flatten view
        dict(classes=Classes(10))),
    "lenet300/predicted_k0": (
        "lenet300_mnist",
        [*_class(L300_H2, "features"), *_class(L300_H1, "features"), Tap(L300_H2, "raw")],
        dict(classes=Classes(0, predicted="logits"), keep_outputs=False)),
    "lenet300/predicted_k10": (
        "lenet300_mnist",
        [*_class(L300_H1, "features"), Tap("logits", "raw")],
        dict(classes=Classes(10, predicted="logits"))),
    "lenet300/first_only": (  # class_first needs no labels, so no `classes`
        "lenet300_mnist",
        [Tap(L300_H1, "class_first"), Tap(L300_H2, "class_first")],
        dict()),
    "lenet5bn/every_kind": (
        "lenet5bn_mnist",
        [*_class(L5_C1, "channels"),  # before its `mean` tap: the class view makes it, the mean tap reuses it
         *_every_kind(L5_C1, RELU), *_every_kind(L5_C2, BOTH), *_every_kind(L5_BN1, LO), *_every_kind(L5_BN2, HI),
         Tap(L5_C1, "zfrac"), Tap(L5_BN1, "active", *LO),  # repeated: made and exposed once
         *_class(L5_C2, "features"), *_class(L5_FC, "features"), Tap(L5_FC, "raw")],
        dict(classes=Classes(10))),
    "lenet5bn/predicted_no_outputs": (
        "lenet5bn_mnist",
        [*_every_kind(L5_C2, HI), *_every_kind(L5_BN2, LO), *_class(L5_C2, "channels"), *_class(L5_C1, "features")],
        dict(classes=Classes(0, predicted="logits"), keep_outputs=False)),
    "resnet20/fscreen_apoz_ri": (
        "resnet20_cifar10",
        [t for x in R20 for t in (Tap(x, "mean"), Tap(x, "zfrac"), Tap(x, "sqsum"), Tap(x, "active", 0.0, math.inf),
                                  *_class(x, "channels"))],
        dict(classes=Classes(10), keep_outputs=False)),
    "resnet20/sqmean_predicted": (
        "resnet20_cifar10",
        [t for x in R20[:3] for t in (Tap(x, "sqmean"), Tap(x, "raw"), *_class(x, "channels"))],
        dict(classes=Classes(10, predicted="logits"))),
    # opset < 13: ReduceSum (CLASS_COUNT) and ReduceSumSquare take `axes` as an attribute
    "small/opset11": (
        ("small", 11, TensorProto.FLOAT),
        [*_every_kind("r", RELU), *_every_kind("c", BOTH), *_class("r", "channels"), *_class("flat", "features")],
        dict(classes=Classes(4))),
    # opset 13-17: ReduceSum takes `axes` as an input, ReduceSumSquare still as an attribute
    "small/opset13": (
        ("small", 13, TensorProto.FLOAT),
        [*_every_kind("r", LO), *_every_kind("c", HI), *_class("r", "channels"), *_class("r", "features")],
        dict(classes=Classes(0, predicted="logits"))),
    # double tensors: sums in double (Cast of the one-hot, double ones and shifts), double constants
    "small/double": (
        ("small", 18, TensorProto.DOUBLE),
        [*_every_kind("c", BOTH), *_every_kind("r", LO), *_class("c", "channels"), *_class("logits", "features")],
        dict(classes=Classes(4))),
    # 16-bit tensors: values upcast to float32 before the sums; float16 constants for the comparisons
    "small/float16": (
        ("small", 18, TensorProto.FLOAT16),
        [*_every_kind("r", HI), *_every_kind("c", BOTH), *_class("r", "channels"), *_class("flat", "features")],
        dict(classes=Classes(0, predicted="logits"), keep_outputs=False)),
}

DIGESTS = {
    "lenet300/true_labels": "acdd8b2830c5334adf98ee649c119328924397e0c42893a951bb089a28320d39",
    "lenet300/predicted_k0": "e2c31d40832d2a8c41ced6561df3760a8d9991e721fe2143da39ba27bbe0b161",
    "lenet300/predicted_k10": "c11ceb7cb5d1ea14b3e2a055bee3757c72b2eed5efff767310289e3f49487e0e",
    "lenet300/first_only": "eae5b9ee12b0c511d79c8f1fff94645adfbb7cffd05fb3f71839247143cd1960",
    "lenet5bn/every_kind": "9ab85ca9ec487245e2a8f2efa18d25892bc679f877450923550422e050b7c503",
    "lenet5bn/predicted_no_outputs": "93f13a835118a70ff057b31a86d19de6618ea7d36246da7f6dab2d4acadbcc51",
    "resnet20/fscreen_apoz_ri": "04cdb11e403faee7dd6a3b679cf3ddf492858dd42173a5f773a80b7ac0b39e51",
    "resnet20/sqmean_predicted": "e3fddc51a58676536d017bc63cbf842f58b07bf98a66b7ded50418d1bfba1a17",
    "small/opset11": "0bace32dd895c6bb2d49b05c794baa9189c6efd6d024e7f6a91e5db6dd9e0104",
    "small/opset13": "6b624c7e733934780744aaa0015749a77e0bdc44ebd1aff094c4e22bfe46e004",
    "small/double": "cf15f68e38d9a3b824615b16f5c7075833425b901a7aa3bfbf744860b554d18b",
    "small/float16": "0e8f7ee3d59493f2584cbd81789953e3b0be77874a086b55077188951e77bf70",
}


def _model(spec) -> onnx.ModelProto:
    return _bundled(spec) if isinstance(spec, str) else _small(*spec[1:])


def _instrumented(case: str) -> onnx.ModelProto:
    spec, taps, kw = CASES[case]
    return instrument(_model(spec), taps, **kw)


@pytest.mark.parametrize("name", sorted(MODEL_DIGESTS))
def test_bundled_models_are_the_ones_digested(name):
    assert _sha((MODELS / f"{name}.onnx").read_bytes()) == MODEL_DIGESTS[name], \
        f"models/{name}.onnx changed: regenerate DIGESTS with a known-good instrument (see the module docstring)"


@pytest.mark.parametrize("case", sorted(CASES))
def test_instrumented_bytes_unchanged(case):
    got = _sha(_instrumented(case).SerializeToString(deterministic=True))
    assert got == DIGESTS[case], f"{case}: instrumented graph differs from the pinned one"


@pytest.mark.parametrize("case", ["lenet5bn/every_kind", "small/opset11"])
def test_given_infos_and_input_untouched(case):
    """Passing `infos` changes nothing, and the caller's model is not modified."""
    spec, taps, kw = CASES[case]
    model = _model(spec)
    before = model.SerializeToString(deterministic=True)
    inst = instrument(model, taps, tensor_infos(model), **kw)
    assert _sha(inst.SerializeToString(deterministic=True)) == DIGESTS[case]
    assert model.SerializeToString(deterministic=True) == before


@pytest.mark.parametrize("case", ["small/opset11", "small/opset13"])
def test_pinned_graphs_compute_the_statistics(case):
    """The pinned graphs are right ones: each tap of `r` equals its numpy definition (shifts fed as zeros)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 3, 8, 8)).astype(np.float32)
    y = np.array([0, 1, 3, 3, 0, 2, 3])
    sess = ort.InferenceSession(_instrumented(case).SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"input": x, **({LABELS: y} if case.endswith("11") else {})}
    feeds.update({i.name: np.zeros((1, 320 if i.name.endswith("features/r") else 5), np.float32)
                  for i in sess.get_inputs() if "/shift/" in i.name})
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    r = out["r"]
    y = y if case.endswith("11") else out["logits"].argmax(1)
    mean = r.mean((2, 3))
    want = {"mean": mean, "sqsum": (r * r).sum((2, 3)), "sqmean": (r * r).mean((2, 3)), "zfrac": (r == 0).mean((2, 3))}
    for k, v in want.items():
        np.testing.assert_allclose(out[Tap("r", k).output], v, rtol=1e-5, atol=1e-6, err_msg=k)
    for t in ("r", "c"):
        a = out[t]
        lo, hi = next((tap.lo, tap.hi) for tap in CASES[case][1] if tap.tensor == t and tap.what == "active")
        got = out[Tap(t, "active").output]
        np.testing.assert_allclose(got, a.max((2, 3)) if (lo, hi) == RELU else ((a > lo) & (a < hi)).max((2, 3)))
    hot = np.eye(4)[y].T
    np.testing.assert_array_equal(out[CLASS_COUNT], hot.sum(1))
    np.testing.assert_allclose(out[Tap("r", "class_sum", view="channels").output], hot @ mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[Tap("r", "class_sumsq", view="channels").output], (mean ** 2).sum(0), rtol=1e-5)
    first = out[Tap("r", "class_first", view="channels").output]
    np.testing.assert_array_equal(first, out[Tap("r", "mean").output][:1])


@pytest.mark.parametrize("tap, match", [
    (Tap("nope", "mean"), "not found"),
    (Tap("logits", "mean"), "rank >= 3"),
    (Tap("r", "active", -math.inf, math.inf), "empty blind range"),
])
def test_refusals(tap, match):
    with pytest.raises(OnnxPruneError, match=match):
        instrument(_small(), [tap])


def test_refuses_integer_tensors():
    m = _small()
    m.graph.node.append(helper.make_node("Shape", ["r"], ["shape"]))
    with pytest.raises(OnnxPruneError, match="floating-point"):
        instrument(m, [Tap("shape", "raw")])


def test_class_sums_need_onehot_opset():
    with pytest.raises(OnnxPruneError, match="opset >= 9"):
        instrument(_small(opset=8), [Tap("r", "class_sum", view="channels")], classes=Classes(4))


if __name__ == "__main__":  # print the digests of the current `instrument` (to regenerate after a deliberate change)
    for n in sorted(MODEL_DIGESTS):
        print(f'    "{n}": "{_sha((MODELS / f"{n}.onnx").read_bytes())}",')
    print()
    for c in CASES:
        print(f'    "{c}": "{_sha(_instrumented(c).SerializeToString(deterministic=True))}",')
