"""Random calibration data in the three layouts `--calib` / `--data` accept, for the scale measurements.

    python benchmarks/make_data.py /tmp/d --n 8192 --shape 3,32,32 --classes 10 --layout npz      # /tmp/d.npz
    python benchmarks/make_data.py /tmp/d --n 8192 --shape 3,32,32 --classes 10 --layout shards   # /tmp/d/0000.npz ...
    python benchmarks/make_data.py /tmp/d --n 8192 --shape 3,32,32 --classes 10 --layout npy      # /tmp/d/x.npy, y.npy

Written shard by shard (memory bounded by one shard); the same seed gives the same samples in every layout.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--shape", default="3,32,32")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--layout", choices=["npz", "shards", "npy"], default="shards")
    ap.add_argument("--shard", type=int, default=512, help="samples per shard (and per generated chunk)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    shape = tuple(int(s) for s in a.shape.split(","))
    rng = np.random.default_rng(a.seed)

    def chunks():
        for i in range(0, a.n, a.shard):
            m = min(a.shard, a.n - i)
            yield i, rng.normal(size=(m, *shape)).astype(np.float32), rng.integers(0, a.classes, m)

    out = Path(a.out)
    if a.layout == "npz":
        xs, ys = zip(*[(x, y) for _, x, y in chunks()])
        np.savez(out.with_suffix(".npz"), x=np.concatenate(xs), y=np.concatenate(ys))
        return
    out.mkdir(parents=True, exist_ok=True)
    if a.layout == "shards":
        for k, (_, x, y) in enumerate(chunks()):
            np.savez(out / f"{k:05d}.npz", x=x, y=y)
        return
    xm = np.lib.format.open_memmap(out / "x.npy", mode="w+", dtype=np.float32, shape=(a.n, *shape))
    y = np.empty(a.n, np.int64)
    for i, x, yy in chunks():
        xm[i:i + len(x)] = x
        y[i:i + len(x)] = yy
    xm.flush()
    np.save(out / "y.npy", y)


if __name__ == "__main__":
    main()
