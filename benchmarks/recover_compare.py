"""Recovery benchmarks of issue #12 (CI never runs them): Markdown rows with accuracy and CPU-seconds.

    python benchmarks/recover_compare.py tp      [--epochs 22] [--data calib_data/cifar10_calib.npz] [--ce]
    python benchmarks/recover_compare.py cnn     [--epochs 22]                # DenseNet, MobileNetV2 at 50 %
    python benchmarks/recover_compare.py lenet   [--train50k FILE.npz]        # LeNet-300-100 90/95/97/98 %

`tp`: ResNet-20 at 50 % of channels, onnxprune (`prune --ratio 0.5 --alpha 0.4`, least-squares re-fit) against
Torch-Pruning 1.6.1 (L1 magnitude, global or uniform) on the PyTorch ResNet-20 of `models/` with the same weights,
pruned to the same MACs (bisection on TP's ratio; MACs counted by `onnxprune.units.count` on both exported graphs).
Both pruned models are then recovered by the *same* code — `onnxprune.recover.distill.recover`, label-free KD
from the dense model, same data, epochs, learning rate, batch, seed, one thread — so the recipe is equal by
construction and the comparison isolates the pruning decision (which channels, plus the re-fit). The CPU time is
not quite equal: TP's widths such as 7 and 9 train in torch's slower contiguous layout (`channels_last_safe`), so
at equal epochs TP gets ~25 % more CPU-s than onnxprune's multiples of 8.
The TP model enters that recovery as ONNX, exported exactly as `onnxprune export` does (BatchNormalization kept as
its own node, `TrainingMode.PRESERVE`; torch's default folds BN into the Conv and the BN-free TP graph then diverges
to NaN under the recovery — the 10.00 % of an earlier run). `--ce` adds what a TP user would do instead: fine-tune
the pruned torch model with cross-entropy on the labels (same SGD recipe and augmentation), for the CPU-s of
onnxprune's recovery.

Every pruned input is made by the CLI command printed with its row; recovery runs through
`benchmarks/recovery.py: recovery_row` (CPU seconds of the recovery call, `time.process_time`).
Needs the `bench` extra (torch-pruning) for `tp`.
"""
from __future__ import annotations

import argparse
import io
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "models"))
from recovery import NpzData, accuracy, recovery_row  # noqa: E402

CIFAR_CALIB, CIFAR_EVAL = "calib_data/cifar10_calib.npz", "calib_data/cifar10_eval.npz"
MNIST_CALIB, MNIST_EVAL = "calib_data/mnist_calib.npz", "calib_data/mnist_eval.npz"
CIFAR_RECIPE = dict(lr=0.03, batch_size=64)  # benchmarks/recovery.py's ResNet-20 recipe (SGD, KD T=4, cosine)
MNIST_RECIPE = dict(lr=0.1)


def cli(cmd: str) -> float:
    """Run an onnxprune command from the repo root; its CPU seconds (children)."""
    c0 = time.process_time(), _children()
    subprocess.run(shlex.split(cmd), check=True, capture_output=True, cwd=ROOT)
    return _children() - c0[1]


def _children() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def macs(model: onnx.ModelProto) -> int:
    from onnxprune.units.count import count

    return count(model).macs


def row(*cells) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


# ------------------------------------------------------------------ Torch-Pruning side by side
def torch_resnet20():
    import torch
    import archs

    m = archs.resnet20()
    m.load_state_dict(torch.load(ROOT / "models/weights/resnet20.pt", map_location="cpu", weights_only=True))
    return m.eval()


def to_onnx(module, shape=(1, 3, 32, 32)) -> onnx.ModelProto:
    """Exactly as `onnxprune export` (`onnxprune/io/export.py`): TorchScript exporter, opset 18, dynamic batch,
    names input / logits, `TrainingMode.PRESERVE` on the eval-mode module so every BatchNormalization stays its own
    node, then `normalise` and the checker.

    PRESERVE matters: torch's default (`TrainingMode.EVAL`) folds each BN into its Conv, and the recovery then
    trains a BN-free 20-layer network whose KD loss is NaN from the first epoch at lr 0.03 (TP row at 10.00 %),
    while the onnxprune model — exported with PRESERVE, BN trained with batch statistics — does not diverge."""
    import torch

    from onnxprune.io.model import normalise

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.randn(*shape) * 64 + 128,), buf, dynamo=False, opset_version=18,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True)
    model = normalise(onnx.load_from_string(buf.getvalue()))
    onnx.checker.check_model(model, full_check=True)
    return model


def tp_prune(ratio: float, global_pruning: bool):
    import torch
    import torch_pruning as tp

    m = torch_resnet20()
    example = torch.randn(1, 3, 32, 32) * 64 + 128
    pruner = tp.pruner.MagnitudePruner(m, example, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=ratio, global_pruning=global_pruning, ignored_layers=[m[-1]])
    pruner.step()
    return m


def tp_at_macs(target: float, global_pruning: bool, steps: int = 14) -> tuple[onnx.ModelProto, float, float]:
    """TP's pruning ratio whose exported model keeps `target` of the dense MACs (bisection): (model, ratio, MACs)."""
    dense = macs(to_onnx(torch_resnet20()))
    lo, hi, best = 0.0, 0.95, None
    for _ in range(steps):
        r = (lo + hi) / 2
        m = to_onnx(tp_prune(r, global_pruning))
        f = macs(m) / dense
        if best is None or abs(f - target) < abs(best[2] - target):
            best = (m, r, f)
        lo, hi = (r, hi) if f > target else (lo, r)
    return best


def conv_widths(model: onnx.ModelProto) -> list[int]:
    """Output channels of every Conv, in graph order (to show that no layer was emptied)."""
    dims = {t.name: t.dims for t in model.graph.initializer}
    return [dims[n.input[1]][0] for n in model.graph.node if n.op_type == "Conv"]


def ce_finetune(module, data: str, cpu_budget: float, lr: float = 0.03, batch_size: int = 64, seed: int = 0,
                warmup_fraction: float = 0.03, max_epochs: int = 200):
    """What a Torch-Pruning user does after pruning: fine-tune the torch model with cross-entropy on the labels.

    Same recipe as the recovery where it applies (SGD Nesterov 0.9, wd 5e-4 on ≥ 2-D weights, lr, batch, warm-up +
    cosine, crop + flip augmentation of `recover`, BN in train mode, one thread), on every labelled image of `data`
    (no held-out split), and the same CPU time: the epoch count is planned from the first epoch's CPU seconds so
    that the cosine ends inside `cpu_budget` (CPU-s of the training loop, `time.process_time`).
    Returns (module in eval mode, CPU-s, epochs run)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from onnxprune.recover.distill import _augment, Cosine

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    with np.load(ROOT / data) as z:
        x, y = z["x"], torch.from_numpy(z["y"].astype(np.int64))
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.SGD([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 5e-4},
                           {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                          lr=lr, momentum=0.9, nesterov=True)
    steps = -(-len(x) // batch_size)
    planned = max_epochs
    lr_at = Cosine(lr, planned * steps, warmup_fraction)
    module.train()
    c0, step, epoch = time.process_time(), 0, 0
    while epoch < planned:
        order = rng.permutation(len(x))
        for b0 in range(0, len(x), batch_size):
            idx = np.sort(order[b0:b0 + batch_size])
            xb = torch.from_numpy(_augment(x[idx], 4, True, rng).astype(np.float32))
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss = F.cross_entropy(module(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        epoch += 1
        if epoch == 1:  # re-plan so that the cosine completes inside the CPU budget
            planned = max(1, min(max_epochs, int(cpu_budget // (time.process_time() - c0))))
            lr_at.total = max(step + 1, planned * steps)
    return module.eval(), time.process_time() - c0, epoch


def bench_tp(args) -> None:
    import torch

    torch.set_num_threads(1)
    dense_path = "models/resnet20_cifar10.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        ours = Path(args.ours or Path(tmp) / "r20_50.onnx")
        cmd = (f"onnxprune prune {dense_path} --ratio 0.5 --alpha 0.4 --calib {CIFAR_CALIB} -o {ours}")
        cpu_prune = 0.0 if args.ours else cli(cmd)  # --ours: that command's output, made before
        ours_m = onnx.load(str(ours))
        target = macs(ours_m) / macs(onnx.load(dense_path))
        print(f"onnxprune: `{cmd}` → MACs {target:.4f} of dense ({cpu_prune:.0f} CPU-s)", flush=True)
        cands = [("onnxprune fscreen α=0.4 + re-fit", ours_m, target, cpu_prune)]
        tp_ratios = []
        for alloc in args.tp_allocation.split(","):
            c0 = time.process_time()
            m, r, f = tp_at_macs(target, alloc == "global")
            print(f"Torch-Pruning 1.6.1 L1 {alloc}: pruning_ratio {r:.4f} → MACs {f:.4f} of dense "
                  f"({time.process_time() - c0:.0f} CPU-s for the bisection)", flush=True)
            cands.append((f"Torch-Pruning 1.6.1 L1 {alloc}", m, f, None))
            tp_ratios.append((alloc, r, f, m))
        for name, m, _, _ in cands:
            print(f"conv widths, {name}: {conv_widths(m)}", flush=True)
        ev = NpzData.load(CIFAR_EVAL, "input")
        print(f"\nrecovery: {args.epochs} epochs on {args.data}, {CIFAR_RECIPE}, seed 0, 1 thread\n")
        row("method", "MACs / dense", "pruned", "recovered", "recovery CPU-s", "epochs run")
        row("---", "---", "---", "---", "---", "---")
        ours_cpu = args.ce_cpu
        for name, m, f, _ in cands[1 if args.skip_ours else 0:]:
            if args.epochs == 0:
                row(name, f"{f:.4f}", f"{accuracy(m, ev):.4f}", "-", "-", "-")
                continue
            r = recovery_row(m, dense_path, args.data, CIFAR_EVAL, progress=False, epochs=args.epochs,
                             **CIFAR_RECIPE)
            row(name, f"{f:.4f}", f"{r['accuracy_before']:.4f}", f"{r['accuracy_after']:.4f}", f"{r['cpu_s']:.0f}",
                r["epochs_run"])
            ours_cpu = ours_cpu or r["cpu_s"]  # the first row is ours (unless --skip-ours): the CE budget
        if args.ce:  # what a TP user would do instead: CE on the labels in torch, for ours' recovery CPU-s
            for alloc, ratio, f, m in tp_ratios:
                module, cpu, ep = ce_finetune(tp_prune(ratio, alloc == "global"), args.data, ours_cpu,
                                              **CIFAR_RECIPE)
                row(f"Torch-Pruning 1.6.1 L1 {alloc} + CE fine-tune on labels (torch)", f"{f:.4f}",
                    f"{accuracy(m, ev):.4f}", f"{accuracy(to_onnx(module), ev):.4f}", f"{cpu:.0f}", ep)


# ------------------------------------------------------------------ DenseNet / MobileNetV2 at 50 %
def bench_cnn(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            dense = f"models/{name}_cifar10.onnx"
            out = Path(tmp) / f"{name}.onnx"
            cmd = f"onnxprune prune {dense} --ratio 0.5 --calib {CIFAR_CALIB} -o {out}"
            cpu = cli(cmd)
            m = onnx.load(str(out))
            f = macs(m) / macs(onnx.load(dense))
            r = recovery_row(m, dense, args.data, CIFAR_EVAL, progress=False, epochs=args.epochs, **CIFAR_RECIPE)
            row(name, f"`{cmd}`", f"{f:.3f}", f"{r['dense_accuracy']:.4f}", f"{r['accuracy_before']:.4f} ({cpu:.0f})",
                f"{r['accuracy_after']:.4f}", f"{r['cpu_s']:.0f}", r["epochs_run"])


# ------------------------------------------------------------------ LeNet-300-100, unstructured
def bench_lenet(args) -> None:
    dense = "models/lenet300_mnist.onnx"
    sets = [("10k calibration", MNIST_CALIB, args.epochs)]
    if args.train50k:
        sets.append(("50k train", args.train50k, args.epochs50k))
    with tempfile.TemporaryDirectory() as tmp:
        for ratio in (float(r) for r in args.ratios.split(",")):
            out = Path(tmp) / f"l300_{ratio}.onnx"
            cmd = (f"onnxprune prune {dense} --mode unstructured --criterion {args.criterion} --ratio {ratio} "
                   f"--calib {MNIST_CALIB} -o {out}")
            cpu = cli(cmd)
            m = onnx.load(str(out))
            cells = [f"{ratio:.2f}", f"{accuracy(m, NpzData.load(MNIST_EVAL, m.graph.input[0].name)):.4f} ({cpu:.0f})"]
            for _, data, epochs in sets:
                r = recovery_row(m, dense, data, MNIST_EVAL, progress=False, epochs=epochs, **MNIST_RECIPE)
                cells.append(f"{r['accuracy_after']:.4f} ({r['cpu_s']:.0f})")
            row(*cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("tp", help="ResNet-20 50 %: onnxprune vs Torch-Pruning at equal MACs and recovery")
    t.add_argument("--data", default=CIFAR_CALIB)
    t.add_argument("--epochs", type=int, default=22)
    t.add_argument("--tp-allocation", default="global,uniform")
    t.add_argument("--ours", help="onnxprune's pruned model, already made by the command printed")
    t.add_argument("--ce", action="store_true", help="also fine-tune each TP model in torch with cross-entropy on "
                   "the labels of --data, for the CPU-s of onnxprune's recovery")
    t.add_argument("--ce-cpu", type=float, default=0.0, help="CPU-s budget of --ce (default: ours' recovery)")
    t.add_argument("--skip-ours", action="store_true", help="no row for onnxprune's model (measured before; "
                   "give --ce-cpu with --ce)")
    c = sub.add_parser("cnn", help="DenseNet and MobileNetV2 at 50 % of channels")
    c.add_argument("--models", default="densenet,mobilenetv2")
    c.add_argument("--data", default=CIFAR_CALIB)
    c.add_argument("--epochs", type=int, default=22)
    n = sub.add_parser("lenet", help="LeNet-300-100 unstructured, post-training and recovered")
    n.add_argument("--ratios", default="0.9,0.95,0.97,0.98")
    n.add_argument("--criterion", default="magnitude")
    n.add_argument("--epochs", type=int, default=30)
    n.add_argument("--train50k", help="the MNIST train split as an .npz (x uint8 (N,1,28,28), y)")
    n.add_argument("--epochs50k", type=int, default=10)
    args = ap.parse_args()
    t0 = time.perf_counter()
    {"tp": bench_tp, "cnn": bench_cnn, "lenet": bench_lenet}[args.what](args)
    print(f"\n({time.perf_counter() - t0:.0f} s wall, {time.process_time():.0f} CPU-s in this process)")


if __name__ == "__main__":
    main()
