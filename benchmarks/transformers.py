"""Transformer pruning benchmarks: heads × MLP ratios on the small CIFAR-10 ViT, and torchvision coverage.

    # head scores compared (uniform head cuts, MLP untouched; post-training and re-fit accuracy)
    python benchmarks/transformers.py heads --heads 0.25,0.5
    # the grid (accuracy post-training / re-fit / recovery, params, MACs, 1-thread latency, onnxsim 0.8.1)
    python benchmarks/transformers.py grid --model models/vit_cifar10.onnx --heads 0,0.25,0.5 --mlp 0,0.25,0.5,0.75 \
        --recover "0.25:0.5" --recover-epochs 3 --json /tmp/vit_grid.json
    # where the 1-thread time goes: dense vs 25 % heads + 50 % MLP vs a near-empty cut, fixed cost, ORT graphs
    python benchmarks/transformers.py speed --heads 0.25 --mlp 0.5
    # coverage: torchvision exports (random weights), written by the torch venv (torchvision, onnxscript for dynamo)
    PYTHONPATH=. /work/tvenv/bin/python benchmarks/transformers.py export --out /tmp/tv
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


def at_tokens(model: onnx.ModelProto, tokens: int) -> dict[str, tuple[int, ...]] | None:
    """Input shapes for counting MACs: batch 1, every other dynamic dim (a sequence length) `tokens`."""
    from onnxprune.io.shapes import declared

    dims = declared(model)
    if not any(d and None in d[1:] for d in dims.values()):
        return None
    return {k: (1, *(tokens if x is None else x for x in d[1:])) for k, d in dims.items() if d}


def inner_errors(model: onnx.ModelProto, pruned: onnx.ModelProto, plan: Plan, tensors: str) -> dict[int, float]:
    """Pruned vs the consumer-zeroed reference on an inner tensor, the first of the comma-separated `tensors` the
    model has (torchvision zero-initialises vit_b_16's classifier, so its output alone makes the equivalence check
    vacuous), at batch 1, 2 and 3 (a fixed batch: that one only): max |difference| / max |reference|."""
    from onnxprune.io.runtime import input_specs, make_session
    from onnxprune.rewrite.channels import zero_consumers

    made = {o for n in pruned.graph.node for o in n.output}
    tensor = next((t for t in tensors.split(",") if t in made), None)
    if tensor is None:
        return {}
    ref = zero_consumers(model, {g: np.asarray(k) for g, k in plan.channels.items()})
    a, b = onnx.ModelProto(), onnx.ModelProto()
    a.CopyFrom(pruned)
    b.CopyFrom(ref)
    for m in (a, b):
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    sa, sb = make_session(a, threads=1), make_session(b, threads=1)
    (spec,) = input_specs(model)
    out = {}
    for n in ([spec.batch] if spec.batch else [1, 2, 3]):
        x = {spec.name: np.random.default_rng(n).standard_normal((n, *spec.sample_shape)).astype(np.float32)}
        ya, yb = sa.run([tensor], x)[0], sb.run([tensor], x)[0]
        out[n] = float(np.abs(ya - yb).max() / np.abs(yb).max())
    print(f"  {tensor}: pruned vs reference, max relative difference by batch size {out}", flush=True)
    return out


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
                shapes = at_tokens(model, args.tokens)
                c0, c1 = count(model, shapes), count(pruned, shapes)
                row.update(valid=True, params=[c0.params, c1.params], macs=[c0.macs, c1.macs],
                           mac_reduction=c0.macs / c1.macs, groups_pruned=len(plan.channels))
                if args.inner:
                    row["inner_rel_err"] = inner_errors(model, pruned, plan, args.inner)
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


def head_scores(args) -> None:
    """Which heads to cut: every block loses the same fraction of its heads (MLP untouched), chosen by each score;
    accuracy post-training and after the re-fit."""
    from onnxprune.criteria import channels as channel_criteria
    from onnxprune.criteria.heads import contributions
    from onnxprune.modes.structured import _rescaled
    from onnxprune.stats import collect
    from onnxprune.units.tokens import head_magnitudes

    model = load_model(args.model)
    calib, ev = load_dataset(args.calib, model), load_dataset(args.eval, model)
    settings = PruneSettings(criterion="fscreen", ratio=0.5, batch_size=128, round_to=8)
    stats = collect(model, calib, STRUCTURED.requests(model, settings), batch_size=128)
    prep = prepare(model, calib, settings, stats=stats)
    groups = [g for g in prep.scores.groups if is_head_group(g)]
    old = channel_criteria.scores("fscreen", model, prep.scores.groups, stats, settings.alpha, settings.beta)
    variants = {
        "F-screen + q/k/v filter L1 (before)": dict(zip((g.id for g in prep.scores.groups), old)),
        "F-screen + contribution (now)": dict(prep.scores.channel_scores),
        "contribution alone": {g.id: _rescaled(contributions(model, g, stats)) for g in groups},
        "output-block L1 (`--criterion l1`)": {g.id: _rescaled(head_magnitudes(model, g, 1)) for g in groups},
    }
    base = dict(prep.scores.channel_scores)
    print(f"dense {evaluate(model, ev).accuracy:.4f}", flush=True)
    for h in [float(v) for v in args.heads.split(",")]:
        for name, sc in variants.items():
            prep.scores.channel_scores = {**base, **sc}
            plan = plan_for(model, prep, h, 0.0, settings)
            pruned = STRUCTURED.apply(model, plan, probe=calib)
            refit = STRUCTURED.reconstruct(model, pruned, plan, calib, settings)
            print(f"| {h:.0%} | {name} | {evaluate(pruned, ev).accuracy:.4f} | {evaluate(refit, ev).accuracy:.4f} |",
                  flush=True)


def optimised_ops(model: onnx.ModelProto) -> dict[str, int]:
    """Op histogram of the graph onnxruntime actually runs (1 thread, ORT_ENABLE_ALL, as `compare` times it)."""
    import tempfile
    from collections import Counter

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads, so.log_severity_level = 1, 3
        so.optimized_model_filepath = str(Path(d) / "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return dict(Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node))


def speed(args) -> None:
    """Where the 1-thread time goes: dense vs the uniform cut (structure only: L1 scores, no calibration — latency
    does not depend on which channels are kept) and vs a near-empty cut (one head per block, MLP width 8), each pair
    interleaved (`compare`); a least-squares line time = fixed + per-MAC over the three models; the op histograms
    onnxruntime runs for dense and pruned (a rewrite that blocked a fusion would show here)."""
    model = load_model(args.model)
    settings = PruneSettings(criterion="l1", ratio=0.5, batch_size=128, round_to=8)
    prep = prepare(model, None, settings)
    cuts = {"pruned": (args.heads, args.mlp), "floor": (args.floor_heads, args.floor_mlp)}
    models = {"dense": model, **{k: STRUCTURED.apply(model, plan_for(model, prep, h, m, settings), probe=None)
                                 for k, (h, m) in cuts.items()}}
    macs = {k: count(m).macs for k, m in models.items()}
    t0 = time.process_time()
    rows = {"dense": (1.0, None)}
    for k in cuts:
        c = [compare(model, models[k], threads="1", runs=args.runs, seconds=args.seconds) for _ in range(args.repeat)]
        rows[k] = (float(np.median([x.speedup for x in c])), c)
    cpu = time.process_time() - t0
    import os

    print(f"1 thread, batch 1, interleaved pairs (median of per-pair ratios), {args.repeat} × ≥{args.runs} pairs; "
          f"{cpu:.1f} CPU-s, load {os.getloadavg()[0]:.2f}")
    print("| model | heads / MLP removed | MACs | MAC reduction | speed-up | speed-up / MAC reduction | p50 ms |")
    print("|---|---|---|---|---|---|---|")
    p50 = {"dense": float(np.median([x.a.p50_ms for x in rows["pruned"][1]]))}
    for k in cuts:
        p50[k] = float(np.median([x.b.p50_ms for x in rows[k][1]]))
    for k in models:
        red = macs["dense"] / macs[k]
        hm = "0 % / 0 %" if k == "dense" else f"{cuts[k][0]:.0%} / {cuts[k][1]:.0%}"
        print(f"| {k} | {hm} | {macs[k]:,} | {red:.2f}× | {rows[k][0]:.3f}× | {rows[k][0] / red:.3f} | "
              f"{p50[k]:.4f} |")
    t = np.array([p50["dense"] / rows[k][0] for k in models])  # each model's time in units of the dense p50
    b, a = np.polyfit([macs[k] for k in models], t, 1)
    print(f"fit: time = {a * 1e3:.1f} µs + {b * 1e9:.2f} µs per M MACs (dense p50 {p50['dense'] * 1e3:.1f} µs): "
          f"fixed share of the dense time {a / p50['dense']:.1%}")
    red = macs["dense"] / macs["pruned"]
    need = (1 / (0.8 * red) - 1 / red) / (1 - 1 / red)
    print(f"0.8 × the MAC reduction ({0.8 * red:.3f}×) needs a fixed share ≤ {need:.1%} if the rest scaled with MACs")
    hd, hp = optimised_ops(model), optimised_ops(models["pruned"])
    diff = [f"{o} {hd.get(o, 0)} → {hp.get(o, 0)}" for o in sorted(set(hd) | set(hp)) if hd.get(o, 0) != hp.get(o, 0)]
    print(f"onnxruntime-optimised graphs: dense {sum(hd.values())} nodes, pruned {sum(hp.values())} nodes; "
          f"op counts that differ: {', '.join(diff) or 'none'}")
    if args.profile:
        profile(models, args.profile)


def profile(models: dict[str, onnx.ModelProto], runs: int) -> None:
    """onnxruntime's profiler on the models run in turn (1 thread, sequential, ORT_ENABLE_ALL, batch 1): per op type
    the sum over its nodes of each node's median kernel time (medians: robust to a loaded machine). The profiler
    adds µs-scale overhead to every node, so absolute times run high; read the shares and the dense → pruned ratios."""
    import json as _json
    import os
    import tempfile
    from collections import defaultdict

    import onnxruntime as ort

    from onnxprune.measure.bench import random_feed

    feed = random_feed(next(iter(models.values())))
    with tempfile.TemporaryDirectory() as d:
        sessions = {}
        for k, m in models.items():
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 1, 1, 3
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.enable_profiling, so.profile_file_prefix = True, os.path.join(d, k)
            sessions[k] = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            for sess in sessions.values():
                sess.run(None, feed)
        by_op: dict[str, dict[str, float]] = {}
        for k, sess in sessions.items():
            node, op = defaultdict(list), {}
            for e in _json.load(open(sess.end_profiling())):
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                    node[e["name"]].append(e["dur"])
                    op[e["name"]] = e["args"]["op_name"]
            by_op[k] = defaultdict(float)
            for n, durs in node.items():
                by_op[k][op[n]] += float(np.median(durs))
    names = list(models)
    total = {k: sum(by_op[k].values()) for k in names}
    print(f"onnxruntime profile, {runs} runs each, sum of per-node median kernel µs per op type:")
    print("| op | " + " | ".join(names) + " | share (" + names[0] + ") |")
    print("|---|" + "---|" * (len(names) + 1))
    for o in sorted(set().union(*by_op.values()), key=lambda o: -by_op[names[0]].get(o, 0)):
        print(f"| {o} | " + " | ".join(f"{by_op[k].get(o, 0):.0f}" for k in names) +
              f" | {by_op[names[0]].get(o, 0) / total[names[0]]:.1%} |")
    print("| total | " + " | ".join(f"{total[k]:.0f}" for k in names) + " | |")


TV_MODELS = ("convnext_tiny", "swin_t", "vit_b_16")


def export(args) -> None:
    """torchvision models with random weights (seed 0), input 1×3×224×224: TorchScript (opset 17, dynamic batch) as
    `<name>_ts.onnx`, dynamo (opset 18) as `<name>_dyn.onnx`; an existing file is kept."""
    import torch
    import torchvision

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        x = torch.randn(1, 3, 224, 224)
        for tag in ("ts", "dyn"):
            path = out / f"{name}_{tag}.onnx"
            if path.exists():
                continue
            t = time.process_time()  # grad enabled: under no_grad nn.MultiheadAttention takes its fused fast path
            if tag == "ts":
                torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                                  output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
            else:
                torch.onnx.export(model, (x,), dynamo=True, opset_version=18, input_names=["x"],
                                  output_names=["y"]).save(str(path))
            print(f"{path}: {time.process_time() - t:.1f} CPU-s", flush=True)


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
    c.add_argument("--tokens", type=int, default=32, help="sequence length for counting MACs of dynamic-length models")
    c.add_argument("--json")
    c.add_argument("--inner", help="also compare pruned vs reference on an inner tensor at batch 1, 2, 3 (the first "
                   "of these comma-separated names the model has)")
    h = sub.add_parser("heads")
    h.add_argument("--model", default=str(REPO / "models" / "vit_cifar10.onnx"))
    h.add_argument("--calib", default=str(REPO / "calib_data" / "cifar10_calib.npz"))
    h.add_argument("--eval", default=str(REPO / "calib_data" / "cifar10_eval.npz"))
    h.add_argument("--heads", default="0.25,0.5")
    sp = sub.add_parser("speed")
    sp.add_argument("--model", default=str(REPO / "models" / "vit_cifar10.onnx"))
    sp.add_argument("--heads", type=float, default=0.25)
    sp.add_argument("--mlp", type=float, default=0.5)
    sp.add_argument("--floor-heads", type=float, default=0.75, help="the near-empty cut (default: 1 head of 4)")
    sp.add_argument("--floor-mlp", type=float, default=0.97, help="the near-empty cut (default: MLP width 8)")
    sp.add_argument("--runs", type=int, default=2000)
    sp.add_argument("--seconds", type=float, default=10.0)
    sp.add_argument("--repeat", type=int, default=3)
    sp.add_argument("--profile", type=int, default=0, help="also profile N runs of each model with onnxruntime")
    e = sub.add_parser("export")
    e.add_argument("--out", required=True)
    e.add_argument("--models", default=",".join(TV_MODELS))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    {"grid": grid, "coverage": coverage, "export": export, "heads": head_scores, "speed": speed}[args.cmd](args)


if __name__ == "__main__":
    main()
