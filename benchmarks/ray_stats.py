"""Throughput of the statistics pass: one process vs Ray tasks, Ray started once before timing (start-up excluded).

    python benchmarks/ray_stats.py models/resnet20_cifar10.onnx DATA all [--shards 2] [--reps 2]

Needs `pip install 'onnxprune[ray]'`. Starts a local Ray with as many CPUs as --shards; each task runs one
onnxruntime thread; the single-process pass uses onnxruntime's default threads.
"""
import argparse
import time

import ray

from onnxprune.criteria.needs import default_requests
from onnxprune.io.data import load_dataset
from onnxprune.io.model import load_model
from onnxprune.stats import collect
from onnxprune.stats.distributed import collect_sharded, ray_runner

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("data")
ap.add_argument("criteria")
ap.add_argument("--shards", type=int, default=2)
ap.add_argument("--reps", type=int, default=2)
a = ap.parse_args()
m = load_model(a.model)
d = load_dataset(a.data, m)
reqs = default_requests(m, a.criteria)
ray.init(num_cpus=a.shards, include_dashboard=False, log_to_driver=False)
collect_sharded(m, d.range(0, min(len(d), 512)), reqs, shards=a.shards, runner=ray_runner("auto"))  # warm up
for _ in range(a.reps):
    t = time.perf_counter()
    collect(m, d, reqs)
    t1 = time.perf_counter() - t
    t = time.perf_counter()
    collect_sharded(m, d, reqs, shards=a.shards, runner=ray_runner("auto"))
    t2 = time.perf_counter() - t
    print(f"N={len(d)} single {t1:.2f} s, Ray {a.shards} tasks x 1 thread {t2:.2f} s, ratio {t1 / t2:.2f}", flush=True)
