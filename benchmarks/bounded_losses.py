"""Learn-then-Test with bounded per-sample losses (models that are not (N, K) classifiers): how often the certificate
is wrong, on synthetic pruned models whose true risk is known exactly.

    python benchmarks/bounded_losses.py [--trials 2000] [--n 400]

Two synthetic families, each a grid of 10 "pruning ratios" with nested damage (what a larger ratio breaks includes
what a smaller one broke) and a risk curve whose first null point sits just above ε = 0.05 (δ = 0.1):
  * segmentation (16 positions per sample): at ratio j a sample is hit with probability 2·r_j and then each of its
    positions changes class with probability 1/2 — loss `positions` (fraction of positions changed), mean r_j;
  * regression / embedding (D = 4): the pruned output moves by σ_j·s·‖d‖, s ~ U(0, 2) — loss `relative` at τ = 0.1,
    mean min(1, σ s / τ) known in closed form.
For each p-value (Hoeffding–Bentkus, WSR) with fixed-sequence testing: the share of trials certifying a ratio whose
true risk exceeds ε (must be ≤ δ), and the share certifying at least the 4th ratio (power). "pixels as samples" is
the tempting mistake — the exact binomial test on N·16 positions as if they were independent samples.
"""
from __future__ import annotations

import argparse

import numpy as np

from onnxprune.certify import (binomial_pvalue, certify, fixed_sequence, position_disagreement_loss,
                               relative_error_loss)

EPS, DELTA, POSITIONS, TAU = 0.05, 0.1, 16, 0.1
GRID = np.linspace(0.0, 0.9, 10)
SEG_RISK = np.array([0.0, 0.005, 0.01, 0.02, 0.03, EPS + 0.002, 0.07, 0.1, 0.15, 0.2])
SIGMAS = np.array([0.0, 0.001, 0.002, 0.003, 0.004, TAU * (EPS + 0.002), 0.01, 0.02, 0.05, 0.1])


def segmentation(rng: np.random.Generator, n: int) -> np.ndarray:
    dense = rng.integers(0, 5, (n, POSITIONS))
    w, u = rng.random((n, 1)), rng.random((n, POSITIONS))
    return np.stack([position_disagreement_loss(np.where((w < 2 * r) & (u < 0.5), (dense + 1) % 5, dense), dense)
                     for r in SEG_RISK])


def regression(rng: np.random.Generator, n: int) -> np.ndarray:
    dense = rng.normal(size=(n, 4))
    direction = rng.normal(size=(n, 4))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    step = rng.uniform(0, 2, (n, 1)) * np.linalg.norm(dense, axis=1, keepdims=True) * direction
    return np.stack([relative_error_loss(dense + s * step, dense, TAU) for s in SIGMAS])


def regression_risk() -> np.ndarray:
    a = 2 * SIGMAS / TAU
    return np.where(a <= 1, a / 2, 1 - 1 / (2 * np.maximum(a, 1e-12)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--n", type=int, default=400, help="certification samples per trial")
    args = ap.parse_args()
    se = np.sqrt(DELTA * (1 - DELTA) / args.trials)
    print(f"ε = {EPS}, δ = {DELTA}, n = {args.n}, {args.trials} trials (±{se:.3f} one standard error at δ)\n")
    print("| model | loss | p-value | wrong certificates (≤ δ) | certifies ≥ 4th ratio |")
    print("|---|---|---|---|---|")
    for name, make, risk, loss in (("segmentation", segmentation, SEG_RISK, "positions"),
                                   ("regression", regression, regression_risk(), "relative, τ 0.1")):
        rng = np.random.default_rng(0)
        tables = [make(rng, args.n) for _ in range(args.trials)]
        for pv in ("hb", "wsr"):
            certs = [certify(GRID, t, EPS, DELTA, pvalue=pv) for t in tables]
            wrong = np.mean([np.any(c.certified & (risk > EPS)) for c in certs])
            power = np.mean([c.certified_ratio is not None and c.certified_ratio >= GRID[3] for c in certs])
            print(f"| {name} | {loss} | {pv} | {wrong:.3f} | {power:.3f} |")
        if name == "segmentation":
            pixels = [fixed_sequence(binomial_pvalue(np.round(t.sum(1) * POSITIONS), args.n * POSITIONS, EPS), DELTA)
                      for t in tables]
            wrong = np.mean([np.any(c & (risk > EPS)) for c in pixels])
            power = np.mean([c[:4].all() for c in pixels])
            print(f"| {name} | pixels as samples (wrong) | binomial | {wrong:.3f} | {power:.3f} |")


if __name__ == "__main__":
    main()
