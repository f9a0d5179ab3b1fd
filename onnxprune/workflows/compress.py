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
from ..progress import say, track
from ..io.data import CALIB_DIR, Dataset, load_dataset, resolve_data
from ..io.model import check_writable, load_model, save_model, validate
from ..io.shapes import data_shapes
from ..measure.evaluate import EvalResult, accuracy_of, evaluate, predict
from ..rewrite import quantize as int8
from ..select.plan import Plan, PruneSettings
from ..stats import Stats
from .certify import CertifyRun
from .certify import run as certify_run
from .recover import describe
from .prune import Candidate, Prepared, prepare, ratio_for_macs, ratio_for_speedup



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
    nonzero: tuple[int, int] | None = None  # non-zero weights (dense, pruned), for unstructured results

    def rows(self) -> list[dict]:
        """Before/after rows: metric, before, after, ratio (after/before), speed-up for latency, change for scores."""
        return summary_rows(self)

    def to_dict(self) -> dict:
        """Everything as plain JSON-safe data (report.json, `compress --json`): the keys of REPORT_KEYS, in order."""
        return to_dict(self)

    def summary(self) -> str:
        """A few plain lines: what was written and the before → after numbers."""
        lines = [f"{self.input} → {self.output} ({self.settings.mode}, {self.settings.criterion}, "
                 f"ratio {self.plan.settings['ratio']:g})"]
        for x in self.rows():
            change = (f"{x['speedup']:.2f}× faster" if "speedup" in x else
                      f"× {x['ratio']:.3f}" if x.get("ratio") is not None else
                      "-" if x.get("change") is None else f"{x['change']:+.4f}")
            lines.append(f"  {x['metric']}: {x['before']:,.4g} → {x['after']:,.4g} ({change})")
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])



@dataclass
class Choice:
    """The candidate to write, the scores it came from, and the only data allowed to shape derived models."""

    prepared: Prepared
    candidate: Candidate
    fit: Dataset  # all the calibration data, or the build split of a certified run
    certification: CertifyRun | None


def default_output(model_path: Path) -> Path:
    return model_path.with_name(model_path.stem + ".pruned.onnx")


def compress(model_path: str | Path, *, output: str | Path | None = None, calib: str | Path | None = None,
             eval_data: str | Path | None = None, settings: PruneSettings = PruneSettings(),
             tolerance: float | None = None, delta: float = 0.1, grid: str = "0:0.9:0.05",
             fold_bn: bool = False, quantize: str | None = None, ort_format: bool = False, bench: bool = True,
             bench_runs: int = 200, bench_seconds: float = 10.0, sweep: bool = False,
             target_macs: float | None = None, target_speedup: float | None = None,
             stats: Stats | None = None, recover_data: str | Path | None = None, loss: str = "auto",
             loss_tau: float | None = None, ray: str | None = None) -> CompressResult:
    """Prune (at `settings.ratio`, at the ratio certified for `tolerance`, or at the smallest ratio meeting a MACs or
    speed-up budget), write, evaluate and benchmark. `ray`: the statistics pass and certification's candidate
    evaluation run as Ray tasks (`stats/distributed.py`)."""
    if sum(x is not None for x in (tolerance, target_macs, target_speedup)) > 1:
        raise OnnxPruneError("give one of --tolerance, --target-macs and --target-speedup")
    if tolerance is None and (loss != "auto" or loss_tau is not None):
        raise OnnxPruneError("--loss and --loss-tau choose what --tolerance certifies: add --tolerance")
    model_path = Path(model_path)
    model = load_model(model_path)
    out = _output_path(model_path, output)
    check_writable(out, inputs=(model_path,))  # before any work, not after the whole pipeline ran
    ratios = parse_grid(grid) if tolerance is not None else None  # a bad grid fails before any work
    notes: list[str] = []
    calib_path, data = _calibration(model, calib, notes)
    eval_path = resolve_data(model, eval_data, "eval", notes)
    evald = load_dataset(eval_path, model) if eval_path is not None else data
    if eval_path is None:
        notes.append("no evaluation data found: accuracy is measured on the calibration data (optimistic)")

    if stats is not None and tolerance is not None:
        raise OnnxPruneError("--stats cannot be used with --tolerance: certification scores on its build split only, "
                             "and saved statistics were collected on data that may include the certification split")
    recover_set = _recovery_data(model, recover_data, settings, notes)
    choice = _choose(model, data, settings, tolerance, delta, ratios, notes, target_macs, target_speedup, stats,
                     recover_set, (loss, loss_tau), ray)
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
    _measure_models(result, model_path, out, bench, bench_runs, bench_seconds, data_shapes(evald))
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
            delta: float, ratios: np.ndarray | None, notes: list[str], target_macs: float | None = None,
            target_speedup: float | None = None, stats: Stats | None = None,
            recover_data: Dataset | None = None, loss: tuple[str, float | None] = ("auto", None),
            ray: str | None = None) -> Choice:
    """At --ratio (or a budget's ratio): scored and re-fitted on all the calibration data. With --tolerance: the
    certified candidate itself (built on the build split only); nothing certified is an error, so nothing is
    written."""
    if tolerance is None:
        prepared = prepare(model, data, settings, stats, ray=ray)
        ratio = settings.ratio
        if target_macs is not None or target_speedup is not None:
            ratio = _budget_ratio(prepared, data, target_macs, target_speedup, notes)
        cand = prepared.build(ratio, data, reconstruct=prepared.settings.reconstruct,
                              recover=recover_data if recover_data is not None else data)
        if cand.recovery is not None:
            notes.append(describe(cand.recovery))
        return Choice(prepared, cand, data, None)
    run = certify_run(model, data, settings, ratios, tolerance, delta, recover_data=recover_data, loss=loss[0],
                      loss_tau=loss[1], ray=ray)
    if not run.prunes:
        raise OnnxPruneError(f"nothing written: {run.nothing_certified()}")
    notes.append(run.message)
    if run.candidate.recovery is not None:
        notes.append(describe(run.candidate.recovery) + "; every candidate was recovered on the build split, so the "
                     "certificate covers the recovered model")
    return Choice(run.prepared, run.candidate, run.build, run)


def _recovery_data(model: onnx.ModelProto, path: str | Path | None, settings: PruneSettings, notes: list[str]
                   ) -> Dataset | None:
    """The data recovery trains on when it is not the calibration data (e.g. the user's training set)."""
    if path is None:
        return None
    if not settings.recovers:
        raise OnnxPruneError("--recover-data is the data recovery trains on: add --recover (or --recover-epochs N)")
    data = load_dataset(path, model)
    notes.append(f"recovery trains on {path} ({len(data)} samples)")
    return data


def _budget_ratio(prepared: Prepared, data: Dataset, target_macs: float | None, target_speedup: float | None,
                  notes: list[str]) -> float:
    """The smallest ratio meeting the budget, said with how it was found."""
    if target_macs is not None:
        found = ratio_for_macs(prepared, target_macs, data)
        notes.append(f"--target-macs {target_macs:g}: ratio {found.ratio:g} keeps {found.value:.4f} of the dense MACs "
                     f"(bisection over {len(found.tried)} rewrites, MACs counted from shapes)")
    else:
        found = ratio_for_speedup(prepared, target_speedup, data)
        tried = ", ".join(f"{r:g}→{v:.2f}×" for r, v in found.tried)
        notes.append(f"--target-speedup {target_speedup:g}: ratio {found.ratio:g} measured {found.value:.2f}× faster "
                     f"on this machine (onnxruntime, batch 1, one thread, interleaved median; tried {tried}) — "
                     f"speed-ups are machine-dependent: check on the target device with `onnxprune bench`")
    say(f"note: {notes[-1]}")
    return found.ratio


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
    dense_eval = EvalResult(len(evald), accuracy_of(dense_pred, evald), None)
    pruned_eval = evaluate(pruned, evald, reference=dense_pred, batch_size=settings.batch_size)
    notes += [n for n in (pruned_eval.note, *evald.notes) if n and n not in notes]
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
                    seconds: float, shapes: dict[str, tuple[int, ...]] | None = None) -> None:
    """Sizes, params and MACs always; latency unless --no-bench — at the data's input shapes (dynamic H/W)."""
    from ..measure.bench import benchmark, model_info

    result.infos = (model_info(model_path, shapes), model_info(out, shapes))
    if result.settings.mode == "unstructured":  # zeros are stored, so params count them: say what is left
        from ..units.count import nonzero_params

        result.nonzero = (nonzero_params(load_model(model_path)), nonzero_params(load_model(out)))
    if bench:
        result.bench = benchmark(model_path, out, threads="both", runs=runs, seconds=seconds, shapes=shapes)


def quick_sweep(prepared: Prepared, fit: Dataset, evald: Dataset, dense_pred: np.ndarray, settings: PruneSettings,
                ratios: tuple[float, ...] = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), limit: int = 2000) -> list[dict]:
    """Accuracy against ratio from the same scores, each candidate built exactly as the written model is (same
    re-fit on the same data), on at most `limit` evaluation samples."""
    idx = np.arange(min(limit, len(evald)))
    sub, ref = evald.subset(idx), dense_pred[idx]
    recon = prepared.settings.reconstruct
    how = "with least-squares re-fit" if recon else "without re-fit"
    rows = []
    for r in track(ratios, "accuracy sweep", total=len(ratios)):
        cand = prepared.model if r == 0 else prepared.build(r, fit, reconstruct=recon).model
        e = evaluate(cand, sub, reference=ref, batch_size=settings.batch_size)
        rows.append({"ratio": r, "accuracy": e.accuracy, "agreement": e.agreement, "n": e.n, "how": how})
    return rows


# ---------------------------------------------------------------------------------------------------- as data
REPORT_KEYS = ("input", "output", "mode", "settings", "calibration_data", "evaluation_data", "label_mode", "summary",
               "kept", "skipped", "certification", "sweep", "benchmark", "extras", "notes")


def summary_rows(r: CompressResult) -> list[dict]:
    """metric, before, after, and either `ratio` (after/before: counts, sizes, latency) or `change` (after − before:
    accuracy, agreement) — one meaning per column. Latency rows say their speed-up in the metric; unstructured
    results count non-zero weights and say that zeros give no speed-up."""
    rows: list[dict] = []
    unstructured = r.settings.mode == "unstructured"
    if r.infos:
        a, b = r.infos
        rows.append(_row("params (zeros included)" if unstructured else "params", a.params, b.params))
        if unstructured and r.nonzero:
            rows.append(_row("non-zero weights", *r.nonzero))
        rows += [_row("MACs", a.macs, b.macs), _row("file size (bytes)", a.size_bytes, b.size_bytes),
                 _row("file size zlib (bytes" + (", sampled estimate)" if a.compressed_estimated or
                                                  b.compressed_estimated else ")"),
                      a.compressed_bytes, b.compressed_bytes)]
    if r.dense_eval.accuracy is not None:
        rows.append({"metric": f"accuracy ({r.pruned_eval.n} samples)", "before": r.dense_eval.accuracy,
                     "after": r.pruned_eval.accuracy, "ratio": None,
                     "change": r.pruned_eval.accuracy - r.dense_eval.accuracy})
    e = r.pruned_eval
    if e.agreement is not None:  # None: the output has no classes (regression, embedding)
        rows.append({"metric": "agreement with dense" + (" (per position)" if e.kind == "dense" else ""),
                     "before": 1.0, "after": e.agreement, "ratio": None, "change": e.agreement - 1.0})
    if e.kind == "values" and e.cosine is not None:
        rows += [{"metric": "output cosine with dense", "before": 1.0, "after": e.cosine, "ratio": None,
                  "change": e.cosine - 1.0},
                 {"metric": "output relative error", "before": 0.0, "after": e.rel_error, "ratio": None,
                  "change": e.rel_error}]
    return rows + _latency_rows(r)


def _latency_rows(r: CompressResult) -> list[dict]:
    """p50 latency before/after per thread setting; the interleaved speed-up in the metric, unless it is noise."""
    if r.bench is None:
        return []
    rows = []
    for t, label in (("1", "1 thread"), ("default", "default threads")):
        if t in r.bench.comparisons:
            c = r.bench.comparisons[t]
            how = ("zeros run dense kernels: no speed-up" if r.settings.mode == "unstructured"
                   else f"{c.a_over_b:.2f}× faster")
            rows.append({"metric": f"latency p50 ms, {label} ({how})", "before": c.a.p50_ms, "after": c.b.p50_ms,
                         "ratio": c.b_over_a, "speedup": c.a_over_b})
    return rows


def _row(metric: str, before: float, after: float) -> dict:
    return {"metric": metric, "before": before, "after": after, "ratio": after / before if before else None,
            "change": None}  # before = 0 (e.g. MACs unknown): no ratio, and the formatters print "-"


def to_dict(r: CompressResult) -> dict:
    """report.json and `compress --json`: every key of REPORT_KEYS, in that order."""
    d = {
        "input": str(r.input), "output": str(r.output), "mode": r.settings.mode, "settings": r.settings.to_dict(),
        "calibration_data": r.calib, "evaluation_data": r.eval_data, "label_mode": r.label_mode,
        "summary": summary_rows(r),
        "kept": {k: {"kept": v[0], "total": v[1]} for k, v in r.kept.items()},
        "skipped": [{"group": g, "reason": why} for g, why in r.skipped],
        "certification": None if r.certification is None else r.certification.to_dict(),
        "sweep": r.sweep,
        "benchmark": None if r.bench is None else r.bench.to_dict(),
        "extras": {k: str(v) for k, v in r.extras.items()},
        "notes": r.notes,
    }
    for k, e in r.extra_evals.items():
        d["extras"][f"{k}_eval"] = e.to_dict()
    assert tuple(d) == REPORT_KEYS
    return d
