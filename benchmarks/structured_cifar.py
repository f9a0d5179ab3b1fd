"""Structured channel pruning on the bundled CIFAR-10 models: accuracy, params, MACs and latency.

    python benchmarks/structured_cifar.py [--models resnet20 densenet mobilenetv2] [--ratios 0.3 0.5 0.7]

For each model: one statistics pass over calib_data/cifar10_calib.npz (shared by every criterion), then for each
channel ratio × criterion {BN-γ, L1, APoZ, F-screen α ∈ {0.2, 0.4, 1.0}} × {without, with reconstruction}: top-1 on
calib_data/cifar10_eval.npz (CIFAR-10 test), params and MACs, and onnxruntime latency (batch 1, p50, 1 thread and
default threads, interleaved with the dense model in one process; the speed-up is the median per-pair ratio).
At ratio 0.5, BN-γ, L1 and F-screen α=0.2 also run with `--min-channels 16` (the latency knob: no group narrower
than two of onnxruntime's 8-channel blocks). onnxsim 0.8.1's `apply_structured_pruning` runs on the same files in
the same run where it applies. Prints one Markdown table per model.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from onnxprune.measure.bench import compare
from onnxprune.io.data import load_dataset
from onnxprune.measure.evaluate import evaluate
from onnxprune.units.count import count
from onnxprune.io.model import load_model
from onnxprune.select.plan import PruneSettings
from onnxprune.stats import collect
from onnxprune.modes.structured import STRUCTURED as structured

REPO = Path(__file__).resolve().parent.parent
FILES = {"resnet20": "resnet20_cifar10.onnx", "densenet": "densenet_cifar10.onnx",
         "mobilenetv2": "mobilenetv2_cifar10.onnx"}
CRITERIA = [("BN-γ", "bn", 0.0), ("L1", "l1", 0.0), ("APoZ", "apoz", 0.0), ("F-screen α=0.2", "fscreen", 0.2),
            ("F-screen α=0.4", "fscreen", 0.4), ("F-screen α=1.0", "fscreen", 1.0)]


def latency(dense, pruned, runs: int) -> tuple[float, float, float, float]:
    """(p50 ms 1 thread, speed-up 1 thread, p50 ms default, speed-up default)."""
    one = compare(dense, pruned, threads="1", runs=runs, seconds=30)
    default = compare(dense, pruned, threads="default", runs=runs, seconds=30)
    return one.b.p50_ms, one.a_over_b, default.b.p50_ms, default.a_over_b


def run_model(name: str, ratios: list[float], recon: bool, runs: int, eval_n: int, calib_n: int,
              min_channels: int) -> list[str]:
    model = load_model(REPO / "models" / FILES[name])
    calib = load_dataset(REPO / "calib_data" / "cifar10_calib.npz", model)
    calib = calib.subset(np.arange(min(calib_n, len(calib))))
    evald = load_dataset(REPO / "calib_data" / "cifar10_eval.npz", model)
    evald = evald.subset(np.arange(min(eval_n, len(evald))))
    dense_acc = evaluate(model, evald).accuracy
    c0 = count(model)
    base = compare(model, model, threads="1", runs=runs, seconds=30)
    base_d = compare(model, model, threads="default", runs=runs, seconds=30)
    t = time.time()
    reqs = {(r.tensor, r.kind, r.stats) : r for c in ("fscreen", "apoz")
            for r in structured.requests(model, PruneSettings(criterion=c))}
    stats = collect(model, calib, list(reqs.values()))
    stats_s = time.time() - t
    lines = [f"### {name} (`models/{FILES[name]}`): dense top-1 {dense_acc:.4f} on {len(evald)} CIFAR-10 test images, "
             f"{c0.params:,} params, {c0.macs / 1e6:.1f} M MACs, p50 {base.a.p50_ms:.3f} ms (1 thread) / "
             f"{base_d.a.p50_ms:.3f} ms (default); statistics pass {stats_s:.1f} s on {len(calib)} images",
             "", "| ratio | criterion | top-1 | top-1 +recon | params | MACs | p50 ms 1T | speed-up 1T | "
             "p50 ms default | speed-up default | MAC reduction |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for ratio in ratios:
        configs = [(label, crit, alpha, 1) for label, crit, alpha in CRITERIA]
        if ratio == 0.5 and min_channels > 1:  # the latency knob: no group narrower than N channels
            configs += [(f"{label}, --min-channels {min_channels}", crit, alpha, min_channels)
                        for label, crit, alpha in CRITERIA if crit in ("bn", "l1") or alpha == 0.2]
        for label, crit, alpha, min_ch in configs:
            s = PruneSettings(ratio=ratio, criterion=crit, alpha=alpha, min_channels=min_ch)
            lines.append(criterion_row(model, stats, s, label, calib, evald, c0, recon, runs))
            print(lines[-1], flush=True)
        lines.append(peer_row(model, ratio, evald, c0, runs))
        print(lines[-1], flush=True)
    return lines


def criterion_row(model, stats, s: PruneSettings, label: str, calib, evald, c0, recon: bool, runs: int) -> str:
    scores = structured.score(model, stats, s)
    plan = structured.select(model, scores, s.ratio, s)
    pruned = structured.apply(model, plan)
    acc = evaluate(pruned, evald).accuracy
    acc_r = evaluate(structured.reconstruct(model, pruned, plan, calib, s), evald).accuracy if recon else None
    c = count(pruned)
    p1, s1, pd, sd = latency(model, pruned, runs)
    return (f"| {s.ratio:.1f} | {label} | {acc:.4f} | {'-' if acc_r is None else f'{acc_r:.4f}'} | "
            f"{c.params / c0.params:.3f} | {c.macs / c0.macs:.3f} | {p1:.3f} | {s1:.2f}× | {pd:.3f} | "
            f"{sd:.2f}× | {c0.macs / c.macs:.2f}× |")


def peer_row(model, ratio: float, evald, c0, runs: int) -> str:
    """onnxsim 0.8.1 apply_structured_pruning (global L2) on the same file."""
    try:
        import onnxsim.pruning as peer
    except ImportError:
        return f"| {ratio:.1f} | onnxsim 0.8.1 | not installed (pip install onnxsim==0.8.1) | | | | | | | | |"
    try:
        pruned = peer.apply_structured_pruning(model, sparsity=ratio, importance_norm="l2", global_sparsity=True)
        acc = evaluate(pruned, evald).accuracy
        c = count(pruned)
        if c.params == c0.params and c.macs == c0.macs:
            return (f"| {ratio:.1f} | onnxsim 0.8.1 structured (L2, global) | {acc:.4f} (unchanged: no channel it "
                    f"can remove) | - | 1.000 | 1.000 | - | - | - | - | 1.00× |")
        p1, s1, pd, sd = latency(model, pruned, runs)
        return (f"| {ratio:.1f} | onnxsim 0.8.1 structured (L2, global) | {acc:.4f} | - | {c.params / c0.params:.3f} | "
                f"{c.macs / c0.macs:.3f} | {p1:.3f} | {s1:.2f}× | {pd:.3f} | {sd:.2f}× | {c0.macs / c.macs:.2f}× |")
    except Exception as e:  # the peer's failure is a result to report, not a crash
        return f"| {ratio:.1f} | onnxsim 0.8.1 structured | fails: {type(e).__name__}: {str(e)[:80]} | | | | | | | | |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(FILES), choices=list(FILES))
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    ap.add_argument("--no-recon", action="store_true")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--eval-n", type=int, default=10000)
    ap.add_argument("--calib-n", type=int, default=5000)
    ap.add_argument("--min-channels", type=int, default=16,
                    help="also run BN-γ, L1 and F-screen α=0.2 at ratio 0.5 with this --min-channels (1: skip)")
    args = ap.parse_args()
    for name in args.models:
        print("\n".join(run_model(name, args.ratios, not args.no_recon, args.runs, args.eval_n, args.calib_n,
                                    args.min_channels)), "\n",
              flush=True)


if __name__ == "__main__":
    main()
