import numpy as np
import pytest
from scipy.stats import f_oneway

from onnxprune.errors import OnnxPruneError
from onnxprune.stats import ClassMoments, Contributions, Gram, Moments, ZeroCounts


def _run(acc, x, y=None, bs=None, **kw):
    bs = bs or len(x)
    for i in range(0, len(x), bs):
        extra = {k: v[i:i + bs] for k, v in kw.items()}
        acc.update(x[i:i + bs], None if y is None else y[i:i + bs], **extra)
    return acc


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=500)
    x = rng.normal(size=(500, 7)) + y[:, None] * np.linspace(0, 1, 7)  # feature 0 uninformative, 6 strong
    x[:, 3] = 2.5  # constant
    x[:, 4] = 0.0  # dead
    x[:, 5] += 1e4  # large mean, small spread
    return x.astype(np.float32), y


def test_f_matches_scipy(xy):
    x, y = xy
    out = _run(ClassMoments(4), x, y, bs=64).finalize()
    x64 = x.astype(np.float64)
    for j in (0, 1, 2, 5, 6):
        ref = f_oneway(*[x64[y == c, j] for c in range(4)]).statistic
        assert out["f"][j] == pytest.approx(ref, rel=1e-6)
    assert out["f"][3] == 0 and out["f"][4] == 0
    assert np.all(np.isfinite(out["f"]))
    np.testing.assert_array_equal(out["class_n"], np.bincount(y, minlength=4))
    np.testing.assert_allclose(out["class_mean"][2], x64[y == 2].mean(0), rtol=1e-10, atol=1e-9)


def test_f_edge_cases():
    # one class only → zeros; perfectly separated, zero within-class variance → inf (as scipy)
    x = np.array([[1.0], [1.0], [2.0], [2.0]])
    f_one = _run(ClassMoments(), x, np.zeros(4, int)).finalize()["f"]
    assert f_one[0] == 0
    f_sep = _run(ClassMoments(), x, np.array([0, 0, 1, 1])).finalize()["f"]
    assert np.isinf(f_sep[0])
    # classes grow on demand and unseen classes are ignored
    acc = ClassMoments(2)
    acc.update(np.array([[0.0], [1.0]]), np.array([0, 5]))
    acc.update(np.array([[0.5], [1.5]]), np.array([0, 5]))
    r = acc.finalize()
    assert r["class_n"].shape == (6,) and r["f"][0] == pytest.approx(f_oneway([0, .5], [1, 1.5]).statistic)


def test_merge_equals_one_pass_and_batch_size_invariant(xy):
    x, y = xy
    whole = _run(ClassMoments(4), x, y).finalize()
    a = _run(ClassMoments(4), x[:137], y[:137], bs=50)
    b = _run(ClassMoments(2), x[137:], y[137:], bs=17)
    merged = a.merge(b).finalize()
    for k in whole:
        np.testing.assert_allclose(merged[k], whole[k], rtol=1e-9, atol=1e-12)
    for bs in (1, 33, 500):
        other = _run(ClassMoments(4), x, y, bs=bs).finalize()
        np.testing.assert_allclose(other["f"], whole["f"], rtol=1e-9)
    # empty accumulator on either side
    np.testing.assert_allclose(ClassMoments().merge(_run(ClassMoments(4), x, y)).finalize()["f"], whole["f"])


def test_moments(xy):
    x, _ = xy
    x64 = x.astype(np.float64)
    whole = _run(Moments(), x, bs=60).finalize()
    np.testing.assert_allclose(whole["mean"], x64.mean(0), rtol=1e-12)
    np.testing.assert_allclose(whole["var"], x64.var(0), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(whole["sqnorm"], (x64 ** 2).sum(0), rtol=1e-12)
    assert whole["var"][3] == 0 and whole["var"][4] == 0
    merged = _run(Moments(), x[:100]).merge(_run(Moments(), x[100:], bs=7)).finalize()
    for k in whole:
        np.testing.assert_allclose(merged[k], whole[k], rtol=1e-9, atol=1e-12)
    # per-sample squared sums (conv maps) replace values² in sqnorm only
    sq = np.full_like(x64, 2.0)
    r = _run(Moments(), x, sq=sq, bs=100).finalize()
    np.testing.assert_allclose(r["sqnorm"], np.full(7, 1000.0))
    np.testing.assert_allclose(r["mean"], whole["mean"])


def test_zero_counts_and_gram(xy):
    x, _ = xy
    z = _run(ZeroCounts(), x, bs=99).finalize()
    np.testing.assert_allclose(z["apoz"], (x == 0).mean(0))
    frac = _run(ZeroCounts(fractions=True), np.full((10, 3), 0.25)).finalize()
    np.testing.assert_allclose(frac["apoz"], 0.25)
    merged = _run(ZeroCounts(), x[:10]).merge(_run(ZeroCounts(), x[10:])).finalize()
    np.testing.assert_allclose(merged["apoz"], z["apoz"])
    x64 = x.astype(np.float64)
    g = _run(Gram(), x, bs=64).finalize()["gram"]
    np.testing.assert_allclose(g, x64.T @ x64, rtol=1e-10)
    g2 = _run(Gram(), x[:250]).merge(_run(Gram(), x[250:])).finalize()["gram"]
    np.testing.assert_allclose(g2, g, rtol=1e-12)


def _ri_brute(w, b, x, active, groups=1, eps=1e-12):
    out, in_local = w.shape
    og = out // groups
    mean = np.zeros((out, in_local)); std = np.zeros((out, in_local)); cnt = np.zeros(out)
    for i in range(out):
        g = i // og
        xs = x[:, g * in_local:(g + 1) * in_local]
        c = np.abs(w[i] * xs)
        r = c / (c.sum(1, keepdims=True) + abs(b[i]) + eps)
        keep = active[:, i]
        cnt[i] = keep.sum()
        if keep.any():
            mean[i], std[i] = r[keep].mean(0), r[keep].std(0)
    return mean, std, cnt


@pytest.mark.parametrize("groups", [1, 2])
def test_contributions_match_brute_force(groups):
    rng = np.random.default_rng(3)
    w = rng.normal(size=(6, 8 // groups)); b = rng.normal(size=6)
    x = rng.normal(size=(300, 8)); active = rng.random((300, 6)) > 0.3
    active[:, 0] = False  # a row that is never active → zeros, count 0
    ref_mean, ref_std, ref_cnt = _ri_brute(w, b, x, active, groups)
    acc = Contributions(w, b, groups)
    _run(acc, x, active=active, bs=41)
    r = acc.finalize()
    np.testing.assert_allclose(r["ri_mean"], ref_mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(r["ri_std"], ref_std, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(r["ri_count"], np.broadcast_to(ref_cnt[:, None], ref_mean.shape))
    # merge == one pass
    a, c = Contributions(w, b, groups), Contributions(w, b, groups)
    _run(a, x[:120], active=active[:120], bs=30); _run(c, x[120:], active=active[120:])
    m = a.merge(c).finalize()
    for k in r:
        np.testing.assert_allclose(m[k], r[k], rtol=1e-9, atol=1e-12)


def test_clear_errors():
    with pytest.raises(OnnxPruneError, match="labels"):
        ClassMoments().update(np.zeros((4, 2)), None)
    with pytest.raises(OnnxPruneError, match="labels have shape"):
        ClassMoments().update(np.zeros((4, 2)), np.zeros(3, int))
    with pytest.raises(OnnxPruneError, match="integers"):
        ClassMoments().update(np.zeros((4, 2)), np.zeros(4))
    acc = Moments(); acc.update(np.zeros((4, 2)))
    with pytest.raises(OnnxPruneError, match="3 features, earlier batches had 2"):
        acc.update(np.zeros((4, 3)))
    with pytest.raises(OnnxPruneError, match="batch, features"):
        Gram().update(np.zeros(5))
    with pytest.raises(OnnxPruneError, match="no samples"):
        Moments().finalize()
    with pytest.raises(OnnxPruneError, match="weight expects 4"):
        Contributions(np.ones((2, 4))).update(np.ones((3, 5)))
    with pytest.raises(OnnxPruneError, match="different layers"):
        Contributions(np.ones((2, 4))).merge(Contributions(np.ones((3, 4))))


def test_class_sums_about_other_shifts_are_rebased_exactly(xy):
    # what the instrumented graph hands over per batch: sums about some shift (here each batch's last sample)
    x, y = xy
    ref = _run(ClassMoments(4), x, y, bs=64).finalize()
    parts = []
    for i in range(0, len(x), 64):
        xb, yb = x[i:i + 64].astype(np.float64), y[i:i + 64]
        d, onehot = xb - xb[-1], np.eye(4)[yb].T
        parts.append(ClassMoments.from_sums(onehot.sum(1), xb[-1:], onehot @ d, (d * d).sum(0)))
    added, merged = ClassMoments(), ClassMoments(4)
    for p in parts:
        added.add_sums(p.count, p.shift, p.s, p.ss)
        merged.merge(p)
    for acc in (added, merged):
        r = acc.finalize()
        for k in ref:
            np.testing.assert_allclose(r[k], ref[k], rtol=1e-9, atol=1e-9, err_msg=k)
    assert r["f"][3] == 0 and r["f"][4] == 0
    with pytest.raises(OnnxPruneError, match="do not match 2 classes and 3 features"):
        ClassMoments().add_sums(np.ones(2), np.zeros(3), np.zeros((2, 3)), np.zeros(2))
