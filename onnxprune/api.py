"""The Python API: one function per CLI command, each returning a result object (`import onnxprune` exposes them).

    import onnxprune
    r = onnxprune.compress("model.onnx", ratio=0.5)        # or tolerance=0.01 to certify the ratio
    print(r.summary())

The CLI is a thin layer over these; paths or in-memory `onnx.ModelProto`s are both accepted where a model is.
Keyword names are the CLI's option names (`--eval` is `eval_data`, `--tolerance` is `tolerance` everywhere).
"""
from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import onnx

from .errors import OnnxPruneError
from .io.data import Dataset, load_dataset
from .io.export import ExportResult
from .io.export import export as _export
from .io.model import load_model
from .measure import bench as _bench
from .measure.check import CheckResult
from .measure.check import check as _check
from .measure.evaluate import EvalResult
from .measure.evaluate import evaluate as _evaluate
from .stats import Stats

if TYPE_CHECKING:
    from .select.plan import Plan, PruneSettings
    from .workflows.certify import CertifyRun
    from .workflows.compress import CompressResult
    from .workflows.prune import PruneResult
    from .workflows.recover import RecoverResult

ModelLike = str | Path | onnx.ModelProto


def as_model(m: ModelLike) -> onnx.ModelProto:
    return m if isinstance(m, onnx.ModelProto) else load_model(m)


def as_dataset(d: str | Path | Dataset, model: onnx.ModelProto) -> Dataset:
    return d if isinstance(d, Dataset) else load_dataset(d, model)


def evaluate(model: ModelLike, data: str | Path | Dataset, reference: ModelLike | None = None,
             batch_size: int = 256) -> EvalResult:
    """Top-1 accuracy on labelled data, and agreement with `reference` when given."""
    m = as_model(model)
    ref = as_model(reference) if reference is not None else None
    return _evaluate(m, as_dataset(data, m), ref, batch_size)


def export(src: str, out: str | Path, input_shape: tuple[int, ...], weights: str | Path | None = None,
           opset: int = 18, tolerance: float = 1e-4) -> ExportResult:
    """PyTorch factory (file.py:function) + optional state_dict → checked ONNX file."""
    return _export(src, out, input_shape, weights=weights, opset=opset, tolerance=tolerance)


def bench(model: ModelLike, model_b: ModelLike | None = None, threads: str = "both", runs: int = 200,
          warmup: int = 10, seconds: float = 10.0, shapes: dict[str, tuple[int, ...]] | None = None
          ) -> _bench.BenchResult:
    """Latency (batch 1; interleaved A/B ratios for two models), file size, params and MACs."""
    return _bench.benchmark(model, model_b, threads=threads, runs=runs, warmup=warmup, seconds=seconds, shapes=shapes)


def check(pruned: ModelLike, reference: ModelLike, data: str | Path | Dataset, max_drop: float = 0.01,
          batch_size: int = 256) -> CheckResult:
    """Pass/fail: accuracy drop (or, without labels, disagreement) of `pruned` vs `reference` ≤ `max_drop`."""
    m, ref = as_model(pruned), as_model(reference)
    return _check(m, ref, as_dataset(data, m), max_drop, batch_size)


GRID = "0:0.9:0.05"  # the ratios certification tests by default (compress and certify alike)


def _stats(stats: str | Path | Stats | None) -> Stats | None:
    """Saved statistics: a `Stats`, or the .npz `onnxprune stats -o` wrote."""
    return stats if stats is None or isinstance(stats, Stats) else Stats.load(stats)


def _settings(settings: PruneSettings | None, **given) -> PruneSettings:
    """`settings` (or the defaults) with every keyword that was given (not None) replacing its field."""
    from dataclasses import replace

    from .select.plan import PruneSettings

    base = settings or PruneSettings()
    chosen = {k: (tuple(v) if k == "protect" else v) for k, v in given.items() if v is not None}
    return replace(base, **chosen) if chosen else base


def compress(model: str | Path, *, ratio: float | None = None, tolerance: float | None = None,
             mode: Literal["structured", "unstructured"] | None = None, criterion: str | None = None,
             alpha: float | None = None, reconstruct: bool | None = None, protect: Sequence[str] | None = None,
             output: str | Path | None = None, calib: str | Path | None = None, eval_data: str | Path | None = None,
             delta: float = 0.1, grid: str = GRID, fold_bn: bool = False, quantize: Literal["int8"] | None = None,
             ort_format: bool = False, bench: bool = True, bench_runs: int = 200, sweep: bool = False,
             target_macs: float | None = None, target_speedup: float | None = None,
             stats: str | Path | Stats | None = None, recover: int | None = None,
             recover_data: str | Path | None = None, settings: PruneSettings | None = None, loss: str = "auto",
             loss_tau: float | None = None, schedule: Literal["oneshot", "iterative"] | None = None,
             ray: str | None = None, activation_l1: float | None = None) -> CompressResult:
    """Prune, write, evaluate, benchmark: the whole product in one call (`onnxprune compress`).

    model: an .onnx path; the pruned model goes to `output` (default MODEL.pruned.onnx; never over the input).
    ratio: fraction of channels (structured, default) or weights (unstructured) to remove; default 0.5.
    tolerance: instead of a ratio, certify the largest ratio in `grid` whose accuracy loss (or, without labels,
        disagreement) is ≤ tolerance with probability ≥ 1 − delta (Learn-then-Test); the certified model is written.
        `loss` / `loss_tau` choose the certified per-sample loss for other outputs, as in `certify`.
    target_macs / target_speedup: instead of a ratio, the smallest ratio keeping at most that fraction of the dense
        MACs (deterministic), or running that many times faster as measured here (onnxruntime, batch 1, 1 thread).
    mode, criterion, alpha, reconstruct, protect: see `PruneSettings`; criterion "fscreen" (default) is
        α·F-statistic + (1−α)·magnitude with α = 0.2; "taylor" (both modes) is first-order Taylor, |g·w| per weight
        and Σ|g·a| per channel, from one gradient pass in PyTorch (the torch extra); `settings` gives every other
        knob (a given keyword wins).
    calib / eval_data: .npz files; default: the one calib_data/*calib*.npz / *eval*.npz (relative to the current
        directory) whose arrays fit the model input.
    stats: statistics saved by `onnxprune stats` (a path or `Stats`) for this model, reused instead of a new pass.
    recover: epochs of recovery (distillation from the dense model in PyTorch, after the re-fit), on `recover_data`
        (default: the calibration data); with `tolerance`, every candidate is recovered before it is certified.
    schedule: "iterative" prunes in `settings.prune_steps` annealed steps while recovering (paper 001 Alg. 1-2;
        needs `recover` epochs), "oneshot" (default) prunes once, re-fits, then recovers.
    activation_l1: λ of paper 003's pruning-aware training: the recovery loss gets + λ·mean|a| over the outputs of
        the prunable neurons / channels (needs `recover` epochs; with the iterative schedule it shapes what the later
        steps prune). 0 / None: off.
    ray: "auto" / "local" / a cluster address: the statistics pass and, with `tolerance`, every candidate's
        evaluation on the certification split run as Ray tasks over sample ranges (the same results).
    Returns a `CompressResult`: `.summary()` for a few lines, `.to_dict()` for everything, `.rows()` for the table.
    """
    from .workflows.compress import compress as _compress

    if ray is not None:
        from .stats.distributed import ray_module

        ray_module()  # a clear error before any work when Ray is not installed

    s = _settings(settings, ratio=ratio, mode=mode, criterion=criterion, alpha=alpha, reconstruct=reconstruct,
                  protect=protect, recover_epochs=recover, schedule=schedule, activation_l1=activation_l1)
    return _compress(model, output=output, calib=calib, eval_data=eval_data, settings=s, tolerance=tolerance,
                     delta=delta, grid=grid, fold_bn=fold_bn, quantize=quantize, ort_format=ort_format, bench=bench,
                     bench_runs=bench_runs, sweep=sweep, target_macs=target_macs, target_speedup=target_speedup,
                     stats=_stats(stats), recover_data=recover_data, loss=loss, loss_tau=loss_tau, ray=ray)


def certify(model: ModelLike, calib: str | Path | Dataset, *, tolerance: float, delta: float = 0.1,
            grid: str = GRID, mode: Literal["structured", "unstructured"] | None = None,
            criterion: str | None = None, alpha: float | None = None, settings: PruneSettings | None = None,
            cert_data: str | Path | Dataset | None = None, pvalue: Literal["binomial", "hb", "wsr"] | None = None,
            control: Literal["fixed_sequence", "bonferroni"] = "fixed_sequence", cert_fraction: float = 0.5,
            output: str | Path | None = None, loss: str = "auto", loss_tau: float | None = None) -> CertifyRun:
    """Learn-then-Test (`onnxprune certify`): the largest ratio in `grid` whose risk is ≤ `tolerance` with
    probability ≥ 1 − delta.

    `calib` is split (seeded) into a half that builds the candidates and a half that certifies them, unless
    `cert_data` is given (it must share no sample with `calib`). Returns a `CertifyRun`: `.candidate` is the certified
    model and plan (None when nothing certified), `.to_dict()` the whole table; with `output` the certified model
    is written there (nothing certified: an error, nothing written).

    `loss` is the per-sample loss whose mean is certified (`onnxprune.certify.LOSSES`; "auto" fits the output:
    new_error / disagreement for classifiers, positions for score maps, relative error for other outputs) and
    `loss_tau` its threshold τ (cosine, relative); `pvalue` None: binomial for 0/1 losses, hb for bounded ones."""
    from .certify import parse_grid
    from .io.model import save_model
    from .workflows.certify import run

    m = as_model(model)
    s = _settings(settings, mode=mode, criterion=criterion, alpha=alpha)
    result = run(m, as_dataset(calib, m), s, parse_grid(grid), tolerance, delta,
                 cert_data=None if cert_data is None else as_dataset(cert_data, m), cert_fraction=cert_fraction,
                 pvalue=pvalue, control=control, loss=loss, loss_tau=loss_tau)
    if output is not None:
        if not result.prunes:
            raise OnnxPruneError(f"nothing written: {result.nothing_certified()}")
        save_model(result.candidate.model, output, inputs=() if isinstance(model, onnx.ModelProto) else (model,))
    return result


def prune(model: str | Path | onnx.ModelProto, output: str | Path, *, ratio: float | None = None,
          calib: str | Path | Dataset | None = None, mode: Literal["structured", "unstructured"] | None = None,
          criterion: str | None = None, alpha: float | None = None, reconstruct: bool | None = None,
          protect: Sequence[str] | None = None, settings: PruneSettings | None = None,
          plan_out: str | Path | None = None, stats: str | Path | Stats | None = None,
          ray: str | None = None) -> PruneResult:
    """Prune once at `ratio` (`onnxprune prune`): writes the model (never over the input) and, if asked, the plan.
    `ray`: run the statistics pass on Ray (as in `stats`).

    Without `calib`, the one calib_data/*calib*.npz (under the current directory) that fits the model is used, as
    `compress` does; with none, only data-free criteria work (magnitude, l1/l2, bn) and no least-squares re-fit is
    made (the report says so). Returns a `PruneResult` (model, plan, report; `.summary()`, `.to_dict()`)."""
    from .io.model import check_writable, save_model
    from .workflows.prune import prune as _prune

    s = _settings(settings, ratio=ratio, mode=mode, criterion=criterion, alpha=alpha, reconstruct=reconstruct,
                  protect=protect)
    inputs = () if isinstance(model, onnx.ModelProto) else (model,)
    check_writable(output, inputs=inputs)  # before any work
    if plan_out:
        check_writable(plan_out, inputs=inputs, what="plan")
    if ray is not None:
        from .stats.distributed import ray_module

        ray_module()  # a clear error before any work when Ray is not installed
    m = as_model(model)
    r = _prune(m, None if calib is None else as_dataset(calib, m), s, _stats(stats), ray=ray)
    save_model(r.model, output, inputs=() if isinstance(model, onnx.ModelProto) else (model,))
    if plan_out:
        r.plan.save(plan_out)
    return r


def recover(pruned: ModelLike, reference: ModelLike, data: str | Path | Dataset, output: str | Path, *,
            epochs: int = 10, seconds: float | None = None, labels: bool = False, augment: bool | None = None,
            seed: int = 0, batch_size: int = 64, activation_l1: float = 0.0, workers: int = 1) -> RecoverResult:
    """Recover accuracy (`onnxprune recover`): train `pruned`'s initializers in PyTorch to agree with `reference`
    (the dense model) on `data` — label-free distillation, plus cross-entropy with `labels` — and write the same
    graph with the trained values to `output` (unstructured zeros stay zero; BatchNorm statistics re-estimated).
    `activation_l1` > 0 adds paper 003's pruning-aware L1 penalty λ·mean|a| on the prunable neurons' outputs (with
    `reference` = `pruned` = the dense model: train it to be pruned, then prune). Deterministic for a seed and
    thread count. `workers` > 1: data-parallel (DDP) on that many local processes, the same training step for step
    up to float rounding; inside a torchrun / Ray Train process group every process trains its share and only
    rank 0 writes (docs/ARCHITECTURE.md, "Recovery on several processes"). Needs the torch extra."""
    from .io.model import save_model
    from .workflows.recover import RecoverResult, recover_model

    m, ref = as_model(pruned), as_model(reference)
    model, report = recover_model(m, ref, as_dataset(data, m), epochs=epochs, seconds=seconds, labels=labels,
                                  augment=augment, seed=seed, batch_size=batch_size, activation_l1=activation_l1,
                                  workers=workers, group=True)
    result = RecoverResult(model, report, Path(output))
    if result.written:  # data-parallel: rank 0 only
        save_model(model, output, inputs=tuple(x for x in (pruned, reference) if not isinstance(x, onnx.ModelProto)))
    return result


def apply(model: str | Path | onnx.ModelProto, plan: str | Path | Plan, output: str | Path,
          calib: str | Path | Dataset | None = None) -> PruneResult:
    """Re-apply a saved plan (path or Plan) to the model it was made for; re-fits with `calib` when the plan was
    made with reconstruction. Same inputs → byte-identical output."""
    from .io.model import check_writable, save_model
    from .select.plan import Plan
    from .workflows.prune import replay

    check_writable(output, inputs=() if isinstance(model, onnx.ModelProto) else (model,))  # before any work
    m = as_model(model)
    p = plan if isinstance(plan, Plan) else Plan.load(plan)
    r = replay(m, p, None if calib is None else as_dataset(calib, m))
    save_model(r.model, output, inputs=() if isinstance(model, onnx.ModelProto) else (model,))
    return r


def _channel_requests(model: onnx.ModelProto, criteria) -> list:
    """What structured pruning asks of the same criteria (the tensors its channel groups' consumers read), so that
    saved statistics serve `prune --stats` in either mode."""
    from .criteria.needs import parse_criteria
    from .modes import get
    from .select.plan import PruneSettings

    wanted = parse_criteria(criteria) & {"fscreen", "apoz", "ri"}
    try:
        return [r for c in sorted(wanted) for r in get("structured").requests(model, PruneSettings(criterion=c))]
    except OnnxPruneError:  # no channel groups in this model: the weight-level requests are all there is
        return []


def stats(model: ModelLike, calib: str | Path | Dataset, output: str | Path | None = None,
          criteria: str | list[str] | tuple[str, ...] = ("fscreen",), batch_size: int = 256,
          labels: str = "auto", ray: str | None = None, shards: int | None = None) -> Stats:
    """One streaming onnxruntime pass → finalized activation statistics for `criteria` (saved to `output` if given).

    criteria ⊆ {fscreen, apoz, wanda, ri, gram, all}; labels: auto (y if present, else the model's predictions),
    true, or predicted (label-free mode, recorded in `Stats.label_mode`).
    ray: "auto" / "local" / a cluster address: the pass runs as Ray tasks over `shards` sample ranges (default: one
    per cluster CPU) and their accumulators are merged — equal to the single-process result (stats/distributed.py).
    """
    from .criteria.needs import default_requests
    from .stats import collect

    if ray is not None:
        from .stats.distributed import ray_module

        ray_module()  # a clear error before any work when Ray is not installed
    if output is not None:
        from .io.model import check_writable

        check_writable(output, what="statistics file")  # before any work
    m = as_model(model)
    data = as_dataset(calib, m)
    reqs = default_requests(m, criteria) + _channel_requests(m, criteria)
    if not reqs:
        raise OnnxPruneError("the model has no Gemm, MatMul (constant weight) or Conv layers to collect statistics for")
    if ray is None:
        st = collect(m, data, reqs, batch_size=batch_size, labels=labels)
    else:
        from .stats.distributed import collect_sharded, default_shards, ray_runner

        st = collect_sharded(m, data, reqs, shards=shards or default_shards(ray), batch_size=batch_size,
                             labels=labels, runner=ray_runner(ray))
    names = criteria.replace(",", " ").split() if isinstance(criteria, str) else criteria
    st.meta["criteria"] = sorted(set(names))
    st.meta["calib"] = str(calib) if not isinstance(calib, Dataset) else (calib.source or "<dataset>")
    if output is not None:
        st.save(output)
    return st
