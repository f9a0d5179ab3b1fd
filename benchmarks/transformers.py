"""Transformer pruning benchmarks: heads × MLP ratios on the small CIFAR-10 ViT, and torchvision coverage.

    # the grid (accuracy post-training / re-fit / recovery, params, MACs, 1-thread latency, onnxsim 0.8.1)
    python benchmarks/transformers.py grid --model models/vit_cifar10.onnx --heads 0,0.25,0.5 --mlp 0,0.25,0.5,0.75 \
        --recover "0.25:0.5" --recover-epochs 3 --json /tmp/vit_grid.json
    # coverage: torchvision exports (random weights; export them with the torch venv, see docs/BENCHMARKS.md)
    python benchmarks/transformers.py coverage /tmp/tv/vit_b_16_ts.onnx /tmp/tv/swin_t_ts.onnx ...

Selection (grid): scores from one statistics pass on the calibration set (`--criterion`, default fscreen; head groups
score by F-screen on per-head features mixed with magnitude, MLP channels by F-screen on token-mean features);
heads and MLP channels are cut separately and uniformly per layer (`--heads` of every layer's heads, `--mlp` of every
MLP's hidden width, rounded to multiples of 8), so "25 % heads" means one of four heads in every block. Re-fit = the
structured mode's least-squares re-fit (the MLP's second layer and the attention output projection, rows = all
tokens of 2,048 calibration images). Recovery = onnxprune.recover.distill.recover on the 5k calibration images.
Latency: onnxprune.measure.bench.compare (dense vs pruned interleaved, batch 1, 1 thread, ORT_ENABLE_ALL).
Coverage: every prunable group (heads and MLP widths) cut to half by L1 magnitude, uniformly; the rewrite's own
equivalence check runs on random inputs; valid = onnx full check + onnxruntime load (rewrite.channels validates).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from onnxprune.io.data import load_dataset  # noqa: E402
from onnxprune.io.model import load_model, model_hash  # noqa: E402
from onnxprune.measure.bench import compare  # noqa: E402
from onnxprune.measure.evaluate import evaluate  # noqa: E402
from onnxprune.modes.structured import STRUCTURED  # noqa: E402
from onnxprune.select.channels import select_channels  # noqa: E402
from onnxprune.select.plan import Plan, PruneSettings  # noqa: E402
from onnxprune.units.count import count  # noqa: E402
from onnxprune.units.tokens import analyse_views, is_head_group  # noqa: E402
from onnxprune.workflows.prune import prepare  # noqa: E402


def plan_for(model, prep, heads: float, mlp: float, settings: PruneSettings) -> Plan:
    """Uniform cut: `heads` of every head group (round to 1), `mlp` of every other group (round to 8)."""
    groups, scores = prep.scores.groups, prep.scores.channel_scores
    hg = [g for g in groups if is_head_group(g)]
    mg = [g for g in groups if not is_head_group(g)]
    channels = {}
    uni = replace(settings, allocation="uniform")
    if hg and heads > 0:
        channels.update(select_channels(model, hg, scores, heads, replace(uni, round_to=1, min_keep=0.0)).channels)
    if mg and mlp > 0:
        channels.update(select_channels(model, mg, scores, mlp, uni).channels)
    return Plan("structured", model_hash(model), {**settings.to_dict(), "ratio": mlp, "head_ratio": heads},
                channels=channels)


def onnxsim_heads(model: onnx.ModelProto, sparsity: float) -> dict:
    """onnxsim 0.8.1: simplify, then its attention-head pruning (matches fused Attention / MultiHeadAttention)."""
    try:
        import onnxsim
    except ImportError:
        return {"available": False}
    simplified, _ = onnxsim.simplify(model)
    pruned = onnxsim.apply_attention_head_pruning(simplified, sparsity=sparsity)
    c0, c1 = count(simplified), count(pruned)
    fused = sorted({n.op_type for n in simplified.graph.node if "Attention" in n.op_type})
    return {"available": True, "version": getattr(onnxsim, "__version__", "?"), "fused_attention_ops": fused,
            "params": [c0.params, c1.params], "macs": [c0.macs, c1.macs], "model": pruned}


def grid(args) -> None:
    model = load_model(args.model)
    calib = load_dataset(args.calib, model)
    ev = load_dataset(args.eval, model)
    if args.eval_n:
        ev = ev.subset(np.arange(min(args.eval_n, len(ev))))
    settings = PruneSettings(criterion=args.criterion, ratio=0.5, batch_size=128, round_to=8)
    t0 = time.time()
    prep = prepare(model, calib, settings)
    print(f"statistics + scores: {time.time() - t0:.1f} s ({args.criterion})", flush=True)
    c0 = count(model)
    dense_acc = evaluate(model, ev).accuracy
    rows = [{"heads": 0.0, "mlp": 0.0, "acc_post": dense_acc, "acc_refit": dense_acc, "acc_recovered": None,
             "params": c0.params, "macs": c0.macs, "mac_reduction": 1.0, "speedup_1t": 1.0}]
    recover_at = {tuple(float(v) for v in s.split(":")) for s in args.recover.split(",") if s}
    for h in [float(v) for v in args.heads.split(",")]:
        for m in [float(v) for v in args.mlp.split(",")]:
            if h == 0 and m == 0:
                continue
            t = time.time()
            plan = plan_for(model, prep, h, m, settings)
            pruned = STRUCTURED.apply(model, plan, probe=calib)
            refit = STRUCTURED.reconstruct(model, pruned, plan, calib, settings)
            c1 = count(pruned)
            row = {"heads": h, "mlp": m, "acc_post": evaluate(pruned, ev).accuracy,
                   "acc_refit": evaluate(refit, ev).accuracy, "acc_recovered": None, "params": c1.params,
                   "macs": c1.macs, "mac_reduction": c0.macs / c1.macs}
            cmp = compare(model, refit, threads="1", runs=args.runs, seconds=args.seconds)
            row["speedup_1t"] = cmp.speedup
            if (h, m) in recover_at and args.recover_epochs:
                from onnxprune.recover.distill import recover

                rec, rep = recover(refit, model, calib, epochs=args.recover_epochs, seed=0, progress=False,
                                   optimizer=args.recover_optimizer, lr=args.recover_lr)
                row["acc_recovered"] = evaluate(rec, ev).accuracy
                row["recover_epochs"] = args.recover_epochs
                if args.save:
                    onnx.save(rec, args.save)
            row["seconds"] = round(time.time() - t, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    sim = {}
    for h in sorted({r["heads"] for r in rows if r["heads"] > 0}):
        s = onnxsim_heads(model, h)
        s.pop("model", None)
        sim[str(h)] = s
    out = {"model": str(args.model), "criterion": args.criterion, "eval_samples": len(ev), "dense_accuracy": dense_acc,
           "rows": rows, "onnxsim": sim}
    print(table(rows, dense_acc))
    print("onnxsim 0.8.1:", json.dumps(sim))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


def table(rows: list[dict], dense: float) -> str:
    lines = ["| heads removed | MLP width removed | acc. post-training | acc. re-fit | acc. recovered | Δ best "
             "| params | MACs | MAC reduction | 1-thread speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        best = max(v for v in (r["acc_post"], r["acc_refit"], r["acc_recovered"]) if v is not None)
        rec = "–" if r["acc_recovered"] is None else f"{r['acc_recovered']:.4f}"
        lines.append(f"| {r['heads']:.0%} | {r['mlp']:.0%} | {r['acc_post']:.4f} | {r['acc_refit']:.4f} | {rec} | "
                     f"{100 * (best - dense):+.2f} pt | {r['params']:,} | {r['macs']:,} | {r['mac_reduction']:.2f}× | "
                     f"{r['speedup_1t']:.2f}× |")
    return "\n".join(lines)


def coverage(args) -> None:
    rows = []
    for path in args.models:
        t = time.time()
        model = load_model(path)
        groups, _ = analyse_views(model)
        pr = [g for g in groups if g.prunable]
        heads = [g for g in pr if is_head_group(g)]
        reasons: dict[str, int] = {}
        for g in groups:
            if not g.prunable:
                key = g.reason.split(" at node")[0].split(" '")[0][:90]
                reasons[key] = reasons.get(key, 0) + 1
        row = {"model": Path(path).name, "groups": len(groups), "prunable": len(pr), "head_groups": len(heads),
               "mlp_groups": len(pr) - len(heads), "skipped_reasons": reasons}
        if pr:
            settings = PruneSettings(criterion="l1", ratio=0.5, round_to=1, allocation="uniform", batch_size=8)
            prep = prepare(model, None, settings)
            plan = plan_for(model, prep, 0.5, 0.5, settings)
            try:
                pruned = STRUCTURED.apply(model, plan, probe=None)  # validated + equivalence-checked
                c0, c1 = count(model), count(pruned)
                row.update(valid=True, params=[c0.params, c1.params], macs=[c0.macs, c1.macs],
                           mac_reduction=c0.macs / c1.macs, groups_pruned=len(plan.channels))
            except Exception as e:  # noqa: BLE001 - report, keep going
                row.update(valid=False, error=f"{type(e).__name__}: {e}"[:300])
        row["seconds"] = round(time.time() - t, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("| model | groups | prunable (heads / MLP) | valid | params | MACs | MAC reduction |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "params" in r:
            print(f"| {r['model']} | {r['groups']} | {r['prunable']} ({r['head_groups']} / {r['mlp_groups']}) | "
                  f"{r['valid']} | {r['params'][0]:,} → {r['params'][1]:,} | {r['macs'][0]:,} → {r['macs'][1]:,} | "
                  f"{r['mac_reduction']:.2f}× |")
        else:
            print(f"| {r['model']} | {r['groups']} | {r['prunable']} | {r.get('valid', '–')} | – | – | – |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("grid")
    g.add_argument("--model", default=str(REPO / "models" / "vit_cifar10.onnx"))
    g.add_argument("--calib", default=str(REPO / "calib_data" / "cifar10_calib.npz"))
    g.add_argument("--eval", default=str(REPO / "calib_data" / "cifar10_eval.npz"))
    g.add_argument("--eval-n", type=int, default=0, help="evaluate on the first N test images (0 = all)")
    g.add_argument("--criterion", default="fscreen")
    g.add_argument("--heads", default="0,0.25,0.5")
    g.add_argument("--mlp", default="0,0.25,0.5,0.75")
    g.add_argument("--recover", default="0.25:0.5", help="heads:mlp pairs to recover, comma-separated")
    g.add_argument("--recover-epochs", type=int, default=3)
    g.add_argument("--recover-optimizer", default="adamw")
    g.add_argument("--recover-lr", type=float, default=5e-4)
    g.add_argument("--runs", type=int, default=200)
    g.add_argument("--seconds", type=float, default=3.0)
    g.add_argument("--save", help="write the recovered model here")
    g.add_argument("--json")
    c = sub.add_parser("coverage")
    c.add_argument("models", nargs="+")
    c.add_argument("--json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    grid(args) if args.cmd == "grid" else coverage(args)


if __name__ == "__main__":
    main()
