"""Raw datasets for training the bundled models and for building `calib_data/`.

Splits are fixed and seeded so the calibration sets never overlap the data a model was trained on:
MNIST trains on the 50k train split, calibrates on val, evaluates on test; CIFAR-10 holds 500 images per
class out of train (the calibration set) and evaluates on test.
"""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_HOLDOUT_PER_CLASS = 500
SPLIT_SEED = 20261122


def cache_dir() -> Path:
    d = Path(os.environ.get("ONNXPRUNE_CACHE", Path.home() / ".cache" / "onnxprune"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def load_mnist(data_dir: str | Path) -> dict[str, np.ndarray]:
    """MNIST as uint8 (N, 1, 28, 28) images and int64 labels for the train / val / test splits."""
    z = np.load(Path(data_dir) / "mnist.npz")
    out = {}
    for split in ("train", "val", "test"):
        out[f"x_{split}"] = z[f"x_{split}"].reshape(-1, 1, 28, 28).astype(np.uint8)
        out[f"y_{split}"] = z[f"y_{split}"].astype(np.int64)
    return out


def _decode_cifar_tar(path: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    xs: dict[str, list] = {"train": [], "test": []}
    ys: dict[str, list] = {"train": [], "test": []}
    keys: dict[str, list] = {"train": [], "test": []}
    with tarfile.open(path, "r:gz") as tar:
        for m in tar:
            if not m.isfile() or not m.name.endswith(".jpg"):
                continue
            parts = Path(m.name).parts
            split, cls = parts[-3], parts[-2]
            img = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")
            xs[split].append(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
            ys[split].append(CIFAR_CLASSES.index(cls))
            keys[split].append(f"{cls}/{parts[-1]}")
    out = {}
    for split in ("train", "test"):
        order = np.argsort(np.array(keys[split]))  # tar order is not guaranteed: sort by class/file name
        out[f"x_{split}"] = np.stack(xs[split])[order]
        out[f"y_{split}"] = np.array(ys[split], dtype=np.int64)[order]
    return out


def load_cifar10(data_dir: str | Path) -> dict[str, np.ndarray]:
    """CIFAR-10 as uint8 (N, 3, 32, 32): `train` (45k), `calib` (5k held out of train, 500/class), `test`."""
    cached = cache_dir() / "cifar10_decoded.npz"
    if not cached.exists():
        arrays = _decode_cifar_tar(Path(data_dir) / "cifar10-jpg.tar.gz")
        np.savez(cached, **arrays)
    z = dict(np.load(cached))
    rng = np.random.default_rng(SPLIT_SEED)
    hold = np.concatenate([rng.choice(np.flatnonzero(z["y_train"] == c), CIFAR_HOLDOUT_PER_CLASS, replace=False)
                           for c in range(10)])
    hold.sort()
    keep = np.setdiff1d(np.arange(len(z["y_train"])), hold)
    return {"x_train": z["x_train"][keep], "y_train": z["y_train"][keep],
            "x_calib": z["x_train"][hold], "y_calib": z["y_train"][hold],
            "x_test": z["x_test"], "y_test": z["y_test"]}
