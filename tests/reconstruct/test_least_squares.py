"""Least-squares reconstruction: exact recovery, Gram accumulation, bias handling, and a LeNet improvement."""
from __future__ import annotations

import numpy as np

from builders import LENET300, MNIST_CALIB, MNIST_EVAL
from onnxprune.modes.unstructured import UNSTRUCTURED as U
from onnxprune.io.data import load_dataset
from onnxprune.measure.evaluate import predict
from onnxprune.io.model import load_model
from onnxprune.select.plan import PruneSettings
from onnxprune.reconstruct.least_squares import PairedGram, refit_linear, ridge_refit, ridge_refit_all


def test_ridge_refit_recovers_a_sparse_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    w = rng.normal(size=(4, 6))
    keep = rng.random((4, 6)) > 0.5
    w_true = np.where(keep, w, 0.0)
    got = ridge_refit(x.T @ x, x.T @ (x @ w_true.T), keep, ridge=1e-9)
    np.testing.assert_allclose(got, w_true, atol=1e-6)
    assert (got[~keep] == 0).all()


def test_ridge_refit_by_hand():
    # one input, h = Σx² = 4, c = Σx·t = 6, ridge 0.5 relative → λ = 2 → w = 6 / (4 + 2) = 1
    np.testing.assert_allclose(ridge_refit(np.array([[4.0]]), np.array([[6.0]]), np.array([[True]]), 0.5), [[1.0]])


def _gram(rng, n, out, batches=2):
    h, c = np.zeros((n, n)), np.zeros((n, out))
    for _ in range(batches):  # accumulated like the re-fit: float32 batch products, float64 sums
        x = rng.normal(size=(n + 50, n)).astype(np.float32)
        h += x.T @ x
        c += x.T @ rng.normal(size=(n + 50, out)).astype(np.float32)
    return h, c


def test_ridge_refit_all_equals_ridge_refit_bit_for_bit_and_gives_h_back():
    rng = np.random.default_rng(3)
    for n in (1, 7, 512, 700):  # 700: more than one band of the in-place restore
        h, c = _gram(rng, n, 5)
        h0 = h.copy()
        got = ridge_refit_all(h, c, 1e-3)
        np.testing.assert_array_equal(h, h0)  # factored in h's memory, then restored exactly
        np.testing.assert_array_equal(got, ridge_refit(h0, c, np.ones((5, n), bool), 1e-3))


def test_ridge_refit_all_falls_back_when_h_is_indefinite_or_asymmetric():
    rng = np.random.default_rng(4)
    q = rng.normal(size=(40, 40))
    c = rng.normal(size=(40, 2))
    for h in (q + q.T, q):  # Cholesky fails part-way / not symmetric: the general solver, h untouched
        h0 = h.copy()
        got = ridge_refit_all(h, c, 1e-6)
        np.testing.assert_array_equal(h, h0)
        np.testing.assert_array_equal(got, ridge_refit(h0, c, np.ones((2, 40), bool), 1e-6))


def test_paired_gram_matches_direct_products():
    rng = np.random.default_rng(1)
    xd = rng.normal(size=(50, 4)).astype(np.float32)
    xp = xd[:, :3] * 0.5
    g = PairedGram()
    for i in range(0, 50, 16):
        g.update(xp[i:i + 16], xd[i:i + 16])
    a, b = np.hstack([xp, np.ones((50, 1))]), np.hstack([xd, np.ones((50, 1))])
    np.testing.assert_allclose(g.h, a.T @ a, rtol=1e-5)
    np.testing.assert_allclose(g.cross, a.T @ b, rtol=1e-5)
    same = PairedGram()
    same.update(xd, xd)
    np.testing.assert_allclose(same.cross, same.h)


def test_refit_linear_with_and_without_bias():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    w, b = rng.normal(size=(3, 5)), rng.normal(size=3)
    g = PairedGram()
    g.update(x, x)
    keep = np.ones((3, 5), bool)
    w2, b2 = refit_linear(g, w, b, keep, ridge=1e-9)
    np.testing.assert_allclose(w2, w, atol=1e-4)
    np.testing.assert_allclose(b2, b, atol=1e-4)
    keep[:, 0] = False
    w3, b3 = refit_linear(g, w, b, keep, ridge=1e-9, fit_bias=False)
    np.testing.assert_array_equal(b3, b)  # bias left as the dense one
    assert (w3[:, 0] == 0).all()
    resid_fit = np.linalg.norm(x @ w3.T + b - (x @ w.T + b))
    resid_mask = np.linalg.norm(x @ np.where(keep, w, 0).T - x @ w.T)
    assert resid_fit < resid_mask


def test_reconstruction_restores_lenet_at_90_percent(tmp_path):
    m = load_model(LENET300)
    z = np.load(MNIST_CALIB)
    p = tmp_path / "calib.npz"
    np.savez(p, x=z["x"][:2000], y=z["y"][:2000])
    calib = load_dataset(p, m)
    ev = load_dataset(MNIST_EVAL, m).subset(np.arange(500))
    s = PruneSettings(mode="unstructured", criterion="magnitude", ratio=0.9)
    plan = U.select(m, U.score(m, None, s), 0.9, s)
    pruned = U.apply(m, plan)
    fixed = U.reconstruct(m, pruned, plan, calib, s)
    acc = lambda model: float((predict(model, ev) == ev.labels).mean())  # noqa: E731
    assert acc(fixed) > acc(pruned) + 0.02 and acc(fixed) > 0.96
    w = {t.name: t for t in fixed.graph.initializer}
    from onnx import numpy_helper

    for name, mask in plan.masks.items():  # nothing outside the mask comes back to life
        assert np.count_nonzero(numpy_helper.to_array(w[name])) <= mask.sum()
