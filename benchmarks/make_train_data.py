"""The user's training data for recovery benchmarks ("the user's own training set" of issue 12), built from ../shared/data.

    python benchmarks/make_train_data.py cifar --out /tmp/cifar10_train45k   # 45k CIFAR-10 train images, x.npy/y.npy
    python benchmarks/make_train_data.py mnist --out /tmp/mnist_train50k.npz  # the 50k MNIST train split

CIFAR: every train image not in calib_data/cifar10_calib.npz. Writes `x.npy` (uint8, N×3×32×32, raw pixels like the calibration data — the model normalises) and `y.npy` (int64)
in a seeded order, a folder `--data`/`--recover-data` read as memory maps. Checks first that the calibration file
is exactly the held-out split in its seeded order and that no train image is byte-equal to a calibration image.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "models"))
import datasets  # noqa: E402


def mnist(data: str, out: str) -> None:
    """MNIST's 50k train split (disjoint from calib_data/mnist_calib.npz, the val split) as one .npz (x, y)."""
    m = datasets.load_mnist(data)
    np.savez(out, x=m["x_train"], y=m["y_train"].astype(np.int64))
    print(f"wrote {out}: {len(m['y_train'])} images")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=["cifar", "mnist"])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="../shared/data")
    ap.add_argument("--out", required=True, help="output folder (cifar: x.npy, y.npy) or .npz file (mnist)")
    args = ap.parse_args()
    if args.dataset == "mnist":
        return mnist(args.data, args.out)
    c = datasets.load_cifar10(args.data)
    x, y = c["x_train"], c["y_train"]
    calib = np.load(REPO / "calib_data" / "cifar10_calib.npz")
    order = np.random.default_rng(datasets.SPLIT_SEED).permutation(len(c["y_calib"]))
    if not (np.array_equal(calib["x"], c["x_calib"][order]) and np.array_equal(calib["y"], c["y_calib"][order])):
        sys.exit("error: calib_data/cifar10_calib.npz is not the held-out split of this CIFAR-10 tree")
    seen = {a.tobytes() for a in calib["x"]}
    shared = sum(a.tobytes() in seen for a in x)
    if shared:
        sys.exit(f"error: {shared} train image(s) are byte-equal to calibration images")
    perm = np.random.default_rng(datasets.SPLIT_SEED + 1).permutation(len(y))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "x.npy", x[perm].astype(np.uint8))
    np.save(out / "y.npy", y[perm].astype(np.int64))
    print(f"wrote {out}: {len(y)} images, per class {np.bincount(y).tolist()}")


if __name__ == "__main__":
    main()
