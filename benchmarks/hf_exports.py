"""Hugging Face transformers exported to ONNX (random weights, built from configs: no hub access), with token data.

Run in a venv that has transformers (bench only; the package and its tests never import it):

    python3 -m venv /work/hfvenv && /work/hfvenv/bin/pip install torch==2.13.0 transformers onnx onnxruntime onnxscript
    /work/hfvenv/bin/pip install -e .
    /work/hfvenv/bin/python benchmarks/hf_exports.py --out /tmp/hf            # small BERT / GPT-2, both exporters
    /work/hfvenv/bin/python benchmarks/hf_exports.py --out /tmp/hf --base     # + a bert-base-size BertModel

Writes `<name>_<ts|dyn>.onnx` and one data file per model family (`bert_data.npz`, `gpt2_data.npz`: token ids and an
attention mask whose padding is real — each sequence has a random length, the rest is padding id 0 with mask 0).
Models:
  bert_small   BertForSequenceClassification: 4 layers, hidden 128, 4 heads, intermediate 512, 2 labels, inputs
               input_ids + attention_mask (dynamic batch and sequence)
  gpt2_small   GPT2LMHeadModel (causal, Conv1D projections [B·T, F]): 4 layers, n_embd 128, 4 heads, inputs
               input_ids + attention_mask, output logits only (use_cache=False)
  bert_base    BertForSequenceClassification at bert-base size (12 layers, 768, 12 heads, 3072; vocabulary 1,000),
               for coverage (--base); unstructured skipped above --unstructured-max-params
Exporters: TorchScript (`dynamo=False`, opset 17, dynamic batch and sequence axes) and dynamo (`dynamo=True`, opset 18,
dynamic shapes; skipped with the error printed if it fails).

Then, with onnxprune only (any venv):

    python benchmarks/hf_exports.py prune /tmp/hf [--json /tmp/hf/prune.json]

prunes every `*_ts.onnx` / `*_dyn.onnx` there with `onnxprune.prune` (structured: F-screen, ratio 0.5, global
allocation, least-squares re-fit on the model's `*_data.npz`, as `onnxprune prune --ratio 0.5`; unstructured:
F-screen, ratio 0.5) and reports validity (onnx full check + strict shape inference + onnxruntime load, and the
write-time equivalence check), params, MACs at batch 1 × 32 tokens, heads and MLP width kept per encoder layer, and
top-1 agreement with the dense model on the `*_eval.npz` sequences (random weights: agreement, not accuracy; GPT-2:
over the non-padded positions).

    python benchmarks/hf_exports.py cli prune /tmp/hf/bert_base_ts.onnx --ratio 0.5 --calib /tmp/hf/bert_data.npz -o out.onnx

runs the `onnxprune` CLI with every onnxruntime session on one intra-op thread and BLAS on one thread (the CLI has no
thread option; for CPU-second measurements on a shared machine).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

# benchmarks/transformers.py would shadow the transformers library: drop this folder from the import path
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

SEQ, VOCAB = 32, 1000


def bert_small():
    from transformers import BertConfig, BertForSequenceClassification
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=512, max_position_embeddings=64, num_labels=2, attn_implementation="eager")
    return BertForSequenceClassification(cfg)


def bert_base():
    from transformers import BertConfig, BertForSequenceClassification
    cfg = BertConfig(vocab_size=VOCAB, max_position_embeddings=128, num_labels=2,  # bert-base: 12 × 768, 12 heads
                     attn_implementation="eager")
    return BertForSequenceClassification(cfg)


def gpt2_small():
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=128, n_layer=4, n_head=4, use_cache=False,
                     attn_implementation="eager")
    return GPT2LMHeadModel(cfg)


class Logits(torch.nn.Module):
    """The model's first output only (logits / last hidden state), no cache: one plain ONNX output."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return out.logits if hasattr(out, "logits") else out.last_hidden_state


def token_data(n: int, seed: int) -> dict[str, np.ndarray]:
    """Random ids; every sequence has a random length in [SEQ/4, SEQ], padded with id 0 and mask 0 after it."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, size=(n, SEQ), dtype=np.int64)
    lengths = rng.integers(SEQ // 4, SEQ + 1, size=n)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


def export(module: torch.nn.Module, path: Path, dynamo: bool) -> str:
    feed = token_data(2, 0)
    args = (torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"]))
    names = ["input_ids", "attention_mask"]
    t = time.process_time()
    try:
        if dynamo:
            b, s = torch.export.Dim("batch"), torch.export.Dim("sequence", max=64)
            prog = torch.onnx.export(module, args, dynamo=True, opset_version=18, input_names=names,
                                     output_names=["logits"],
                                     dynamic_shapes={"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: s}})
            prog.save(str(path))
        else:
            axes = {n: {0: "batch", 1: "sequence"} for n in names}
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=17, input_names=names,
                              output_names=["logits"], dynamic_axes={**axes, "logits": {0: "batch"}})
    except Exception as e:  # noqa: BLE001 - report and go on with the other exports
        return f"FAILED {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return f"ok ({time.process_time() - t:.1f} CPU-s)"


def agreement(dense, pruned, data: dict[str, np.ndarray]) -> float:
    """Top-1 agreement of the two models' outputs; per token over the non-padded positions for [N, T, V] outputs."""
    from onnxprune.io.runtime import make_session

    a, b = (make_session(m, threads=1).run(None, data)[0] for m in (dense, pruned))
    same = a.argmax(-1) == b.argmax(-1)
    return float(same[data["attention_mask"] == 1].mean() if same.ndim == 2 else same.mean())


def layer_table(groups, plan) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(kept, total) heads and MLP channels of every encoder layer, in graph order."""
    from onnxprune.units.tokens import is_head_group

    heads, mlp = [], []
    for g in groups:
        if g.prunable:
            kept = len(plan.channels.get(g.id, range(g.size)))
            (heads if is_head_group(g) else mlp).append((kept, g.size))
    return heads, mlp


def prune_all(args) -> None:
    import onnxprune
    from onnxprune.io.model import load_model, validate
    from onnxprune.units.count import count
    from onnxprune.units.tokens import analyse_views

    folder = Path(args.folder)
    rows = []
    paths = sorted(folder.glob("*_ts.onnx")) + sorted(folder.glob("*_dyn.onnx"))
    for path in [p for p in paths if not args.only or any(k in p.name for k in args.only.split(","))]:
        family = path.name.split("_")[0]
        calib, evals = folder / f"{family}_data.npz", dict(np.load(folder / f"{family}_eval.npz"))
        model = load_model(path)
        groups, _ = analyse_views(model)
        shape = {"input_ids": (1, SEQ), "attention_mask": (1, SEQ)}
        c0 = count(model, shape)
        row = {"model": path.name, "params": c0.params, "macs": c0.macs, "encoder_layers": None}
        for mode in ("structured", "unstructured"):
            if mode == "unstructured" and c0.params > args.unstructured_max_params:
                row[mode] = {"valid": None}
                continue
            t = time.process_time()
            try:
                note = ""
                try:
                    r = onnxprune.prune(model, folder / "out" / f"{path.stem}_{mode}.onnx", ratio=0.5, mode=mode,
                                        criterion="fscreen", calib=str(calib))
                except Exception as e:  # noqa: BLE001 - the re-fit failing: say so, measure without it
                    note = f"without re-fit (re-fit failed: {type(e).__name__}: {str(e).splitlines()[0][:120]})"
                    r = onnxprune.prune(model, folder / "out" / f"{path.stem}_{mode}.onnx", ratio=0.5, mode=mode,
                                        criterion="fscreen", calib=str(calib), reconstruct=False)
                validate(r.model)
                c1 = count(r.model, shape)
                res = {"valid": True, "params": c1.params, "macs": c1.macs, "note": note,
                       "agreement": agreement(model, r.model, evals)}
                if mode == "structured":
                    heads, mlp = layer_table(groups, r.plan)
                    res.update(heads=heads, mlp=mlp)
                    row["encoder_layers"] = len(heads)
                else:
                    from onnxprune.units.count import nonzero_params
                    res["nonzero"] = nonzero_params(r.model)
            except Exception as e:  # noqa: BLE001 - report and go on
                res = {"valid": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            res["cpu_s"] = round(time.process_time() - t, 1)
            row[mode] = res
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


def table(rows: list[dict]) -> str:
    out = ["| model | params | MACs (1×32 tokens) | structured 0.5: valid | params | MACs | heads kept per layer | "
           "MLP width kept per layer | agreement | unstructured 0.5: valid | non-zero | agreement |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, u = r["structured"], r["unstructured"]
        cells = [r["model"], f"{r['params']:,}", f"{r['macs'] / 1e6:.1f} M"]
        if s["valid"]:
            cells += ["yes", f"{s['params']:,}", f"{s['macs'] / 1e6:.1f} M",
                      " ".join(f"{k}/{n}" for k, n in s["heads"]), " ".join(f"{k}/{n}" for k, n in s["mlp"]),
                      f"{s['agreement']:.3f}" + (" (no re-fit)" if s.get("note") else "")]
        else:
            cells += [f"no: {s['error'][:80]}", "", "", "", "", ""]
        cells += (["not run", "", ""] if u["valid"] is None else
                  ["yes", f"{u['nonzero']:,}", f"{u['agreement']:.3f}"] if u["valid"] else
                  [f"no: {u['error'][:80]}", "", ""])
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def one_thread_cli(argv: list[str]) -> None:
    """The onnxprune CLI on `argv` with every onnxruntime session, torch and OpenBLAS on one thread."""
    import onnxruntime as ort

    class OneThread(ort.SessionOptions):
        def __init__(self) -> None:
            super().__init__()
            self.intra_op_num_threads = self.inter_op_num_threads = 1

    ort.SessionOptions = OneThread  # make_session sets threads only when asked to
    torch.set_num_threads(1)
    from onnxprune.cli import main as cli
    from onnxprune.stats._blas import single_threaded_blas

    sys.argv = ["onnxprune", *argv]
    with single_threaded_blas():
        cli()


def main() -> None:
    if sys.argv[1:2] == ["cli"]:
        return one_thread_cli(sys.argv[2:])
    if sys.argv[1:2] == ["prune"]:
        ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        ap.add_argument("cmd")
        ap.add_argument("folder")
        ap.add_argument("--json")
        ap.add_argument("--unstructured-max-params", type=float, default=20e6)
        ap.add_argument("--only", help="comma-separated name fragments: prune only the files matching one")
        args = ap.parse_args()
        torch.set_num_threads(1)
        return prune_all(args)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--base", action="store_true", help="also export a bert-base-size BertModel (coverage)")
    ap.add_argument("--exporters", default="ts,dyn")
    ap.add_argument("--samples", type=int, default=512, help="samples in each data file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    builders = {"bert_small": bert_small, "gpt2_small": gpt2_small}
    if args.base:
        builders["bert_base"] = bert_base
    for name, build in builders.items():
        torch.manual_seed(0)
        module = Logits(build()).eval()
        for ex in args.exporters.split(","):
            path = out / f"{name}_{ex}.onnx"
            print(f"{path.name}: {export(module, path, dynamo=ex == 'dyn')}", flush=True)
    for family in ("bert", "gpt2"):
        np.savez(out / f"{family}_data.npz", **token_data(args.samples, 1))
        np.savez(out / f"{family}_eval.npz", **token_data(args.samples, 2))


if __name__ == "__main__":
    main()
