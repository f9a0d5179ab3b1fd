"""The ONNX `Attention` op (opset 23) on the small CIFAR-10 ViT: heads pruned through the fused op, against onnxsim.

    # 1. the bundled ViT's weights (models/weights/vit_cifar.pt) with its attention computed by
    #    F.scaled_dot_product_attention, exported by torch's dynamo exporter at opset 23 (→ one ONNX Attention op per
    #    block, 4-D q / k / v); plus the same function in the op's 3-D form (separate q, k, v projections,
    #    q_num_heads / kv_num_heads), and that form with the q / k / v biases folded away (`unbias`) — the form
    #    onnxsim's head pruning matches. All three are checked against models/vit_cifar10.onnx on calibration
    #    images. Torch venv (the dynamo exporter needs onnxscript):
    PYTHONPATH=. /work/tvenv/bin/python benchmarks/attention_op.py export --out /tmp/att
    # 2. heads only (25 % and 50 % of every block's heads, MLP untouched), top-1 on the 10k eval images:
    taskset -c 0 python benchmarks/attention_op.py compare --dir /tmp/att --heads 0.25,0.5 --json /tmp/att/compare.json

onnxprune: the structured defaults (F-screen scores from the 5k calibration images, least-squares re-fit of the
output projections; and `--criterion l1`, the data-free output-block magnitude), heads cut uniformly per block as in
`benchmarks/transformers.py grid`; accuracy before and after the re-fit (onnxsim has no re-fit). onnxsim 0.8.1:
`apply_attention_head_pruning` (weight norms) after `simplify` (as the grid calls it) and on the file as it is, and
`apply_attention_head_wanda_pruning` (weight norm × activation norm at the output projection, fed the same 5k
calibration images in batches of 128) on the file as it is.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _vit_bench():
    """benchmarks/transformers.py (its plan_for and onnxsim call), loaded by path: the name is taken by HF."""
    spec = importlib.util.spec_from_file_location("vit_bench", REPO / "benchmarks" / "transformers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------------------------------- export
def export(args) -> None:
    import torch
    from torch.nn import functional as F

    sys.path.insert(0, str(REPO / "models"))
    import archs

    def sdpa_forward(self, x):  # archs.Attention.forward with the fused kernel: same weights, same function
        q, k, v = self.qkv(x).reshape(-1, self.t, 3, self.h, self.dh).permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(a.transpose(1, 2).reshape(-1, self.t, self.h * self.dh))

    torch.set_num_threads(1)
    module = archs.vit_cifar()
    module.load_state_dict(torch.load(REPO / "models" / "weights" / "vit_cifar.pt", map_location="cpu",
                                      weights_only=True))
    module.eval()
    for blk in module.blocks:
        blk.attn.forward = sdpa_forward.__get__(blk.attn)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x = torch.randn(2, 3, 32, 32)
    prog = torch.onnx.export(module, (x,), dynamo=True, opset_version=23, input_names=["input"],
                             output_names=["logits"], dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    m4 = prog.model_proto
    for n in m4.graph.node:
        del n.metadata_props[:]
    onnx.checker.check_model(m4, full_check=True)
    m3 = to_3d(m4)
    m3u = unbias(m3)
    models = dict(zip(FILES, (m4, m3, m3u)))
    for name, m in models.items():
        onnx.save(m, out / name)
    check(out, models, args.check_n)


FILES = ("vit_sdpa23.onnx", "vit_attention3d.onnx", "vit_attention3d_nobias.onnx")


def check(out: Path, models: dict[str, onnx.ModelProto], n: int) -> None:
    """Logits of the exports against the bundled written-out ViT on the first n calibration images."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    x = np.load(REPO / "calib_data" / "cifar10_calib.npz")["x"][:n].astype(np.float32)
    ref_model = onnx.load(REPO / "models" / "vit_cifar10.onnx")
    ref = ort.InferenceSession(ref_model.SerializeToString(), so).run(None, {ref_model.graph.input[0].name: x})[0]
    report = {}
    for name, m in models.items():
        got = ort.InferenceSession(m.SerializeToString(), so).run(None, {m.graph.input[0].name: x})[0]
        report[name] = {"images": n, "max_abs_diff": float(np.abs(got - ref).max()),
                        "max_abs_logit": float(np.abs(ref).max()),
                        "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
                        "ops": sorted({nd.op_type for nd in m.graph.node})}
        print(name, json.dumps(report[name]), flush=True)
    (out / "export_check.json").write_text(json.dumps(report, indent=2) + "\n")


def to_3d(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same function with every 4-D Attention in the 3-D form: the packed q/k/v projection split into three
    (columns [q | k | v], each [H, dh] head-major), each read by the op as [B, T, H·dh] with q_num_heads =
    kv_num_heads = H, its output [B, T, H·dh] read by the output projection directly (the Slice / Squeeze /
    Transpose / Reshape plumbing around the op is gone)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    prod = {o: n for n in g.node for o in n.output}
    cons: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)

    def back(t: str, ops: list[str]) -> list[onnx.NodeProto]:
        chain = []
        for op in ops:
            n = prod[t]
            assert n.op_type == op, (op, n.op_type, n.name)
            chain.append(n)
            t = n.input[0]
        return chain

    new_nodes, new_inits = {}, []
    for att in [n for n in g.node if n.op_type == "Attention"]:
        _, _, _, split, add, mm = back(att.input[0], ["Squeeze", "Slice", "Transpose", "Reshape", "Add", "MatMul"])
        w, b = inits[mm.input[1]], inits[add.input[1] if add.input[1] in inits else add.input[0]]
        shape = inits[split.input[1]]  # [-1, T, 3, H, dh]
        heads, dh = int(shape[3]), int(shape[4])
        d = heads * dh
        parts = []
        for p, tag in enumerate("qkv"):
            wn, bn = f"{att.name}.{tag}.w", f"{att.name}.{tag}.b"
            new_inits += [numpy_helper.from_array(w[:, p * d:(p + 1) * d].copy(), wn),
                          numpy_helper.from_array(b[p * d:(p + 1) * d].copy(), bn)]
            parts += [helper.make_node("MatMul", [mm.input[0], wn], [f"{att.name}.{tag}.mm"],
                                       name=f"{att.name}.{tag}.mm"),
                      helper.make_node("Add", [f"{att.name}.{tag}.mm", bn], [f"{att.name}.{tag}"],
                                       name=f"{att.name}.{tag}.add")]
        (tr,) = cons[att.output[0]]
        (rs,) = cons[tr.output[0]]
        (proj,) = cons[rs.output[0]]
        new = helper.make_node("Attention", [f"{att.name}.{t}" for t in "qkv"], [f"{att.name}.y3"], name=att.name,
                               q_num_heads=heads, kv_num_heads=heads)
        new.attribute.extend(a for a in att.attribute if a.name not in ("q_num_heads", "kv_num_heads"))
        proj.input[0] = new.output[0]
        new_nodes[att.name] = parts + [new]
    nodes = []
    for n in g.node:
        nodes += new_nodes.get(n.name, [n])
    g.ClearField("node")
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    _drop_dead(m)
    del g.value_info[:]
    onnx.checker.check_model(m, full_check=True)
    return m


def unbias(model: onnx.ModelProto) -> onnx.ModelProto:
    """The 3-D form without q / k / v biases, the same function (onnxsim's matcher wants Q, K, V straight out of a
    MatMul): b_q moves into the block's LayerNorm shift (δ with δ·W_q = b_q; that LayerNorm feeds only q, k, v);
    k's shift then adds the same q·(δ·W_k) to every key's score (softmax does not change); v's shift c = δ·W_v − b_v
    adds c to every output row (the weights sum to 1), taken off the output projection's bias as c·W_o."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in g.initializer}
    prod = {o: n for n in g.node for o in n.output}
    cons: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    new_inits = []

    def put(name: str, value: np.ndarray) -> str:
        new_inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    for att in [n for n in g.node if n.op_type == "Attention"]:
        adds = [prod[t] for t in att.input[:3]]
        mms = [prod[a.input[0]] for a in adds]
        (w_q, b_q), (w_k, _), (w_v, b_v) = ((inits[mm.input[1]], inits[a.input[1]]) for mm, a in zip(mms, adds))
        ln = prod[mms[0].input[0]]
        assert ln.op_type == "LayerNormalization" and all(mm.input[0] == ln.output[0] for mm in mms)
        assert len(cons[ln.output[0]]) == 3, "the LayerNorm must feed only q, k, v"
        delta = np.linalg.solve(w_q.T, b_q)
        ln.input[2] = put(f"{ln.name}.shift", inits[ln.input[2]] + delta)
        for i, mm in enumerate(mms):
            att.input[i] = mm.output[0]
        c = delta @ w_v - b_v
        (proj,) = cons[att.output[0]]
        (badd,) = cons[proj.output[0]]
        j = 1 if badd.input[1] in inits else 0
        badd.input[j] = put(f"{proj.name}.bias_unbiased", inits[badd.input[j]] - c @ inits[proj.input[1]])
    g.initializer.extend(new_inits)
    _drop_dead(m)
    onnx.checker.check_model(m, full_check=True)
    return m


def _drop_dead(m: onnx.ModelProto) -> None:
    g = m.graph
    live = {o.name for o in g.output}
    keep = []
    for n in reversed(g.node):
        if any(o in live for o in n.output):
            keep.append(n)
            live.update(i for i in n.input if i)
    g.ClearField("node")
    g.node.extend(reversed(keep))
    used = [t for t in g.initializer if t.name in live]
    g.ClearField("initializer")
    g.initializer.extend(used)


# ---------------------------------------------------------------------------------------------------- compare
def compare(args) -> None:
    import onnxsim
    from onnxprune.io.data import load_dataset
    from onnxprune.io.model import load_model
    from onnxprune.measure.evaluate import evaluate
    from onnxprune.modes.structured import STRUCTURED
    from onnxprune.select.plan import PruneSettings
    from onnxprune.units.count import count
    from onnxprune.units.tokens import analyse_views, is_head_group
    from onnxprune.workflows.prune import prepare

    vb = _vit_bench()
    rows = []
    for fname in args.files.split(","):
        model = load_model(str(Path(args.dir) / fname))
        calib = load_dataset(args.calib, model)
        ev = load_dataset(args.eval, model)
        c0 = count(model)
        t = time.process_time()
        dense = evaluate(model, ev).accuracy
        groups, _ = analyse_views(model)
        heads = [g for g in groups if is_head_group(g) and g.prunable]
        rows.append({"model": fname, "method": "dense", "heads": 0.0, "acc_post": dense, "macs": c0.macs,
                     "params": c0.params, "head_groups": len(heads), "cpu_s": round(time.process_time() - t, 1)})
        print(json.dumps(rows[-1]), flush=True)
        preps = {}
        for criterion in args.criteria.split(","):
            settings = PruneSettings(criterion=criterion, ratio=0.5, batch_size=128, round_to=8)
            t = time.process_time()
            preps[criterion] = (settings, prepare(model, calib, settings), time.process_time() - t)
        batches = list(calib.batches(128))
        for h in [float(v) for v in args.heads.split(",")]:
            for criterion, (settings, prep, prep_s) in preps.items():
                t = time.process_time()
                plan = vb.plan_for(model, prep, h, 0.0, settings)
                pruned = STRUCTURED.apply(model, plan, probe=calib)
                refit = STRUCTURED.reconstruct(model, pruned, plan, calib, settings)
                c1 = count(refit)
                rows.append({"model": fname, "method": f"onnxprune {criterion}", "heads": h,
                             "acc_post": evaluate(pruned, ev).accuracy, "acc_refit": evaluate(refit, ev).accuracy,
                             "macs": c1.macs, "params": c1.params,
                             "heads_kept": [len(v) for k, v in sorted(plan.channels.items())],
                             "cpu_s": round(time.process_time() - t + prep_s, 1)})
                print(json.dumps(rows[-1]), flush=True)
            for method, fn in (
                    ("onnxsim: simplify, then heads by weight L2", lambda: onnxsim.apply_attention_head_pruning(
                        onnxsim.simplify(model)[0], sparsity=h)),
                    ("onnxsim: heads by weight L2", lambda: onnxsim.apply_attention_head_pruning(model, sparsity=h)),
                    ("onnxsim: heads by Wanda (calibrated)", lambda: onnxsim.apply_attention_head_wanda_pruning(
                        model, calibration_data=batches, sparsity=h))):
                t = time.process_time()
                try:
                    sim = fn()
                    c1 = count(sim)
                    row = {"acc_post": evaluate(sim, ev).accuracy, "macs": c1.macs, "params": c1.params}
                except Exception as e:  # report, do not hide
                    row = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
                rows.append({"model": fname, "method": method, "heads": h, **row,
                             "cpu_s": round(time.process_time() - t, 1)})
                print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


def table(rows: list[dict]) -> str:
    dense = {r["model"]: r for r in rows if r["method"] == "dense"}
    lines = ["| model | heads removed | method | MACs | top-1 post-training | top-1 re-fit | CPU-s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        d = dense[r["model"]]
        if "error" in r:
            lines.append(f"| {r['model']} | {r['heads']:.0%} | {r['method']} | error: {r['error']} | | | "
                         f"{r['cpu_s']} |")
            continue
        refit = f"{r['acc_refit']:.4f}" if "acc_refit" in r else "–"
        lines.append(f"| {r['model']} | {r['heads']:.0%} | {r['method']} | {r['macs']:,} "
                     f"({d['macs'] / r['macs']:.2f}×) | {r['acc_post']:.4f} | {refit} | {r['cpu_s']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--out", required=True)
    e.add_argument("--check-n", type=int, default=512, help="calibration images the exports are checked on")
    c = sub.add_parser("compare")
    c.add_argument("--dir", required=True)
    c.add_argument("--calib", default=str(REPO / "calib_data" / "cifar10_calib.npz"))
    c.add_argument("--eval", default=str(REPO / "calib_data" / "cifar10_eval.npz"))
    c.add_argument("--heads", default="0.25,0.5")
    c.add_argument("--files", default=",".join(FILES))
    c.add_argument("--criteria", default="fscreen,l1", help="onnxprune criteria (fscreen: the default)")
    c.add_argument("--json")
    args = ap.parse_args()
    {"export": export, "compare": compare}[args.cmd](args)


if __name__ == "__main__":
    main()
