"""`compress`: the whole product in one call.

load → choose the candidate (at --ratio, or the certified one with --tolerance) → deploy transforms (fold BN,
int8, ORT format) → validate → write → evaluate → benchmark → result. Every stage is a function elsewhere; this
module only decides the order, the data each stage sees, the defaults a user expects, and what goes into the
result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..certify import parse_grid
from ..errors import OnnxPruneError
from ..io.data import Dataset, discover, load_dataset
from ..io.model import load_model, save_model, validate
from ..measure.evaluate import EvalResult, evaluate, predict
from ..rewrite import quantize as int8
from ..select.plan import Plan, PruneSettings
from .certify import CertifyRun
from .certify import run as certify_run
from .prune import Candidate, Prepared, prepare

CALIB_DIR = Path("calib_data")


@dataclass
class CompressResult:
    """Everything the report shows of one `compress` run."""

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
    certification: CertifyRun | None = None  # when --tolerance was given
    sweep: list[dict] = field(default_factory=list)  # quick accuracy-vs-ratio sweep for the report
    extras: dict[str, Path] = field(default_factory=dict)  # int8 / ort outputs
    extra_evals: dict[str, EvalResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Choice:
    """The candidate to write, the scores it came from, and the only data allowed to shape derived models."""

    prepared: Prepared
    candidate: Candidate
    fit: Dataset  # all the calibration data, or the build split of a certified run
    certification: CertifyRun | None


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
    """Prune (at `settings.ratio`, or at the ratio certified for `tolerance`), write, evaluate and benchmark."""
    model_path = Path(model_path)
    model = load_model(model_path)
    out = _output_path(model_path, output)
    ratios = parse_grid(grid) if tolerance is not None else None  # a bad grid fails before any work
    notes: list[str] = []
    calib_path, data = _calibration(model, calib, notes)
    eval_path = resolve_data(model, eval_data, "eval", notes)
    evald = load_dataset(eval_path, model) if eval_path is not None else data
    if eval_path is None:
        notes.append("no evaluation data found: accuracy is measured on the calibration data (optimistic)")

    choice = _choose(model, data, settings, tolerance, delta, ratios, notes)
    pruned = _deployable(choice.candidate.model, fold_bn, choice.certification, notes)
    save_model(pruned, out, inputs=(model_path,))

    dense_pred = predict(model, evald, settings.batch_size, "dense model")  # once: every comparison reuses it
    result = _result(model_path, out, settings, choice, pruned, calib_path, evald, eval_path, dense_pred, notes)
    if quantize:
        _quantize(result, pruned, choice, evald, dense_pred)
    if ort_format:
        from ..rewrite.ort_format import to_ort

        result.extras["ort"] = to_ort(out)
    if sweep:
        result.sweep = quick_sweep(choice.prepared, choice.fit, evald, dense_pred, settings)
    _measure_models(result, model_path, out, bench, bench_runs, bench_seconds)
    if settings.mode == "unstructured":
        notes.append("unstructured zeros shrink the compressed file but give no onnxruntime speed-up")
    return result


def _output_path(model_path: Path, output: str | Path | None) -> Path:
    """-o, or MODEL.pruned.onnx; never the input itself."""
    out = Path(output) if output is not None else default_output(model_path)
    if out.exists() and out.resolve() == model_path.resolve():
        raise OnnxPruneError(f"refusing to overwrite the input model {model_path}; choose another -o path")
    return out


def _calibration(model: onnx.ModelProto, calib: str | Path | None, notes: list[str]) -> tuple[Path, Dataset]:
    """The calibration file (given or discovered) and its data; none is a clear error."""
    path = resolve_data(model, calib, "calib", notes)
    if path is None:
        raise OnnxPruneError(f"no calibration data: pass --calib FILE.npz (no file in ./{CALIB_DIR}/ named *calib*.npz "
                             f"fits this model's input)")
    return path, load_dataset(path, model)


def _choose(model: onnx.ModelProto, data: Dataset, settings: PruneSettings, tolerance: float | None,
            delta: float, ratios: np.ndarray | None, notes: list[str]) -> Choice:
    """At --ratio: scored and re-fitted on all the calibration data. With --tolerance: the certified candidate
    itself (built on the build split only); nothing certified is an error, so nothing is written."""
    if tolerance is None:
        prepared = prepare(model, data, settings)
        cand = prepared.build(settings.ratio, data, reconstruct=prepared.settings.reconstruct)
        return Choice(prepared, cand, data, None)
    run = certify_run(model, data, settings, ratios, tolerance, delta)
    if run.candidate is None:
        raise OnnxPruneError(f"nothing written: {run.nothing_certified()}")
    notes.append(run.message)
    return Choice(run.prepared, run.candidate, run.build, run)


def _deployable(pruned: onnx.ModelProto, fold_bn: bool, run: CertifyRun | None, notes: list[str]
                ) -> onnx.ModelProto:
    """The model to write: optionally BN-folded, always validated."""
    if fold_bn:
        from ..rewrite.fold_bn import fold_bn as fold

        pruned = fold(pruned)
        if run is not None:
            notes.append("--fold-bn: the written model has BatchNorm folded into the convolutions; it computes the "
                         "certified model's function up to float rounding")
    return validate(pruned)


def _result(model_path: Path, out: Path, settings: PruneSettings, choice: Choice, pruned: onnx.ModelProto,
            calib_path: Path, evald: Dataset, eval_path: Path | None, dense_pred: np.ndarray,
            notes: list[str]) -> CompressResult:
    """Accuracy before and after on the evaluation data, and what was kept."""
    dense_eval = EvalResult(len(evald), float((dense_pred == evald.labels).mean()) if evald.labelled else None, None)
    pruned_eval = evaluate(pruned, evald, reference=dense_pred, batch_size=settings.batch_size)
    prep, plan = choice.prepared, choice.candidate.plan
    return CompressResult(model_path, out, settings, plan, str(calib_path), str(evald.source), eval_path is None,
                          dense_eval, pruned_eval, prep.label_mode, None, prep.mode.kept(prep.scores, plan),
                          list(prep.scores.skipped), certification=choice.certification, notes=notes)


def _quantize(result: CompressResult, pruned: onnx.ModelProto, choice: Choice, evald: Dataset,
              dense_pred: np.ndarray) -> None:
    """The int8 model, calibrated on `choice.fit` only (in a certified run the certification split stays unseen),
    evaluated; in a certified run the report says the certificate does not cover it."""
    q_out = result.output.with_name(result.output.stem + ".int8.onnx")
    result.extras["int8"] = int8.quantize_int8(pruned, choice.fit, q_out)
    result.extra_evals["int8"] = evaluate(onnx.load(q_out), evald, reference=dense_pred)
    run = choice.certification
    if run is not None:
        result.notes.append(f"the certificate covers the float pruned model {result.output} at ratio "
                            f"{run.certification.certified_ratio:g}, on {run.cert_n} certification samples; the int8 "
                            f"model {q_out} is not covered (its ranges come from "
                            f"{min(int8.CALIBRATION_SAMPLES, run.build_n)} build-split samples only) — check it with "
                            f"`onnxprune check`")


def _measure_models(result: CompressResult, model_path: Path, out: Path, bench: bool, runs: int,
                    seconds: float) -> None:
    """Sizes, params and MACs always; latency unless --no-bench."""
    from ..measure.bench import benchmark, model_info

    result.infos = (model_info(model_path), model_info(out))
    if bench:
        result.bench = benchmark(model_path, out, threads="both", runs=runs, seconds=seconds)


def quick_sweep(prepared: Prepared, probe: Dataset, evald: Dataset, dense_pred: np.ndarray,
                settings: PruneSettings, ratios: tuple[float, ...] = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                limit: int = 2000) -> list[dict]:
    """Accuracy against ratio from the same scores (no reconstruction; `probe` only checks each rewrite), on at
    most `limit` evaluation samples."""
    idx = np.arange(min(limit, len(evald)))
    sub, ref = evald.subset(idx), dense_pred[idx]
    rows = []
    for r in ratios:
        cand = prepared.model if r == 0 else prepared.build(r, probe, reconstruct=False).model
        e = evaluate(cand, sub, reference=ref, batch_size=settings.batch_size)
        rows.append({"ratio": r, "accuracy": e.accuracy, "agreement": e.agreement, "n": e.n})
    return rows
