"""The LTT procedure: grids, sample-size floor, splits, the certificate, and FWER <= δ end to end."""

import dataclasses
import json
import math

import numpy as np
import pytest

from onnxprune.certify import Certification, bonferroni, certify, fixed_sequence, min_samples, parse_grid, split_indices
from onnxprune.errors import OnnxPruneError

# --- grid ------------------------------------------------------------------------------------


def test_parse_grid_range_is_inclusive_and_clean():
    grid = parse_grid("0:0.95:0.05")
    assert len(grid) == 20 and grid[0] == 0.0 and grid[-1] == 0.95
    assert grid[6] == 0.3  # no 0.30000000000000004
    assert np.all(np.diff(grid) > 0)


def test_parse_grid_list_is_sorted():
    np.testing.assert_array_equal(parse_grid("0.5, 0.1,0.3"), [0.1, 0.3, 0.5])


@pytest.mark.parametrize(
    "text", ["abc", "0:0.5", "0:0.9:0", "0.5:0.1:0.1", "0:1:0.1", "-0.1:0.5:0.1", "0.2,,0.3", "1.0"]
)
def test_parse_grid_refuses_bad_text(text):
    with pytest.raises(OnnxPruneError, match="grid"):
        parse_grid(text)


# --- sample-size floor -----------------------------------------------------------------------


@pytest.mark.parametrize("eps,delta", [(0.05, 0.1), (0.01, 0.05), (0.2, 0.01), (0.1, 0.9)])
def test_min_samples_is_the_smallest_n_with_zero_errors_certifiable(eps, delta):
    n = min_samples(eps, delta)
    assert (1 - eps) ** n <= delta < (1 - eps) ** (n - 1)


def test_min_samples_known_value():
    assert min_samples(0.05, 0.1) == 45  # 0.95^45 = 0.0994, 0.95^44 = 0.1047


@pytest.mark.parametrize("pvalue", ["binomial", "hb", "wsr"])
def test_too_few_samples_names_the_minimum(pvalue):
    with pytest.raises(OnnxPruneError, match=r"need n ≥ 45, got n=44"):
        certify([0.0, 0.5], np.zeros((2, 44)), 0.05, 0.1, pvalue=pvalue)


@pytest.mark.parametrize("pvalue", ["binomial", "hb"])
def test_zero_observed_risk_certifies_at_exactly_min_samples(pvalue):
    n = min_samples(0.05, 0.1)
    cert = certify([0.1, 0.2, 0.3], np.zeros((3, n)), 0.05, 0.1, pvalue=pvalue)
    assert cert.certified.all() and cert.certified_ratio == 0.3
    np.testing.assert_allclose(cert.pvalues, 0.95**n)


# --- the procedure ---------------------------------------------------------------------------

ZERO, ONES = np.zeros(200), np.ones(200)


def test_fixed_sequence_certifies_the_last_ratio_before_the_first_failure():
    cert = certify([0.1, 0.2, 0.3], np.stack([ZERO, ONES, ZERO]), 0.05, 0.1)
    np.testing.assert_array_equal(cert.certified, [True, False, False])
    assert cert.certified_ratio == 0.1
    assert "certified ratio 0.1" in cert.message


def test_bonferroni_certifies_the_largest_rejected_ratio_regardless_of_order():
    cert = certify([0.1, 0.2, 0.3], np.stack([ZERO, ONES, ZERO]), 0.05, 0.1, control="bonferroni")
    np.testing.assert_array_equal(cert.certified, [True, False, True])
    assert cert.certified_ratio == 0.3


@pytest.mark.parametrize("control", ["fixed_sequence", "bonferroni"])
def test_nothing_certified_is_said_plainly(control):
    cert = certify([0.1, 0.2], np.stack([ONES, ONES]), 0.05, 0.1, control=control)
    assert cert.certified_ratio is None and not cert.certified.any()
    assert cert.message.startswith("no ratio certified at ε=0.05, δ=0.1: the dense model is returned")


def test_observed_risk_at_eps_is_not_certified():
    losses = np.zeros((1, 1000))
    losses[0, :50] = 1  # R̂ = ε exactly
    for pvalue in ("binomial", "hb", "wsr"):
        cert = certify([0.1], losses, 0.05, 0.1, pvalue=pvalue)
        assert cert.certified_ratio is None and cert.pvalues[0] >= 0.5, pvalue
    assert certify([0.1], losses, 0.05, 0.1, pvalue="hb").pvalues[0] == 1.0


def test_bounded_losses_work_with_hb_and_wsr_but_not_binomial():
    losses = np.full((2, 500), 0.01)
    for pvalue in ("hb", "wsr"):
        assert certify([0.1, 0.2], losses, 0.05, 0.1, pvalue=pvalue).certified_ratio == 0.2, pvalue
    with pytest.raises(OnnxPruneError, match="0/1 losses"):
        certify([0.1, 0.2], losses, 0.05, 0.1, pvalue="binomial")


@pytest.mark.parametrize(
    "grid,losses,match",
    [
        ([0.2, 0.1], np.zeros((2, 100)), "ascending"),
        ([0.1, 0.1], np.zeros((2, 100)), "ascending"),
        ([0.1, 1.0], np.zeros((2, 100)), r"\[0, 1\)"),
        ([0.1, 0.2], np.zeros((3, 100)), "3 rows but the grid has 2"),
        ([0.1, 0.2], np.zeros(100), "2-D"),
        ([0.1, 0.2], np.full((2, 100), 1.5), r"\[0, 1\]"),
        ([0.1, 0.2], np.full((2, 100), -0.1), r"\[0, 1\]"),
        ([0.1, 0.2], np.full((2, 100), np.nan), r"\[0, 1\]"),
    ],
)
def test_invalid_inputs_are_refused(grid, losses, match):
    with pytest.raises(OnnxPruneError, match=match):
        certify(grid, losses, 0.05, 0.1, pvalue="hb")


@pytest.mark.parametrize(
    "kwargs,match", [({"pvalue": "normal"}, "p-value method"), ({"control": "holm"}, "error control")]
)
def test_unknown_methods_are_refused(kwargs, match):
    with pytest.raises(OnnxPruneError, match=match):
        certify([0.1], np.zeros((1, 100)), 0.05, 0.1, **kwargs)


# --- the certificate -------------------------------------------------------------------------


@pytest.fixture
def cert():
    return certify([0.0, 0.25, 0.5], np.stack([ZERO, ZERO, ONES]), 0.05, 0.1)


def test_rows_give_the_full_per_ratio_table(cert):
    rows = cert.rows()
    assert [r["ratio"] for r in rows] == [0.0, 0.25, 0.5]
    assert [r["risk"] for r in rows] == [0.0, 0.0, 1.0]
    assert [r["certified"] for r in rows] == [True, True, False]
    assert rows[0]["p_value"] == pytest.approx(0.95**200) and rows[2]["p_value"] == 1.0
    assert all(type(r["certified"]) is bool and type(r["p_value"]) is float for r in rows)


def test_to_dict_round_trips_through_json(cert):
    data = json.loads(json.dumps(cert.to_dict()))
    assert data["certified_ratio"] == 0.25 and data["n"] == 200 and data["certified"] == [True, True, False]
    assert data["pvalue_method"] == "binomial" and data["control"] == "fixed_sequence"
    assert json.loads(json.dumps(certify([0.5], np.ones((1, 200)), 0.05, 0.1).to_dict()))["certified_ratio"] is None


def test_certificate_is_immutable(cert):
    assert isinstance(cert, Certification)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cert.certified_ratio = 0.9
    with pytest.raises(ValueError):
        cert.certified[2] = True


# --- split -----------------------------------------------------------------------------------


def test_split_is_a_seeded_disjoint_sorted_partition():
    build, cal = split_indices(101, cert_fraction=0.3, seed=4)
    assert len(cal) == 30 and len(build) == 71
    assert not set(build) & set(cal) and set(build) | set(cal) == set(range(101))
    assert np.all(np.diff(build) > 0) and np.all(np.diff(cal) > 0)
    again = split_indices(101, cert_fraction=0.3, seed=4)
    np.testing.assert_array_equal(cal, again[1])
    assert not np.array_equal(cal, split_indices(101, cert_fraction=0.3, seed=5)[1])


@pytest.mark.parametrize("n,fraction", [(1, 0.5), (10, 0.0), (10, 1.0)])
def test_split_refuses_degenerate_requests(n, fraction):
    with pytest.raises(OnnxPruneError):
        split_indices(n, cert_fraction=fraction)


# --- FWER of the whole procedure -------------------------------------------------------------

EPS, DELTA, N, TRIALS = 0.05, 0.1, 400, 1000
SE = math.sqrt(DELTA * (1 - DELTA) / TRIALS)


def _fwer(certs, true_risk):
    return np.mean([np.any(c.certified & (true_risk > EPS)) for c in certs])


@pytest.mark.parametrize("pvalue", ["binomial", "hb", "wsr"])
def test_fixed_sequence_fwer_on_a_monotone_risk_curve(pvalue):
    # Nested losses (a sample hurt at ratio j stays hurt at larger ratios), as pruning does.
    # The first null point sits just above ε, where a false certificate is most likely.
    grid = np.linspace(0.0, 0.9, 10)
    true_risk = np.array([0.0, 0.005, 0.01, 0.015, 0.02, EPS + 0.001, 0.07, 0.1, 0.15, 0.2])
    u = np.random.default_rng(11).random((TRIALS, 2 * N))
    certs = [certify(grid, (row[None, :] < true_risk[:, None]).astype(float), EPS, DELTA, pvalue=pvalue) for row in u]
    assert _fwer(certs, true_risk) <= DELTA + 3 * SE
    if pvalue == "binomial":
        # The check is sharp enough to catch a procedure that spends 2δ.
        loose = np.mean([np.any(fixed_sequence(c.pvalues, 2 * DELTA) & (true_risk > EPS)) for c in certs])
        assert loose > DELTA + 3 * SE


def test_bonferroni_fwer_with_many_nulls_just_above_eps():
    # Independent rows and seven nulls at ε + 0.002: uncorrected testing would fail often.
    grid = np.linspace(0.0, 0.9, 10)
    true_risk = np.array([0.0, 0.01, 0.02] + [EPS + 0.002] * 7)
    rng = np.random.default_rng(12)
    certs = [
        certify(grid, (rng.random((10, N)) < true_risk[:, None]).astype(float), EPS, DELTA, control="bonferroni")
        for _ in range(TRIALS)
    ]
    assert _fwer(certs, true_risk) <= DELTA + 3 * SE
    naive = np.mean([np.any((c.pvalues <= DELTA) & (true_risk > EPS)) for c in certs])
    assert naive > DELTA + 3 * SE
    assert np.mean([bonferroni(c.pvalues, DELTA)[:2].all() for c in certs]) > 0.9  # still has power


# --- FWER with bounded losses of non-classifiers (segmentation maps, regression outputs) ------

from onnxprune.certify import binomial_pvalue, position_disagreement_loss, relative_error_loss  # noqa: E402

GRID = np.linspace(0.0, 0.9, 10)
POSITIONS, TAU = 16, 0.1
BOUNDED_TRIALS = 600  # enough to separate δ from the pixels-as-samples mistake (0.24) at ±3 standard errors
BOUNDED_SE = math.sqrt(DELTA * (1 - DELTA) / BOUNDED_TRIALS)


def _segmentation_losses(rng, true_risk):
    """A synthetic segmentation model pruned at each ratio: at ratio j sample i is hit iff w_i < 2·r_j, and in a hit
    sample each position changes class iff its draw u < 1/2. Per-sample fractions vary (a bounded, not 0/1, loss),
    changes are nested in the ratio as pruning's are, the mean loss is exactly r_j, and positions of one sample are
    strongly dependent — as neighbouring pixels are."""
    dense = rng.integers(0, 5, (N, POSITIONS))
    w, u = rng.random((N, 1)), rng.random((N, POSITIONS))
    rows = [position_disagreement_loss(np.where((w < 2 * r) & (u < 0.5), (dense + 1) % 5, dense), dense)
            for r in true_risk]
    return np.stack(rows)


def _relative_error_risk(sigma):
    """E min(1, σ·s/τ) for s ~ U(0, 2): a/2 for a = 2σ/τ ≤ 1, else 1 − 1/(2a)."""
    a = 2 * sigma / TAU
    return np.where(a <= 1, a / 2, 1 - 1 / (2 * np.maximum(a, 1e-12)))


def _regression_losses(rng, sigmas):
    """A synthetic regression / embedding model (D = 4) pruned at each ratio: the pruned output is the dense one
    moved by σ_j·s_i·‖d‖ in a random direction, s_i ~ U(0, 2), so the relative error is exactly σ_j·s_i."""
    dense = rng.normal(size=(N, 4))
    direction = rng.normal(size=(N, 4))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    step = rng.uniform(0, 2, (N, 1)) * np.linalg.norm(dense, axis=1, keepdims=True) * direction
    return np.stack([relative_error_loss(dense + s * step, dense, TAU) for s in sigmas])


@pytest.mark.parametrize("pvalue", ["hb", "wsr"])
def test_fixed_sequence_fwer_with_the_position_loss_of_a_segmentation_model(pvalue):
    true_risk = np.array([0.0, 0.005, 0.01, 0.02, 0.03, EPS + 0.002, 0.07, 0.1, 0.15, 0.2])
    rng = np.random.default_rng(21)
    tables = [_segmentation_losses(rng, true_risk) for _ in range(BOUNDED_TRIALS)]
    certs = [certify(GRID, losses, EPS, DELTA, pvalue=pvalue) for losses in tables]
    assert _fwer(certs, true_risk) <= DELTA + 3 * BOUNDED_SE
    assert np.mean([c.certified_ratio is not None and c.certified_ratio >= GRID[3] for c in certs]) > 0.5  # power
    assert np.any((tables[0] > 0) & (tables[0] < 1))  # really a bounded loss, not 0/1
    # The check is sharp enough to catch the tempting mistake of counting pixels as samples (n = N·positions).
    pixels = [fixed_sequence(binomial_pvalue(np.round(t.sum(1) * POSITIONS), N * POSITIONS, EPS), DELTA)
              for t in tables]
    assert np.mean([np.any(c & (true_risk > EPS)) for c in pixels]) > DELTA + 3 * BOUNDED_SE


@pytest.mark.parametrize("pvalue", ["hb", "wsr"])
def test_fixed_sequence_fwer_with_the_relative_error_loss_of_a_regression_model(pvalue):
    sigmas = np.array([0.0, 0.001, 0.002, 0.003, 0.004, 0.0, 0.01, 0.02, 0.05, 0.1])
    sigmas[5] = TAU * (EPS + 0.002)  # a = 2σ/τ < 1, so the risk is σ/τ = ε + 0.002: the first null, just above ε
    true_risk = _relative_error_risk(sigmas)
    assert np.all(np.diff(true_risk) >= 0) and true_risk[4] <= EPS < true_risk[5]
    rng = np.random.default_rng(22)
    certs = [certify(GRID, _regression_losses(rng, sigmas), EPS, DELTA, pvalue=pvalue)
             for _ in range(BOUNDED_TRIALS)]
    assert _fwer(certs, true_risk) <= DELTA + 3 * BOUNDED_SE
    assert np.mean([c.certified_ratio is not None and c.certified_ratio >= GRID[2] for c in certs]) > 0.9  # power
    many = np.concatenate([_regression_losses(rng, sigmas) for _ in range(10)], axis=1)
    np.testing.assert_allclose(many.mean(axis=1), true_risk, atol=0.02)  # the risk formula is the loss's mean
