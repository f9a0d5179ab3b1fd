"""How fast onnxruntime's CPU convolution runs per MAC as a function of its output and input channel counts.

    python benchmarks/conv_kernel_rate.py [--sizes 32 8] [--runs 150]

Explains why a pruned model's speed-up trails its MAC reduction: onnxruntime (ORT_ENABLE_ALL) runs 3×3 convs in its
blocked NCHWc layout, whose kernels compute several 8-channel output blocks per pass (AVX2), so a conv with only 8
output channels runs at roughly half the MAC rate of one with 16 or more. For each (spatial size, C_out, C_in) the
script times a model of 17 parallel convs and one of 1 conv on the same input (batch 1, one thread) and reports the
marginal GMAC/s of one conv: (t17 - t1) / 16 removes the session-call overhead. Medians over --runs calls.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def parallel_convs(c_in: int, c_out: int, hw: int, n: int) -> bytes:
    rng = np.random.default_rng(0)
    nodes, inits, outs = [], [], []
    for i in range(n):
        inits += [numpy_helper.from_array((rng.standard_normal((c_out, c_in, 3, 3)) * 0.1).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(c_out, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", ["x", f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        outs.append(f"r{i}")
    nodes += [helper.make_node("Concat", outs, ["y"], axis=1), helper.make_node("GlobalAveragePool", ["y"], ["z"])]
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, hw, hw])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def median_call(model: bytes, c_in: int, hw: int, runs: int) -> float:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    feed = {"x": np.random.default_rng(1).random((1, c_in, hw, hw), dtype=np.float32)}
    for _ in range(20):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[32, 8])
    ap.add_argument("--runs", type=int, default=150)
    a = ap.parse_args()
    c_ins = (8, 16, 32, 64)
    print(f"onnxruntime {ort.__version__}, 1 thread, 3×3 conv + ReLU, batch 1: GMAC/s of one conv\n")
    print("| spatial | C_out | " + " | ".join(f"C_in {c}" for c in c_ins) + " |")
    print("|---:|---:|" + "---:|" * len(c_ins))
    for hw in a.sizes:
        for c_out in (8, 16, 24, 32, 64):
            rates = []
            for c_in in c_ins:
                t1 = median_call(parallel_convs(c_in, c_out, hw, 1), c_in, hw, a.runs)
                t17 = median_call(parallel_convs(c_in, c_out, hw, 17), c_in, hw, a.runs)
                rates.append(c_in * c_out * 9 * hw * hw / ((t17 - t1) / 16) / 1e9)
            print(f"| {hw}×{hw} | {c_out} | " + " | ".join(f"{r:.1f}" for r in rates) + " |", flush=True)


if __name__ == "__main__":
    main()
