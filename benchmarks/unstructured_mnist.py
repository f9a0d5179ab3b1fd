"""Unstructured post-training pruning of LeNet-300-100 on MNIST: our criteria with and without least-squares
reconstruction, against onnxsim 0.8.1's magnitude / Wanda / SparseGPT pruning on the same file, in one run.

    python benchmarks/unstructured_mnist.py            # prints the tables recorded in docs/BENCHMARKS.md

Statistics and reconstruction use calib_data/mnist_calib.npz (10k); accuracy is on calib_data/mnist_eval.npz
(MNIST test, 10k). Sparsity counts the three Gemm weights (266,200); no fine-tuning anywhere.
onnxsim is a benchmark-only dependency (`pip install onnxsim==0.8.1`); without it our rows are still printed.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.modes.unstructured import UNSTRUCTURED as U
from onnxprune.io.data import load_dataset
from onnxprune.measure.evaluate import predict
from onnxprune.io.model import load_model
from onnxprune.select.plan import PruneSettings
from onnxprune.stats import collect

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "lenet300_mnist.onnx"
RATIOS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97)
METHODS = [("magnitude", {})] + [(f"fscreen α={a}", {"alpha": a}) for a in (0.2, 0.4, 0.6, 0.8, 1.0)] + \
          [("relative importance β=1", {}), ("wanda", {})]
CRITERION = {"magnitude": "magnitude", "fscreen": "fscreen", "relative": "ri", "wanda": "wanda"}


def accuracy(model: onnx.ModelProto, data) -> float:
    return float((predict(model, data, 1000) == data.labels).mean())


def gemm_sparsity(model: onnx.ModelProto) -> tuple[float, list[float]]:
    """Zero fraction over the Gemm weights (removed neurons count as zeros) and kept fraction per layer."""
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    kept = [int(np.count_nonzero(w[n.input[1]])) for n in model.graph.node if n.op_type == "Gemm"]
    sizes = [235200, 30000, 1000]
    return 1 - sum(kept) / sum(sizes), [k / s for k, s in zip(kept, sizes)]


def ours(dense, calib, ev) -> tuple[list[list[str]], dict[str, list[float]]]:
    rows, layer_kept = [], {}
    for label, extra in METHODS:
        s = PruneSettings(mode="unstructured", criterion=CRITERION[label.split()[0]], **extra)
        reqs = U.requests(dense, s)
        stats = collect(dense, calib, reqs) if reqs else None
        scores = U.score(dense, stats, s)
        plain, refit = [label], [label + " + reconstruction"]
        for r in RATIOS:
            plan = U.select(dense, scores, r, s)
            pruned = U.apply(dense, plan)
            fixed = U.reconstruct(dense, pruned, plan, calib, s)
            sp, per_layer = gemm_sparsity(fixed)
            assert abs(sp - r) < 0.005, (label, r, sp)
            plain.append(f"{accuracy(pruned, ev):.2%}")
            refit.append(f"{accuracy(fixed, ev):.2%}")
            if r == 0.95:
                layer_kept[label] = per_layer
        rows += [plain, refit]
        print(f"  {label}: done", file=sys.stderr)
    return rows, layer_kept


def peer(ev, calib) -> tuple[list[list[str]], dict[str, list[float]], str]:
    try:
        import onnxsim
        from onnxsim import pruning
    except ImportError:
        return [], {}, "onnxsim is not installed (`pip install onnxsim==0.8.1`): peer rows skipped"
    batches = [{"input": calib.inputs["input"][i:i + 1000].astype(np.float32)} for i in range(0, len(calib), 1000)]
    runs = {"onnxsim magnitude (global)": lambda r: pruning.apply_magnitude_pruning(
                str(MODEL), sparsity=r, global_sparsity=True),
            "onnxsim wanda": lambda r: pruning.apply_wanda_pruning(str(MODEL), calibration_data=batches, sparsity=r),
            "onnxsim sparsegpt": lambda r: pruning.apply_sparsegpt_pruning(str(MODEL), calibration_data=batches,
                                                                          sparsity=r)}
    rows, layer_kept = [], {}
    for label, fn in runs.items():
        row = [label]
        for r in RATIOS:
            m = fn(r)
            sp, per_layer = gemm_sparsity(m)
            row.append(f"{accuracy(m, ev):.2%}" + ("" if abs(sp - r) < 0.005 else f" (sparsity {sp:.1%})"))
            if r == 0.95:
                layer_kept[label] = per_layer
        rows.append(row)
        print(f"  {label}: done", file=sys.stderr)
    return rows, layer_kept, f"onnxsim {onnxsim.__version__}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    t0 = time.time()
    dense = load_model(MODEL)
    calib = load_dataset(REPO / "calib_data" / "mnist_calib.npz", dense)
    ev = load_dataset(REPO / "calib_data" / "mnist_eval.npz", dense)
    base = accuracy(dense, ev)
    rows, kept = ours(dense, calib, ev)
    prow, pkept, note = peer(ev, calib)
    print(f"LeNet-300-100, MNIST test (10k), post-training, no fine-tuning. Dense: {base:.2%}. {note}.\n")
    print(table(["method \\ sparsity"] + [f"{r:.0%}" for r in RATIOS], rows + prow))
    print("\nKept fraction per layer at 95% sparsity (paper 001 Table 2: Han 8% / 9% / 26%, Barbu 4.6% / 20.1% / "
          "68.5%, WLS 4.1% / 5.3% / 22.4% — those after training with pruning):\n")
    print(table(["method", "fc1 (235,200)", "fc2 (30,000)", "fc3 (1,000)"],
                [[k] + [f"{v:.1%}" for v in vals] for k, vals in {**kept, **pkept}.items()]))
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
