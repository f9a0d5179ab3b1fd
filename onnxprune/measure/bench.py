"""onnxruntime latency, file size, parameters and MACs — measured the way DESIGN §6 prescribes.

Batch 1 (or the batch size the model fixes) with fixed shapes — the declared ones, `--shape`, or the data's
(compress passes the evaluation data's shape, so dynamic H/W are benchmarked and counted at the real size) —
warm-ups before timing, at least `runs` timed runs or `seconds` of timing, percentiles in milliseconds; the edge
setting (1 intra-op thread, sequential execution) and onnxruntime's default threads; ORT_ENABLE_ALL. The session
is built from exactly the model given — the file's bytes for a path — never from an instrumented or re-serialised
copy. Two models are compared by interleaving them run by run in one process on the same input and quoting the
median of the per-pair ratios: a shared, noisy machine slows both members of a pair alike, so the ratio is far
steadier than either latency.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import OnnxPruneError
from ..units.count import count
from ..io.model import compressed_size, load_model, serialize
from ..io.runtime import input_specs, make_session, parse_dims
from ..io.shapes import concrete_inputs

ModelSource = str | Path | onnx.ModelProto
Threads = Literal["1", "default"]
THREAD_SETTINGS: dict[str, tuple[Threads, ...]] = {"1": ("1",), "default": ("default",), "both": ("1", "default")}
SEED = 0


@dataclass(frozen=True)
class LatencyStats:
    """Per-run latency of one model under one thread setting; `samples_ms` holds every timed run."""

    threads: Threads
    runs: int
    warmup: int
    elapsed_s: float  # wall time of the timed phase (for two models: of both, interleaved)
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    samples_ms: np.ndarray = field(repr=False, compare=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        del d["samples_ms"]
        return d


@dataclass(frozen=True)
class Comparison:
    """Models A and B timed alternately (A B A B …); ratios are medians over the per-pair ratios."""

    threads: Threads
    a: LatencyStats
    b: LatencyStats
    a_over_b: float  # > 1: B is faster — the speed-up of B over A
    b_over_a: float  # B's latency as a fraction of A's

    @property
    def speedup(self) -> float:
        return self.a_over_b

    def to_dict(self) -> dict:
        return {"threads": self.threads, "pairs": self.a.runs, "a_over_b": self.a_over_b, "b_over_a": self.b_over_a,
                "speedup": self.speedup, "a": self.a.to_dict(), "b": self.b.to_dict()}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    size_bytes: int  # serialized model, including external data files
    compressed_bytes: int  # zlib level 6: where unstructured zeros pay off (they give no latency gain)
    params: int
    macs: int  # multiply-accumulates at the benchmarked shapes (batch 1)
    macs_unknown: int  # MAC-bearing nodes whose shapes could not be inferred: `macs` is then a lower bound
    compressed_estimated: bool = False  # `compressed_bytes` estimated from blocks (io.model.compressed_size)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BenchResult:
    models: tuple[ModelInfo, ...]
    latency: dict[str, tuple[LatencyStats, ...]]  # thread setting → one entry per model
    comparisons: dict[str, Comparison]  # thread setting → comparison (two models only)
    shapes: dict[str, tuple[int, ...]]
    runs: int
    warmup: int
    seconds: float

    def to_dict(self) -> dict:
        return {
            "models": [m.to_dict() for m in self.models],
            "latency": {t: [s.to_dict() for s in stats] for t, stats in self.latency.items()},
            "comparison": {t: c.to_dict() for t, c in self.comparisons.items()},
            "settings": {"batch": next((v[0] for v in self.shapes.values() if v), 1),  # 1, or a fixed batch
                         "optimization": "ORT_ENABLE_ALL", "runs": self.runs, "warmup": self.warmup,
                         "seconds": self.seconds, "seed": SEED,
                         "shapes": {k: list(v) for k, v in self.shapes.items()}},
        }


# --- public functions ------------------------------------------------------------------------


def latency(model: ModelSource, threads: Threads = "1", runs: int = 200, warmup: int = 10, seconds: float = 10.0,
            shapes: dict[str, tuple[int, ...]] | None = None) -> LatencyStats:
    """Time one model: `warmup` untimed runs, then until `runs` timed runs or `seconds` have passed."""
    proto, src = _load(model)
    feed = random_feed(proto, shapes)
    (stats,) = _time([_session(src, threads)], feed, threads, runs, warmup, seconds)
    return stats


def compare(model_a: ModelSource, model_b: ModelSource, threads: Threads = "1", runs: int = 200, warmup: int = 10,
            seconds: float = 10.0, shapes: dict[str, tuple[int, ...]] | None = None) -> Comparison:
    """Time A and B interleaved on the same input; see `Comparison` for what the ratios mean."""
    (pa, sa), (pb, sb) = _load(model_a), _load(model_b)
    feed = _common_feed(pa, pb, shapes)
    a, b = _time([_session(sa, threads), _session(sb, threads)], feed, threads, runs, warmup, seconds)
    return _comparison(threads, a, b)


def benchmark(model_a: ModelSource, model_b: ModelSource | None = None, threads: str = "both", runs: int = 200,
              warmup: int = 10, seconds: float = 10.0, shapes: dict[str, tuple[int, ...]] | None = None,
              names: tuple[str, ...] | None = None) -> BenchResult:
    """Size, params, MACs and latency of one model, or of two compared under every requested thread setting."""
    if threads not in THREAD_SETTINGS:
        raise OnnxPruneError(f"--threads {threads}: expected one of {', '.join(THREAD_SETTINGS)}")
    loaded = [_load(m) for m in (model_a, model_b) if m is not None]
    names = names or tuple(_name(m, i) for i, m in enumerate(m for m in (model_a, model_b) if m is not None))
    feed = random_feed(loaded[0][0], shapes) if len(loaded) == 1 else _common_feed(loaded[0][0], loaded[1][0], shapes)
    latency_by: dict[str, tuple[LatencyStats, ...]] = {}
    comparisons: dict[str, Comparison] = {}
    for t in THREAD_SETTINGS[threads]:
        stats = _time([_session(src, t) for _, src in loaded], feed, t, runs, warmup, seconds)
        latency_by[t] = tuple(stats)
        if len(stats) == 2:
            comparisons[t] = _comparison(t, *stats)
    fixed = {k: v.shape for k, v in feed.items()}
    infos = tuple(_info(name, proto, src, fixed) for name, (proto, src) in zip(names, loaded))
    return BenchResult(infos, latency_by, comparisons, fixed, runs, warmup, seconds)


def random_feed(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """Seeded random batch-1 inputs in each input's dtype (integers for integer inputs, e.g. uint8 images)."""
    rng = np.random.default_rng(SEED)
    return {name: _random(rng, shape, dtype) for name, (shape, dtype) in fixed_shapes(model, shapes).items()}


def fixed_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None
                 ) -> dict[str, tuple[tuple[int, ...], type]]:
    """Every input's concrete shape and dtype: `shapes` (whole or per-sample shapes, e.g. the data's), else the
    declared fixed dims with a dynamic batch axis (symbolic, ? or -1) of 1; any other dynamic axis needs `shapes`."""
    dtypes = {s.name: s.dtype for s in input_specs(model)}
    return {k: (v, dtypes[k]) for k, v in concrete_inputs(model, shapes).items()}


def parse_shapes(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """`--shape` values, `NAME=1,3,224,224` or (single-input models) `1,3,224,224`, as a dict."""
    out: dict[str, tuple[int, ...]] = {}
    for v in values:
        name, _, dims = v.rpartition("=")
        out[name.strip()] = parse_dims(dims, f"--shape {name.strip() + '=' if name else ''}")
    return out


# --- internals -------------------------------------------------------------------------------


def _load(model: ModelSource) -> tuple[onnx.ModelProto, str | bytes]:
    """The model (normalised, for shapes and counting) and the session source: the file itself for a path."""
    if isinstance(model, onnx.ModelProto):
        return model, serialize(model)
    return load_model(model), str(model)


def _session(src: str | bytes, threads: Threads) -> ort.InferenceSession:
    try:
        if threads == "1":
            return make_session(src, threads=1, sequential=True)
        return make_session(src)
    except Exception as e:
        raise OnnxPruneError(f"onnxruntime cannot load the model: {str(e).splitlines()[0][:300]}") from None


def _time(sessions: list[ort.InferenceSession], feed: dict[str, np.ndarray], threads: Threads, runs: int,
          warmup: int, seconds: float) -> list[LatencyStats]:
    """Warm up, then run the sessions in turn (A B A B …) until `runs` rounds or `seconds` have passed."""
    if runs < 1 or warmup < 0 or seconds <= 0:
        raise OnnxPruneError(f"need runs >= 1, warmup >= 0 and seconds > 0 (got {runs}, {warmup}, {seconds})")
    try:
        for _ in range(warmup):
            for s in sessions:
                s.run(None, feed)
        times = np.zeros((len(sessions), runs), dtype=np.int64)
        start = perf_counter_ns()
        deadline = start + int(seconds * 1e9)
        n = 0
        while n < runs and (n == 0 or perf_counter_ns() < deadline):
            for i, s in enumerate(sessions):
                t0 = perf_counter_ns()
                s.run(None, feed)
                times[i, n] = perf_counter_ns() - t0
            n += 1
        elapsed = (perf_counter_ns() - start) / 1e9
    except OnnxPruneError:
        raise
    except Exception as e:
        raise OnnxPruneError(f"onnxruntime failed while benchmarking: {str(e).splitlines()[0][:300]}") from None
    return [summarize(row[:n] / 1e6, threads, warmup, elapsed) for row in times]


def summarize(samples_ms: np.ndarray, threads: Threads, warmup: int, elapsed_s: float) -> LatencyStats:
    p50, p90, p99 = np.percentile(samples_ms, [50, 90, 99])
    return LatencyStats(threads, len(samples_ms), warmup, elapsed_s, float(p50), float(p90), float(p99),
                        float(samples_ms.mean()), float(samples_ms.min()), samples_ms)


def _comparison(threads: Threads, a: LatencyStats, b: LatencyStats) -> Comparison:
    return Comparison(threads, a, b, float(np.median(a.samples_ms / b.samples_ms)),
                      float(np.median(b.samples_ms / a.samples_ms)))


def _common_feed(a: onnx.ModelProto, b: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None
                 ) -> dict[str, np.ndarray]:
    sa, sb = fixed_shapes(a, shapes), fixed_shapes(b, shapes)
    if sa != sb:
        raise OnnxPruneError("the two models have different inputs, so they cannot be compared on the same input: "
                             f"{_describe(sa)} vs {_describe(sb)}")
    return random_feed(a, shapes)


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        lo, hi = (info.min, info.max) if info.bits <= 8 else (0, 1)  # wide ints are often indices: keep them valid
        return rng.integers(lo, hi, shape, endpoint=True).astype(dt)
    return rng.standard_normal(shape).astype(dt)


def model_info(model: ModelSource, shapes: dict[str, tuple[int, ...]] | None = None) -> ModelInfo:
    """Size (raw and zlib), params and batch-1 MACs of one model, without timing it."""
    proto, src = _load(model)
    name = str(model) if isinstance(model, (str, Path)) else proto.graph.name
    return _info(name, proto, src, {k: v[0] for k, v in fixed_shapes(proto, shapes).items()})


def _info(name: str, proto: onnx.ModelProto, src: str | bytes, shapes: dict[str, tuple[int, ...]]) -> ModelInfo:
    c = count(proto, shapes)
    data = Path(src).read_bytes() if isinstance(src, str) else src
    size = len(data) + (_external_bytes(src) if isinstance(src, str) else 0)
    packed, estimated = compressed_size(data, 6)
    return ModelInfo(name, size, packed, int(c.params), int(c.macs), len(c.unknown), estimated)


def _external_bytes(path: str) -> int:
    """Sizes of the external data files a model file refers to (models over 2 GB keep their weights there)."""
    model = onnx.load(path, load_external_data=False)
    base = Path(path).parent
    files = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    return sum(os.path.getsize(base / f) for f in files if (base / f).is_file())


def _name(model: ModelSource, i: int) -> str:
    return str(model) if not isinstance(model, onnx.ModelProto) else (model.graph.name or "AB"[i])


def _dims(shape: tuple[int | None, ...]) -> str:
    return "(" + ",".join("?" if d is None else str(d) for d in shape) + ")"


def _describe(shapes: dict[str, tuple[tuple[int, ...], type]]) -> str:
    return "; ".join(f"{k} {_dims(s)} {np.dtype(t).name}" for k, (s, t) in shapes.items())
