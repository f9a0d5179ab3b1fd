"""Learn-then-Test on LeNet-300-100: does the certificate hold, and how close is it to the oracle?

    python benchmarks/ltt_mnist.py --data ../shared/data [--splits 200] [--n-cal 5000]

Candidates (unstructured, grid 0:0.95:0.05) are scored from statistics on 5,000 MNIST *train* images, disjoint
from everything below (the LTT validity rule). MNIST val + test are pooled (20,000 images); every candidate's
per-sample "new error" loss 1{dense right, pruned wrong} is computed once. Then, for each random split into
n_cal certification samples and the rest as a test set: certify (binomial p-values, fixed-sequence testing,
δ = 0.1), read the certified ratio's risk on the test part, and the oracle ratio (the largest whose test risk ≤ ε).
Reports mean certified ratio, mean oracle ratio, and the fraction of splits whose test risk exceeds ε (must be
≤ δ), with a 95% Clopper–Pearson interval.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.stats import beta

from onnxprune.certify import certify, parse_grid
from onnxprune.io.data import Dataset
from onnxprune.measure.evaluate import predict
from onnxprune.io.model import load_model
from onnxprune.workflows.prune import prepare
from onnxprune.select.plan import PruneSettings
from onnxprune.io.runtime import input_specs

REPO = Path(__file__).resolve().parent.parent
CANDIDATES = [("magnitude", "magnitude", 0.0), ("F-screen α=0.2", "fscreen", 0.2), ("F-screen α=0.4", "fscreen", 0.4)]


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with mnist.npz (the 50k/10k/10k split)")
    ap.add_argument("--splits", type=int, default=200)
    ap.add_argument("--n-cal", type=int, default=5000)
    ap.add_argument("--eps", type=float, nargs="+", default=[0.005, 0.01, 0.02])
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--grid", default="0:0.95:0.05")
    args = ap.parse_args()

    model = load_model(REPO / "models" / "lenet300_mnist.onnx")
    specs = input_specs(model)
    z = np.load(Path(args.data) / "mnist.npz")
    as_x = lambda a: a.reshape(-1, 1, 28, 28)  # noqa: E731
    train = Dataset({specs[0].name: as_x(z["x_train"][:5000])}, z["y_train"][:5000].astype(np.int64), specs)
    pool = Dataset({specs[0].name: as_x(np.concatenate([z["x_val"], z["x_test"]]))},
                   np.concatenate([z["y_val"], z["y_test"]]).astype(np.int64), specs)
    grid = parse_grid(args.grid)
    dense = predict(model, pool)
    rng = np.random.default_rng(0)
    splits = [rng.permutation(len(pool)) for _ in range(args.splits)]
    print(f"LeNet-300-100, {len(pool)} pooled MNIST val+test images, {args.splits} splits, n_cal={args.n_cal}, "
          f"δ={args.delta}, grid {args.grid}; candidates scored on 5,000 MNIST train images\n")
    print("| candidates | ε | mean certified ratio | mean oracle ratio | gap | nothing certified | violations | "
          "violation rate (95% CI) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for label, crit, alpha in CANDIDATES:
        prep = prepare(model, train, PruneSettings(mode="unstructured", criterion=crit, alpha=alpha))
        losses = np.stack([np.zeros(len(pool)) if r == 0 else
                           ((dense == pool.labels) & (predict(prep.build(float(r), train, reconstruct=prep.settings.reconstruct).model, pool) != pool.labels))
                           .astype(float) for r in grid])
        for eps in args.eps:
            cert_r, oracle_r, viol, none = [], [], 0, 0
            for perm in splits:
                cal, test = perm[:args.n_cal], perm[args.n_cal:]
                c = certify(grid, losses[:, cal], eps, args.delta)
                test_risk = losses[:, test].mean(1)
                ok = np.flatnonzero(test_risk <= eps)
                oracle_r.append(grid[ok].max() if ok.size else 0.0)
                r = c.certified_ratio
                if r is None:
                    none += 1
                    r = 0.0
                cert_r.append(r)
                viol += int(test_risk[np.searchsorted(grid, r)] > eps)
            lo, hi = clopper_pearson(viol, args.splits)
            print(f"| {label} | {eps} | {np.mean(cert_r):.3f} | {np.mean(oracle_r):.3f} | "
                  f"{np.mean(oracle_r) - np.mean(cert_r):.3f} | {none} | {viol}/{args.splits} | "
                  f"{viol / args.splits:.3f} [{lo:.3f}, {hi:.3f}] |", flush=True)


if __name__ == "__main__":
    main()
