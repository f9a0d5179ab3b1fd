"""Write the bundled calibration / evaluation sets in calib_data/ (uint8 images, int64 labels).

    python models/make_calib.py --data ../shared/data

mnist_calib: MNIST val (10k, the screening paper's split; never trained on); mnist_eval: MNIST test (10k).
cifar10_calib: 5,000 images held out of CIFAR-10 train (500 per class, seeded; see datasets.py); cifar10_eval:
CIFAR-10 test (10k). Calibration and evaluation sets never overlap and none is used in training. The CIFAR sets
are stored in a seeded random order (the JPEG archive is in class order), so any prefix is a fair sample.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import datasets  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "calib_data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    m = datasets.load_mnist(args.data)
    c = datasets.load_cifar10(args.data)
    sets = {"mnist_calib": (m["x_val"], m["y_val"]), "mnist_eval": (m["x_test"], m["y_test"]),
            "cifar10_calib": (c["x_calib"], c["y_calib"]), "cifar10_eval": (c["x_test"], c["y_test"])}
    for name, (x, y) in sets.items():
        if name.startswith("cifar"):  # decoded in class order: shuffle (seeded) so any prefix is a fair sample
            order = np.random.default_rng(datasets.SPLIT_SEED).permutation(len(y))
            x, y = x[order], y[order]
        np.savez_compressed(OUT / f"{name}.npz", x=x.astype(np.uint8), y=y.astype(np.int64))
        print(f"{name}: x {x.shape} uint8, y {y.shape}, {(OUT / f'{name}.npz').stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
