"""`compress`: the whole product in one call.

load → (certify the ratio) → statistics → scores → selection → rewrite (+ reconstruct) → deploy transforms
(fold BN, int8, ORT format) → validate → evaluate → benchmark → report. Every stage is a function elsewhere; this
module only decides the order, the defaults a user expects, and what goes into the result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..io.data import Dataset, discover, load_dataset
from ..errors import OnnxPruneError
from ..measure.evaluate import EvalResult, evaluate, predict
from ..io.model import load_model, save_model, serialize, validate
from .prune import prepare
from ..select.plan import Plan, PruneSettings

CALIB_DIR = Path("calib_data")


@dataclass
class CompressResult:
    input: Path
    output: Path
    settings: PruneSettings
    plan: Plan
    calib: str
    eval_data: str
    eval_is_calibration: bool
    dense_eval: EvalResult
    pruned_eval: EvalResult
    label_mode: str | None
    bench: object | None  # bench.BenchResult (dense vs pruned), None with --no-bench
    kept: dict[str, tuple[int, int]]  # layer or group → (kept, total)
    skipped: list[tuple[str, str]]
    infos: tuple = ()  # bench.ModelInfo of (dense, pruned): sizes, params, MACs — always measured
    certification: object | None = None  # certification.CertifyRun when --tolerance was given
    sweep: list[dict] = field(default_factory=list)  # quick accuracy-vs-ratio sweep for the report
    extras: dict[str, Path] = field(default_factory=dict)  # int8 / ort outputs
    extra_evals: dict[str, EvalResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def default_output(model_path: Path) -> Path:
    return model_path.with_name(model_path.stem + ".pruned.onnx")


def resolve_data(model: onnx.ModelProto, path: str | Path | None, kind: str, notes: list[str]) -> Path | None:
    """An explicit path, or the single `calib_data/*{kind}*.npz` that fits the model (said in the notes)."""
    if path is not None:
        return Path(path)
    found = discover(model, CALIB_DIR, kind)
    if found is not None:
        notes.append(f"using {found} as {kind} data (it fits the model input; pass --{kind} to choose another)")
    return found


def compress(model_path: str | Path, *, output: str | Path | None = None, calib: str | Path | None = None,
             eval_data: str | Path | None = None, settings: PruneSettings = PruneSettings(),
             tolerance: float | None = None, delta: float = 0.1, grid: str = "0:0.9:0.05",
             fold_bn: bool = False, quantize: str | None = None, ort_format: bool = False, bench: bool = True,
             bench_runs: int = 200, bench_seconds: float = 10.0, sweep: bool = False) -> CompressResult:
    model_path = Path(model_path)
    model = load_model(model_path)
    out = Path(output) if output is not None else default_output(model_path)
    if out.exists() and out.resolve() == model_path.resolve():
        raise OnnxPruneError(f"refusing to overwrite the input model {model_path}; choose another -o path")
    notes: list[str] = []
    calib_path = resolve_data(model, calib, "calib", notes)
    if calib_path is None:
        raise OnnxPruneError(f"no calibration data: pass --calib FILE.npz (no file in ./{CALIB_DIR}/ named *calib*.npz "
                             f"fits this model's input)")
    data = load_dataset(calib_path, model)
    eval_path = resolve_data(model, eval_data, "eval", notes)
    evald = load_dataset(eval_path, model) if eval_path is not None else data
    if eval_path is None:
        notes.append("no evaluation data found: accuracy is measured on the calibration data (optimistic)")

    cert_run = None
    ratio = settings.ratio
    if tolerance is not None:
        from .certify import run as certify_run
        from ..certify import parse_grid

        cert_run = certify_run(model, data, settings, parse_grid(grid), tolerance, delta,
                               reconstruct=settings.reconstruct)
        ratio = cert_run.certification.certified_ratio or 0.0
        notes.append(cert_run.certification.message)
        prepared = cert_run.prepared
    else:
        prepared = prepare(model, data, settings)
    pruned, plan = prepared.build(ratio, data)
    if fold_bn:
        from ..rewrite.channels import fold_bn as fold

        pruned = fold(pruned)
    pruned = validate(pruned)
    save_model(pruned, out, inputs=(model_path,))

    dense_pred = predict(model, evald, settings.batch_size, "dense model")  # once: every comparison reuses it
    dense_eval = EvalResult(len(evald), float((dense_pred == evald.labels).mean()) if evald.labelled else None, None)
    pruned_eval = evaluate(pruned, evald, reference=dense_pred, batch_size=settings.batch_size)
    mod_kept = _kept(settings.mode, prepared.scores, plan)
    result = CompressResult(model_path, out, settings, plan, str(calib_path), str(evald.source), eval_path is None,
                            dense_eval, pruned_eval, prepared.label_mode, None, mod_kept,
                            list(getattr(prepared.scores, "skipped", [])), certification=cert_run, notes=notes)
    if quantize:
        _quantize(result, pruned, data, evald, dense_pred)
    if ort_format:
        result.extras["ort"] = _to_ort(out)
    if sweep:
        result.sweep = quick_sweep(prepared, evald, dense_pred, settings)
    from ..measure.bench import benchmark, model_info

    result.infos = (model_info(model_path), model_info(out))
    if bench:
        result.bench = benchmark(model_path, out, threads="both", runs=bench_runs, seconds=bench_seconds)
    if settings.mode == "unstructured":
        notes.append("unstructured zeros shrink the compressed file but give no onnxruntime speed-up")
    return result


def _kept(mode: str, scores: object, plan: Plan) -> dict[str, tuple[int, int]]:
    if mode == "structured":
        from ..modes.structured import kept_fraction

        return kept_fraction(scores, plan)
    return {name: (int(m.sum()), int(m.size)) for name, m in sorted(plan.masks.items())}


def quick_sweep(prepared, evald: Dataset, dense_pred: np.ndarray, settings: PruneSettings,
                ratios: tuple[float, ...] = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), limit: int = 2000) -> list[dict]:
    """Accuracy against ratio from the same scores (no reconstruction), on at most `limit` evaluation samples."""
    idx = np.arange(min(limit, len(evald)))
    sub, ref = evald.subset(idx), dense_pred[idx]
    rows = []
    for r in ratios:
        cand = prepared.model if r == 0 else prepared.build(r, reconstruct=False)[0]
        e = evaluate(cand, sub, reference=ref, batch_size=settings.batch_size)
        rows.append({"ratio": r, "accuracy": e.accuracy, "agreement": e.agreement, "n": e.n})
    return rows


def _quantize(result: CompressResult, pruned: onnx.ModelProto, calib: Dataset, evald: Dataset,
              dense_pred: np.ndarray) -> None:
    """Static int8 (QDQ, per-channel) with onnxruntime.quantization, re-calibrated on the calibration data."""
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib.subset(np.arange(min(len(calib), 512))).batches(32))

        def get_next(self):
            return next(self.it, None)

    import logging

    q_out = result.output.with_name(result.output.stem + ".int8.onnx")
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's generic pre-processing advice is not actionable here
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pruned.onnx"
        src.write_bytes(serialize(pruned))
        quantize_static(str(src), str(q_out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    result.extras["int8"] = q_out
    result.extra_evals["int8"] = evaluate(onnx.load(q_out), evald, reference=dense_pred)


def _to_ort(path: Path) -> Path:
    """onnxruntime's ORT format (for the minimal mobile builds), written by an optimising session."""
    import onnxruntime as ort

    target = path.with_suffix(".ort")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # portable across hardware
    so.optimized_model_filepath = str(target)
    so.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return target
