"""Recovery benchmarks of issue #12 (CI never runs them): Markdown rows with accuracy and CPU-seconds.

    python benchmarks/recover_compare.py tp      [--epochs 22] [--data calib_data/cifar10_calib.npz]
    python benchmarks/recover_compare.py cnn     [--epochs 22]                # DenseNet, MobileNetV2 at 50 %
    python benchmarks/recover_compare.py lenet   [--train50k FILE.npz]        # LeNet-300-100 90/95/97/98 %

`tp`: ResNet-20 at 50 % of channels, onnxprune (`prune --ratio 0.5 --alpha 0.4`, least-squares re-fit) against
Torch-Pruning 1.6.1 (L1 magnitude, global or uniform) on the PyTorch ResNet-20 of `models/` with the same weights,
pruned to the same MACs (bisection on TP's ratio; MACs counted by `onnxprune.units.count` on both exported graphs).
Both pruned models are then recovered by the *same* code — `onnxprune.recover.distill.recover`, label-free KD
from the dense model, same data, epochs, learning rate, batch, seed, one thread — so the recipe and the CPU time
are equal by construction and the comparison isolates the pruning decision (which channels, plus the re-fit).
The TP model enters that recovery as ONNX (exported with torch's TorchScript exporter, as `onnxprune export`).

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
    """As `onnxprune export` does: TorchScript exporter, opset 18, dynamic batch, names input / logits."""
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.randn(*shape) * 64 + 128,), buf, dynamo=False, opset_version=18,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return onnx.load_from_string(buf.getvalue())


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
        for alloc in args.tp_allocation.split(","):
            c0 = time.process_time()
            m, r, f = tp_at_macs(target, alloc == "global")
            print(f"Torch-Pruning 1.6.1 L1 {alloc}: pruning_ratio {r:.4f} → MACs {f:.4f} of dense "
                  f"({time.process_time() - c0:.0f} CPU-s for the bisection)", flush=True)
            cands.append((f"Torch-Pruning 1.6.1 L1 {alloc}", m, f, None))
        ev = NpzData.load(CIFAR_EVAL, "input")
        print(f"\nrecovery: {args.epochs} epochs on {args.data}, {CIFAR_RECIPE}, seed 0, 1 thread\n")
        row("method", "MACs / dense", "pruned", "recovered", "recovery CPU-s", "epochs run")
        row("---", "---", "---", "---", "---", "---")
        for name, m, f, _ in cands:
            if args.epochs == 0:
                row(name, f"{f:.4f}", f"{accuracy(m, ev):.4f}", "-", "-", "-")
                continue
            r = recovery_row(m, dense_path, args.data, CIFAR_EVAL, progress=False, epochs=args.epochs,
                             **CIFAR_RECIPE)
            row(name, f"{f:.4f}", f"{r['accuracy_before']:.4f}", f"{r['accuracy_after']:.4f}", f"{r['cpu_s']:.0f}",
                r["epochs_run"])


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
