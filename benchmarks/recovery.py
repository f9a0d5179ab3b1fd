"""Recovery benchmark (CI never runs it): prune with the CLI, recover, evaluate before and after.

`recovery_row(pruned, dense, train_npz, eval_npz, **recover_kwargs)` loads the data, runs `recover`, evaluates
top-1 accuracy of the pruned model before and after with onnxruntime, and returns one table row with wall and
CPU seconds of the recovery call.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxprune.recover.distill import recover


class NpzData:
    """The duck-typed dataset `recover` needs (`inputs`, `labels`, `__len__`, `subset`, `batches`)."""

    def __init__(self, inputs: dict[str, np.ndarray], labels: np.ndarray | None):
        self.inputs, self.labels = inputs, labels

    @classmethod
    def load(cls, path: str | Path, input_name: str) -> "NpzData":
        with np.load(path) as z:
            x = z[input_name] if input_name in z.files else z["x"]
            return cls({input_name: x}, z["y"].astype(np.int64) if "y" in z.files else None)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def subset(self, idx: np.ndarray) -> "NpzData":
        return NpzData({k: v[idx] for k, v in self.inputs.items()}, None if self.labels is None else self.labels[idx])

    def batches(self, batch_size: int):
        for i in range(0, len(self), batch_size):
            yield {k: np.ascontiguousarray(v[i:i + batch_size], dtype=np.float32) for k, v in self.inputs.items()}


def accuracy(model: onnx.ModelProto, data: NpzData, threads: int = 1, batch_size: int = 500) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    preds = np.concatenate([s.run(None, b)[0].argmax(1) for b in data.batches(batch_size)])
    return float((preds == data.labels).mean())


def recovery_row(pruned: str | Path | onnx.ModelProto, dense: str | Path | onnx.ModelProto,
                 train_npz: str | Path, eval_npz: str | Path, **kwargs: Any) -> dict[str, Any]:
    p = pruned if isinstance(pruned, onnx.ModelProto) else onnx.load(str(pruned))
    d = dense if isinstance(dense, onnx.ModelProto) else onnx.load(str(dense))
    name = p.graph.input[0].name
    train, ev = NpzData.load(train_npz, name), NpzData.load(eval_npz, name)
    before = accuracy(p, ev)
    t0, c0 = time.perf_counter(), time.process_time()
    out, rep = recover(p, d, train, **kwargs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"accuracy_before": before, "accuracy_after": accuracy(out, ev), "dense_accuracy": accuracy(d, ev),
            "wall_s": wall, "cpu_s": cpu, "epochs_run": rep.epochs_run, "stopped": rep.stopped,
            "agreement_after": rep.agreement_after, "bn_reestimated": rep.bn_reestimated, "augment": rep.augment,
            "features": len(rep.features), "settings": rep.settings, "model": out}


ROWS = [  # (pruned model made by the prune command below, data, eval data, recover keywords)
    ("r20_50", "calib_data/cifar10_calib.npz", "calib_data/cifar10_eval.npz", dict(epochs=22, lr=0.03, batch_size=64)),
    ("r20_50_fp32", "calib_data/cifar10_calib.npz", "calib_data/cifar10_eval.npz",  # without bf16 autocast (AMX)
     dict(epochs=22, lr=0.03, batch_size=64, precision="fp32")),
    ("r20_60", "calib_data/cifar10_calib.npz", "calib_data/cifar10_eval.npz", dict(epochs=30, lr=0.03, batch_size=64)),
    ("r20_60_35", "calib_data/cifar10_calib.npz", "calib_data/cifar10_eval.npz", dict(epochs=35, lr=0.03, batch_size=64)),
    ("l300_95", "calib_data/mnist_calib.npz", "calib_data/mnist_eval.npz", dict(epochs=20, lr=0.1)),
    ("l300_97", "calib_data/mnist_calib.npz", "calib_data/mnist_eval.npz", dict(epochs=40, lr=0.1)),
]
PRUNE = {  # the pruned inputs, made with the CLI (re-fit on the calibration data, as by default)
    "r20_50": "onnxprune prune models/resnet20_cifar10.onnx --ratio 0.5 --alpha 0.4 --calib calib_data/cifar10_calib.npz -o {out}",
    "r20_50_fp32": "onnxprune prune models/resnet20_cifar10.onnx --ratio 0.5 --alpha 0.4 --calib calib_data/cifar10_calib.npz -o {out}",
    "r20_60": "onnxprune prune models/resnet20_cifar10.onnx --ratio 0.6 --alpha 0.2 --calib calib_data/cifar10_calib.npz -o {out}",
    "r20_60_35": "onnxprune prune models/resnet20_cifar10.onnx --ratio 0.6 --alpha 0.2 --calib calib_data/cifar10_calib.npz -o {out}",
    "l300_95": "onnxprune prune models/lenet300_mnist.onnx --mode unstructured --criterion magnitude --ratio 0.95 --calib calib_data/mnist_calib.npz -o {out}",
    "l300_97": "onnxprune prune models/lenet300_mnist.onnx --mode unstructured --criterion magnitude --ratio 0.97 --calib calib_data/mnist_calib.npz -o {out}",
}
DENSE = {"r20": "models/resnet20_cifar10.onnx", "l300": "models/lenet300_mnist.onnx"}


# whole `compress` commands (statistics pass, pruning, re-fit, recovery, evaluation; --no-bench), one-shot vs
# training-time pruning (--schedule iterative) at about equal CPU time; one torch thread (recovery's default)
COMPRESS = {
    "r20_50_oneshot": "--ratio 0.5 --recover-epochs 22",
    "r20_50_iterative": "--ratio 0.5 --schedule iterative --recover-epochs 20",
    "r20_50_uniform": "--ratio 0.5 --allocation uniform --recover-epochs 22",
    "r20_60_oneshot": "--ratio 0.6 --recover-epochs 22",
    "r20_60_iterative": "--ratio 0.6 --schedule iterative --recover-epochs 22",
    # the epochs that fit ~300 CPU-s of recovery with bf16 autocast (AMX CPUs; docs/BENCHMARKS.md, Recovery I)
    "r20_50_28": "--ratio 0.5 --recover-epochs 28",
    "r20_50_30": "--ratio 0.5 --recover-epochs 30",
    "r20_50_iterative_24": "--ratio 0.5 --schedule iterative --recover-epochs 24",
}
COMPRESS_CMD = ("onnxprune compress models/resnet20_cifar10.onnx {args} --calib calib_data/cifar10_calib.npz "
                "--eval calib_data/cifar10_eval.npz --no-bench --json -o {out}")


def compress_row(args: str, out: str | Path) -> dict[str, Any]:
    """Run one `compress` command; its top-1 on the eval data, and the command's CPU seconds (user + system of the
    child process, so the statistics pass, re-fit and evaluation count too) and wall seconds."""
    import json
    import os
    import resource
    import shlex
    import subprocess

    cmd = COMPRESS_CMD.format(args=args, out=out)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(shlex.split(cmd), check=True, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads(proc.stdout)
    acc = next(r for r in report["summary"] if r["metric"].startswith("accuracy"))
    return {"command": cmd, "dense": acc["before"], "accuracy": acc["after"], "wall_s": wall,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "notes": [n for n in report["notes"] if n.startswith("recovery")]}


def main() -> None:
    """python benchmarks/recovery.py [ROW ...] — prune, recover, and print one Markdown row per configuration
    (ROW: a name of ROWS, or of COMPRESS for a whole `compress` command)."""
    import shlex
    import subprocess
    import sys
    import tempfile

    names = sys.argv[1:] or [r[0] for r in ROWS] + list(COMPRESS)
    with tempfile.TemporaryDirectory() as tmp:
        for name in (n for n in names if n in COMPRESS):
            row = compress_row(COMPRESS[name], Path(tmp) / f"{name}.onnx")
            print(f"| {name} | {row['dense']:.4f} | {row['accuracy']:.4f} | {row['cpu_s']:.0f} | {row['wall_s']:.0f} | "
                  f"`{COMPRESS[name]}` |", flush=True)
        for name, train, ev, kw in (r for r in ROWS if r[0] in names):
            out = Path(tmp) / f"{name}.onnx"
            subprocess.run(shlex.split(PRUNE[name].format(out=out)), check=True, capture_output=True)
            row = recovery_row(out, DENSE[name.split("_")[0]], train, ev, progress=False, **kw)
            print(f"| {name} | {row['dense_accuracy']:.4f} | {row['accuracy_before']:.4f} | "
                  f"{row['accuracy_after']:.4f} | {row['cpu_s']:.0f} | {row['wall_s']:.0f} | {kw} |", flush=True)


if __name__ == "__main__":
    main()
