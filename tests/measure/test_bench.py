"""Latency benchmarks: percentiles, interleaved comparison, fixed shapes, JSON output and one-line errors.

The machine is shared and noisy, so timings are checked for structure and loose sanity, never for speed.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from onnxprune.measure import bench
from onnxprune.cli import main
from onnxprune.errors import OnnxPruneError

from builders import LENET300, tiny_mlp

FAST = {"runs": 30, "warmup": 2, "seconds": 5.0}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def relu_model(dims: list, dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """x → Relu → y, with the given input dims (strings are dynamic)."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", dtype, dims)],
                              [helper.make_tensor_value_info("y", dtype, dims)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def test_summarize_percentiles_are_numpy_linear_percentiles():
    s = bench.summarize(np.arange(1, 101, dtype=float), "1", warmup=0, elapsed_s=1.0)
    assert (s.p50_ms, s.p90_ms, s.p99_ms) == pytest.approx((50.5, 90.1, 99.01))
    assert s.min_ms == 1.0 and s.mean_ms == 50.5 and s.runs == 100


def test_latency_on_lenet_reports_ordered_percentiles_of_its_samples():
    s = bench.latency(LENET300, threads="1", **FAST)
    assert s.runs == 30 and len(s.samples_ms) == 30 and s.threads == "1" and s.warmup == 2
    assert s.p50_ms == pytest.approx(np.percentile(s.samples_ms, 50))
    assert s.p99_ms == pytest.approx(np.percentile(s.samples_ms, 99))
    assert 0 < s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms
    assert "samples_ms" not in s.to_dict()


def test_time_limit_stops_before_the_run_count():
    s = bench.latency(tiny_mlp(), runs=10**6, warmup=0, seconds=0.05)
    assert 1 <= s.runs < 10**6 and s.elapsed_s < 5


def test_model_compared_with_itself_has_ratio_near_one():
    c = bench.compare(LENET300, LENET300, threads="1", runs=60, warmup=5)
    assert c.a.runs == c.b.runs == 60
    assert 0.3 < c.a_over_b < 3 and 0.3 < c.b_over_a < 3 and c.speedup == c.a_over_b


def test_compare_refuses_models_with_different_inputs():
    with pytest.raises(OnnxPruneError, match="different inputs"):
        bench.compare(LENET300, tiny_mlp(), **FAST)


def test_dynamic_batch_becomes_one_and_other_dynamic_dims_need_shape():
    assert bench.fixed_shapes(tiny_mlp())["input"][0] == (1, 4)
    with pytest.raises(OnnxPruneError, match=r"--shape x=1,N"):
        bench.fixed_shapes(relu_model(["batch", "len"]))
    assert bench.fixed_shapes(relu_model(["batch", "len"]), {"": (1, 7)})["x"][0] == (1, 7)
    with pytest.raises(OnnxPruneError, match="does not fit"):
        bench.fixed_shapes(relu_model(["batch", 3]), {"x": (1, 4)})


def test_random_inputs_match_the_input_dtype():
    feed = bench.random_feed(relu_model(["batch", 64], TensorProto.UINT8))
    assert feed["x"].dtype == np.uint8 and feed["x"].shape == (1, 64) and len(np.unique(feed["x"])) > 10
    again = bench.random_feed(relu_model(["batch", 64], TensorProto.UINT8))
    np.testing.assert_array_equal(feed["x"], again["x"])  # seeded: the same input every time
    assert bench.random_feed(tiny_mlp())["input"].dtype == np.float32


def test_cli_json_for_two_models_has_every_key():
    r = run("bench", LENET300, LENET300, "--runs", 20, "--warmup", 2, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert set(d) == {"models", "latency", "comparison", "settings"}
    assert set(d["latency"]) == set(d["comparison"]) == {"1", "default"}
    assert [m["params"] for m in d["models"]] == [d["models"][0]["params"]] * 2 and d["models"][0]["params"] > 0
    assert {"name", "size_bytes", "compressed_bytes", "params", "macs", "macs_unknown",
            "compressed_estimated"} == set(d["models"][0])
    assert d["models"][0]["compressed_estimated"] is False  # a small model is compressed in full
    for stats in d["latency"].values():
        assert len(stats) == 2 and {"p50_ms", "p90_ms", "p99_ms", "runs", "threads"} <= set(stats[0])
    c = d["comparison"]["1"]
    assert {"a_over_b", "b_over_a", "speedup", "pairs", "a", "b"} <= set(c) and c["pairs"] == 20
    assert d["settings"]["batch"] == 1 and d["settings"]["shapes"] == {"input": [1, 1, 28, 28]}


def test_cli_table_for_one_model(tmp_path):
    r = run("bench", LENET300, "--runs", 10, "--warmup", 1, "--threads", "1")
    assert r.exit_code == 0, r.output
    assert "p99 ms, 1 thread" in r.output and "default threads" not in r.output


def test_cli_dynamic_dim_is_one_line_exit_2_and_shape_fixes_it(tmp_path):
    p = tmp_path / "dyn.onnx"
    onnx.save(relu_model(["batch", "len"]), p)
    r = run("bench", p, "--runs", 5, "--warmup", 0, "--threads", "1")
    assert r.exit_code == 2 and "--shape" in r.output and len(r.output.strip().splitlines()) == 1
    r = run("bench", p, "--runs", 5, "--warmup", 0, "--threads", "1", "--shape", "x=1,16", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["settings"]["shapes"] == {"x": [1, 16]}


# ---------------------------------------------------------------------------------------------------- issue 13
def _macs_by_hand(hw: int = 8) -> int:
    return hw * hw * 8 * 27 + hw * hw * 8 * 72 + 8 * 4  # conv 3→8, conv 8→8 (3×3), Gemm 8→4


@pytest.mark.parametrize("batch", ["N", None, -1])
def test_a_dynamic_batch_is_counted_at_one_never_negative(batch):
    from robustness.exporters import cnn

    info = bench.model_info(cnn(batch=batch))
    assert info.macs == _macs_by_hand() and info.macs_unknown == 0


def test_macs_after_an_op_shape_inference_does_not_know_are_real():
    """com.microsoft.Gelu stops ONNX shape inference; the layers after it are counted from onnxruntime's shapes."""
    from robustness.exporters import cnn

    from onnxprune.units.count import count

    c = count(cnn(custom="com.microsoft"))
    assert c.macs == _macs_by_hand() and not c.unknown


def test_dynamic_hw_is_counted_and_timed_at_the_given_shape(tmp_path):
    from robustness.exporters import cnn

    m = cnn(hw="H")
    assert bench.model_info(m, {"x": (1, 3, 6, 6)}).macs == _macs_by_hand(6)
    assert bench.model_info(m, {"x": (3, 6, 6)}).macs == _macs_by_hand(6)  # a per-sample shape is accepted
    p = tmp_path / "hw.onnx"
    onnx.save(m, p)
    for shape in ("1,3,6,6", "x=1,3,6,6", "3,6,6"):
        r = run("bench", p, "--runs", 3, "--warmup", 0, "--threads", "1", "--shape", shape, "--json")
        assert r.exit_code == 0, r.output
        d = json.loads(r.stdout)
        assert d["settings"]["shapes"] == {"x": [1, 3, 6, 6]} and d["models"][0]["macs"] == _macs_by_hand(6)


def test_bench_accepts_the_real_shape_of_a_minus_one_batch(tmp_path):
    from robustness.exporters import cnn

    p = tmp_path / "m1.onnx"
    onnx.save(cnn(batch=-1), p)
    r = run("bench", p, "--runs", 3, "--warmup", 0, "--threads", "1", "--shape", "1,3,8,8", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["models"][0]["macs"] == _macs_by_hand()
