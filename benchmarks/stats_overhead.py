"""Statistics pass overhead: plain onnxruntime inference vs `onnxprune.stats.collect` over the calibration set.

For each model and criteria set, the two passes are interleaved in one process (plain, stats, plain, stats, ...)
and the median of the per-repeat ratios is reported, so background load hits both alike. Both timings are end to
end: plain = session creation + every batch through the deployed model (ORT_ENABLE_ALL); stats = `collect` with
`default_requests` (instrumentation, session, every batch, accumulation, finalisation).

Peak memory is measured in a fresh subprocess per (model, data size): the peak RSS (VmHWM, reset just before the
pass via /proc/self/clear_refs) minus the RSS before the pass, for the plain pass and for the statistics pass, on the
calibration set and on the set doubled (the data itself is loaded before and excluded) — flat means memory does not
grow with the data. Most of it is onnxruntime's arena for one batch of activations.

    python benchmarks/stats_overhead.py [--repeats 7] [--criteria fscreen fscreen,apoz all]

On a shared machine pin it to one core (`taskset -c 0 python benchmarks/stats_overhead.py ...`): both passes then
run alike, and the results in docs/BENCHMARKS.md were measured that way.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from onnxprune.io.data import Dataset, load_dataset
from onnxprune.io.model import load_model
from onnxprune.io.runtime import make_session
from onnxprune.criteria.needs import default_requests
from onnxprune.stats import collect


def models() -> list[tuple[str, Path, Path, str]]:
    resnet = REPO / "models" / "resnet20_cifar10.onnx"
    note = ""
    if not resnet.exists():
        resnet, note = Path("/tmp/dev/resnet20_random.onnx"), " (random weights: trained file not present)"
    return [("CIFAR ResNet-20" + note, resnet, REPO / "calib_data" / "cifar10_calib.npz", "cifar"),
            ("LeNet-300-100", REPO / "models" / "lenet300_mnist.onnx", REPO / "calib_data" / "mnist_calib.npz",
             "mnist")]


def plain_pass(model, data: Dataset, bs: int) -> None:
    sess = make_session(model)
    out = [sess.get_outputs()[0].name]
    for feed in data.batches(bs):
        sess.run(out, feed)


def time_pair(model, data, reqs, bs, repeats, optimize="all") -> tuple[float, float, float]:
    plain_pass(model, data, bs)  # warm-up (page cache, allocator)
    collect(model, data, reqs, batch_size=bs, optimize=optimize, progress="")
    tp, ts, ratios = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        plain_pass(model, data, bs)
        a = time.perf_counter() - t
        t = time.perf_counter()
        collect(model, data, reqs, batch_size=bs, optimize=optimize, progress="")
        b = time.perf_counter() - t
        tp.append(a)
        ts.append(b)
        ratios.append(b / a)
    return statistics.median(tp), statistics.median(ts), statistics.median(ratios)


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def memory_child(model_path: str, calib: str, criteria: str, factor: int, bs: int) -> None:
    model = load_model(model_path)
    data = load_dataset(calib, model)
    if factor > 1:
        data = Dataset({k: np.concatenate([v] * factor) for k, v in data.inputs.items()},
                       None if data.labels is None else np.concatenate([data.labels] * factor), data.specs)
    reqs = default_requests(model, criteria)
    collect(model, data.subset(np.arange(min(len(data), 2 * bs))), reqs, batch_size=bs, progress="")  # warm-up

    def extra_peak(fn) -> float | None:
        before = _status("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
        except OSError:
            return None
        fn()
        return (_status("VmHWM") - before) / 2**20

    plain = extra_peak(lambda: plain_pass(model, data, bs))
    stats = extra_peak(lambda: collect(model, data, reqs, batch_size=bs, progress=""))
    print(json.dumps({"n": len(data), "extra_peak_mb": stats, "plain_extra_peak_mb": plain,
                      "data_mb": sum(v.nbytes for v in data.inputs.values()) / 2**20}))


def memory(model_path: Path, calib: Path, criteria: str, factor: int, bs: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(model_path), str(calib), criteria,
                          str(factor), str(bs)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--criteria", nargs="+", default=["fscreen", "fscreen,apoz", "all"])
    ap.add_argument("--no-optimize-check", action="store_true", help="skip the ENABLE_ALL vs DISABLE_ALL comparison")
    ap.add_argument("--memory-child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child:
        mp, calib, crit, factor, bs = a.memory_child
        memory_child(mp, calib, crit, int(factor), int(bs))
        return
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}, batch {a.batch_size}, "
          f"median of {a.repeats} interleaved repeats\n")
    rows = []
    for label, mp, calib, _ in models():
        model = load_model(mp)
        data = load_dataset(calib, model)
        for crit in a.criteria:
            reqs = default_requests(model, crit)
            p, s, r = time_pair(model, data, reqs, a.batch_size, a.repeats)
            m1 = memory(mp, calib, crit, 1, a.batch_size)
            m2 = memory(mp, calib, crit, 2, a.batch_size)
            rows.append([label, crit, len(data), f"{p:.3f}", f"{s:.3f}", f"{r:.2f}",
                         f"{m1['plain_extra_peak_mb']:.0f} / {m1['extra_peak_mb']:.0f}",
                         f"{m2['plain_extra_peak_mb']:.0f} / {m2['extra_peak_mb']:.0f}"])
            print(" | ".join(map(str, rows[-1])), flush=True)
        if not a.no_optimize_check:
            reqs = default_requests(model, a.criteria[0])
            _, _, r_all = time_pair(model, data, reqs, a.batch_size, max(3, a.repeats // 2), "all")
            _, s_dis, r_dis = time_pair(model, data, reqs, a.batch_size, max(3, a.repeats // 2), "disable")
            print(f"  optimisation check ({a.criteria[0]}): ENABLE_ALL ratio {r_all:.2f}, DISABLE_ALL ratio {r_dis:.2f}",
                  flush=True)
            rows.append([label, f"{a.criteria[0]} (instrumented with DISABLE_ALL)", len(data), "", f"{s_dis:.3f}",
                         f"{r_dis:.2f}", "", ""])
    print()
    head = ["model", "criteria", "samples", "plain pass (s)", "stats pass (s)", "ratio (median)",
            "extra peak RSS MB plain / stats, 1× set", "same, 2× set"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(map(str, r)) + " |")


if __name__ == "__main__":
    main()
