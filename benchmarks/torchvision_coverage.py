"""Coverage on torchvision classification CNNs: onnxprune structured L1 at ratio 0.5 beside Torch-Pruning 1.6.1.

Not run by CI. Needs a separate benchmark venv with torch 2.14.1, torchvision 0.29.1, torch-pruning 1.6.1, onnx and
onnxruntime, plus onnxprune's own dependencies (click, rich, scipy, matplotlib, onnx-graphsurgeon):

    PYTHONPATH=/work/main /work/tvenv/bin/python benchmarks/torchvision_coverage.py \\
        [--models resnet18 mobilenet_v2 ...] [--work out/tv] [--json out/coverage.json]

For each model (random weights, `weights=None`, eval mode; exported once at 1×3×224×224 with
`torch.onnx.export(dynamo=False)`, opset 18, dynamic batch, cached under --work):
  * `onnxprune prune MODEL --criterion l1 --ratio 0.5 --no-reconstruct -o OUT --json` in a subprocess under
    `/usr/bin/time -v` (wall time, peak RSS);
  * validity of OUT: `onnx.checker.check_model(full_check=True)` and one onnxruntime run with the right output shape;
  * MAC reduction dense / pruned twice: from `onnxprune.units.count.count` (static shape inference) and from real
    shapes (every Conv / ConvTranspose / Gemm / MatMul input and output fetched from onnxruntime on one input);
    a disagreement between the two is printed as a finding;
  * the same with `--round-to 1` (Torch-Pruning does not round channel counts; onnxprune's default 8 keeps
    onnxruntime's blocked kernels), which is the like-for-like comparison;
  * channel groups pruned / prunable / total, weight layers shrunk / total, and every distinct reason a group was
    left alone;
  * Torch-Pruning 1.6.1 on the same architecture: `tp.pruner.MagnitudePruner`, `MagnitudeImportance(p=1)`,
    global pruning, pruning_ratio 0.5, the final classifier ignored; MACs by `tp.utils.count_ops_and_params`.
Prints a Markdown table and writes everything to --json. Models run one at a time, in the order given (default:
small ones first). Results of models already in the JSON file are kept unless re-run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODELS = ["squeezenet1_1", "mnasnet0_5", "shufflenet_v2_x0_5", "mobilenet_v3_small", "alexnet", "resnet18",
          "mobilenet_v2", "regnet_x_400mf", "efficientnet_b0", "googlenet", "resnext50_32x4d",
          "resnet50", "densenet121", "vgg11_bn", "convnext_tiny"]
MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def build(name: str):
    import torch
    import torchvision

    torch.manual_seed(0)
    kw = {"init_weights": True} if name == "googlenet" else {}
    return torchvision.models.get_model(name, weights=None, **kw).eval()


def export(name: str, path: Path) -> None:
    import torch

    if path.exists():
        return
    model = build(name)
    x = torch.randn(1, 3, 224, 224)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(tmp), dynamo=False, opset_version=18, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------ onnxprune side
def run_onnxprune(src: Path, out: Path, extra: tuple[str, ...] = ()) -> dict:
    cmd = [sys.executable, "-c", "from onnxprune.cli import main; main()", "prune", str(src), "--criterion", "l1",
           "--ratio", "0.5", "--no-reconstruct", "-o", str(out), "--json", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out.unlink(missing_ok=True)
    t = time.time()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.time() - t
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    res = {"exit": p.returncode, "wall_s": round(wall, 1),
           "peak_rss_mb": round(int(rss.group(1)) / 1024) if rss else None,
           "command": " ".join(["onnxprune prune MODEL --criterion l1 --ratio 0.5 --no-reconstruct -o OUT --json",
                                *extra])}
    if p.returncode != 0:
        lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("\t")]
        res["error"] = "\n".join(lines[-5:])
        return res
    report = json.loads(p.stdout)
    rows = report["layers"]
    skipped = [n[len("left alone: "):] for n in report["notes"] if n.startswith("left alone: ")]
    res.update(groups_total=len(rows) + len(skipped), groups_prunable=len(rows),
               groups_pruned=sum(r["kept"] < r["weights"] for r in rows), channels=report["weights"],
               channels_kept=report["kept"], report_macs=report["macs"], report_params=report["params"])
    reasons: dict[str, int] = {}
    for s in skipped:
        reason = s if s.startswith("channels ") else s.split(": ", 1)[-1]  # "group id: reason", or the reason
        key = re.sub(r"'[^']*'", "'…'", reason)
        reasons[key] = reasons.get(key, 0) + 1
    res["skipped_reasons"] = dict(sorted(reasons.items(), key=lambda kv: -kv[1]))
    res["skipped"] = skipped
    return res


def real_macs(model, feed: dict[str, np.ndarray]) -> tuple[int, dict[str, int]]:
    """MACs (batch 1) from the shapes onnxruntime actually produces: every MAC op's inputs and outputs fetched."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name: list(t.dims) for t in m.graph.initializer}
    want = []
    for n in m.graph.node:
        if n.op_type in MAC_OPS:
            want += [t for t in (n.input[0], n.input[1], n.output[0]) if t and t not in inits]
    want = list(dict.fromkeys(want))
    have = {o.name for o in m.graph.output}
    for t in want:
        if t not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    vals = dict(zip(names, sess.run(None, feed)))
    shape = {**inits, **{k: list(v.shape) for k, v in vals.items()}}
    per: dict[str, int] = {}
    for n in m.graph.node:
        if n.op_type not in MAC_OPS:
            continue
        x, w, y = (shape.get(t) for t in (n.input[0], n.input[1], n.output[0]))
        if n.op_type == "Conv":
            per[n.name] = int(np.prod(y)) * int(np.prod(w[1:]))
        elif n.op_type == "ConvTranspose":
            per[n.name] = int(np.prod(x)) * int(np.prod(w[1:]))
        else:
            trans_a = any(a.name == "transA" and a.i for a in n.attribute)
            per[n.name] = int(np.prod(y)) * int(x[0] if trans_a else x[-1])
    return sum(per.values()), per


def check_output(src: Path, out: Path) -> dict:
    import onnx
    import onnxruntime as ort

    from onnxprune.units.count import count

    res: dict = {}
    dense, pruned = onnx.load(str(src)), onnx.load(str(out))
    try:
        onnx.checker.check_model(pruned, full_check=True)
        res["checker"] = True
    except Exception as e:  # noqa: BLE001 - a finding, reported
        res["checker"] = False
        res["checker_error"] = str(e).splitlines()[0][:300]
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    try:
        s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        y = s.run(None, {s.get_inputs()[0].name: x})[0]
        x2 = np.concatenate([x, x])
        y2 = s.run(None, {s.get_inputs()[0].name: x2})[0]
        res["ort"] = bool(y.shape == (1, 1000) and y2.shape == (2, 1000) and np.isfinite(y).all())
    except Exception as e:  # noqa: BLE001
        res["ort"] = False
        res["ort_error"] = str(e).splitlines()[0][:300]
    for which, model in (("dense", dense), ("pruned", pruned)):
        c = count(model)
        res[f"static_macs_{which}"], res[f"static_unknown_{which}"] = c.macs, len(c.unknown)
        res[f"params_{which}"] = c.params
        res[f"real_macs_{which}"], per = real_macs(model, {model.graph.input[0].name: x})
        static = {n.node: n.macs for n in c.nodes}
        res[f"static_vs_real_{which}"] = [k for k, v in per.items() if static.get(k, 0) != v][:10]
    wd = {n.name: n.input[1] for n in dense.graph.node if n.op_type in MAC_OPS}
    dims_d = {t.name: list(t.dims) for t in dense.graph.initializer}
    dims_p = {t.name: list(t.dims) for t in pruned.graph.initializer}
    wp = {n.name: n.input[1] for n in pruned.graph.node if n.op_type in MAC_OPS}
    res["layers_total"] = len(wd)
    res["layers_shrunk"] = sum(1 for k, t in wd.items() if k in wp and dims_p.get(wp[k]) != dims_d.get(t))
    res["mac_x_static"] = res["static_macs_dense"] / max(res["static_macs_pruned"], 1)
    res["mac_x_real"] = res["real_macs_dense"] / max(res["real_macs_pruned"], 1)
    return res


# ------------------------------------------------------------------------------------------------ Torch-Pruning side
def run_tp(name: str) -> dict:
    import torch
    import torch_pruning as tp

    model = build(name)
    x = torch.randn(1, 3, 224, 224)
    ignored = [m for m in model.modules() if (isinstance(m, torch.nn.Linear) and m.out_features == 1000)
               or (isinstance(m, torch.nn.Conv2d) and m.out_channels == 1000)]
    t = time.time()
    try:
        macs0, params0 = tp.utils.count_ops_and_params(model, x)
        pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                           global_pruning=True, pruning_ratio=0.5, ignored_layers=ignored)
        pruner.step()
        with torch.no_grad():
            y = model(x)
        assert y.shape == (1, 1000)
        macs1, params1 = tp.utils.count_ops_and_params(model, x)
    except Exception as e:  # noqa: BLE001 - Torch-Pruning's failure is a result
        return {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
                "wall_s": round(time.time() - t, 1)}
    return {"ok": True, "macs_dense": int(macs0), "macs_pruned": int(macs1), "mac_x": macs0 / max(macs1, 1),
            "params_dense": int(params0), "params_pruned": int(params1), "wall_s": round(time.time() - t, 1)}


# ------------------------------------------------------------------------------------------------ table
def table(results: dict) -> str:
    head = ("| model | valid | MACs ÷, real shapes | MACs ÷, static count | MACs ÷, real shapes, --round-to 1 "
            "| Torch-Pruning MACs ÷ | ours / TP | ours (--round-to 1) / TP | groups pruned / prunable / total "
            "| layers shrunk | prune s | peak RSS MB |")
    lines = [head, "|" + "---|" * 12]
    for name, r in results.items():
        op, tpr = r.get("onnxprune", {}), r.get("tp", {})
        tp_x = f"{tpr['mac_x']:.2f}" if tpr.get("ok") else f"fails ({tpr.get('error', '?')[:40]})" if tpr else "–"
        if op.get("exit", 1) != 0:
            err = op.get("error", "?").splitlines()
            lines.append(f"| {name} | no: {err[0][:120] if err else '?'} | | | | {tp_x} | | | | | "
                         f"{op.get('wall_s', '')} | {op.get('peak_rss_mb', '')} |")
            continue
        v, v1 = r.get("check", {}), r.get("check_r1", {})
        valid = "yes" if v.get("checker") and v.get("ort") and v1.get("checker") and v1.get("ort") else "NO"
        ratio = f"{v['mac_x_real'] / tpr['mac_x']:.2f}" if tpr.get("ok") and v else "–"
        ratio1 = f"{v1['mac_x_real'] / tpr['mac_x']:.2f}" if tpr.get("ok") and v1 else "–"
        lines.append(f"| {name} | {valid} | {v.get('mac_x_real', 0):.2f} | {v.get('mac_x_static', 0):.2f} | "
                     f"{v1.get('mac_x_real', 0):.2f} | {tp_x} | {ratio} | {ratio1} | "
                     f"{op['groups_pruned']} / {op['groups_prunable']} / {op['groups_total']} | "
                     f"{v.get('layers_shrunk', '?')} / {v.get('layers_total', '?')} | "
                     f"{op['wall_s']} | {op['peak_rss_mb']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--work", default="out/tv")
    ap.add_argument("--json", default="out/coverage.json")
    ap.add_argument("--skip-tp", action="store_true", help="keep Torch-Pruning results already in the JSON file")
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--table-only", action="store_true", help="print the table of the JSON file and exit")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    jpath = Path(args.json)
    results = json.loads(jpath.read_text()) if jpath.exists() else {}
    if args.table_only:
        print(table({k: results[k] for k in MODELS if k in results}))
        return
    for name in args.models:
        src, out = work / f"{name}.onnx", work / f"{name}.pruned.onnx"
        print(f"== {name}", flush=True)
        export(name, src)
        if args.export_only:
            continue
        r = results.get(name, {})
        r["onnxprune"] = run_onnxprune(src, out)
        r["check"] = check_output(src, out) if r["onnxprune"]["exit"] == 0 else {}
        # Torch-Pruning does not round channel counts; onnxprune's default --round-to 8 keeps onnxruntime's
        # blocked kernels. The like-for-like comparison is --round-to 1.
        out1 = work / f"{name}.pruned_r1.onnx"
        r["onnxprune_r1"] = run_onnxprune(src, out1, ("--round-to", "1"))
        r["check_r1"] = check_output(src, out1) if r["onnxprune_r1"]["exit"] == 0 else {}
        if not (args.skip_tp and r.get("tp")):
            r["tp"] = run_tp(name)
        results[name] = r
        jpath.parent.mkdir(parents=True, exist_ok=True)
        jpath.write_text(json.dumps(results, indent=1))
        print(table({name: r}).splitlines()[-1], flush=True)
        for reason, n in r["onnxprune"].get("skipped_reasons", {}).items():
            print(f"   left alone ×{n}: {reason}")
        c = r["check"]
        if c and (c["static_vs_real_dense"] or c["static_vs_real_pruned"]):
            print(f"   static count ≠ real shapes at {c['static_vs_real_pruned'] or c['static_vs_real_dense']}")
    ordered = {k: results[k] for k in MODELS if k in results}
    print()
    print(table(ordered))


if __name__ == "__main__":
    main()
