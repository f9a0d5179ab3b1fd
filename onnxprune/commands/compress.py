"""`onnxprune compress`: prune, validate, evaluate, benchmark and report in one command."""
from __future__ import annotations

import click

from ._common import (DEFAULT_GRID, delta_option, emit_json, json_option, loss_option, loss_tau_option,
                      pruning_options)


@click.command("compress")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Default: MODEL.pruned.onnx beside the input.")
@click.option("--calib", type=click.Path(),
              help="Calibration .npz (or a folder: shards, .npy, images). Default: the one calib_data/*calib*.npz "
                   "that fits the model input.")
@click.option("--eval", "eval_data", type=click.Path(),
              help="Evaluation .npz. Default: the one calib_data/*eval*.npz that fits; else the calibration data.")
@click.option("--ratio", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Fraction of channels (structured) or weights (unstructured) to remove. [default: 0.5]")
@click.option("--tolerance", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Instead of --ratio: certify the largest ratio whose accuracy loss (the mean of --loss) ≤ ε with "
                   "prob. ≥ 1-δ (LTT).")
@click.option("--target-macs", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Instead of --ratio: keep at most this fraction of the dense MACs (e.g. 0.5 = half); structured.")
@click.option("--target-speedup", type=click.FloatRange(1, min_open=True),
              help="Instead of --ratio: run this many times faster, measured here in onnxruntime (batch 1, one "
                   "thread); structured. Speed-ups are machine-dependent.")
@delta_option
@loss_option
@loss_tau_option
@click.option("--grid", default=DEFAULT_GRID, show_default=True,
              help="Ratios tested by --tolerance (start:stop:step or r1,r2,...).")
@click.option("--recover-data", type=click.Path(exists=False),
              help="Data recovery trains on (e.g. your training set, .npz); default: the calibration data.")
@click.option("--stats", "stats_file", type=click.Path(dir_okay=False),
              help="Reuse statistics saved by `onnxprune stats -o` for this model instead of a new pass.")
@pruning_options
@click.option("--fold-bn", is_flag=True, help="Fold BatchNorm into the preceding Conv (deployment).")
@click.option("--quantize", type=click.Choice(["int8"]), help="Also write a static int8 (QDQ) model.")
@click.option("--ort-format", is_flag=True, help="Also write the model in onnxruntime's ORT format.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Write report.md/json and PNGs here.")
@click.option("--plan-out", type=click.Path(dir_okay=False), help="Save the pruning plan (JSON) for `apply`.")
@click.option("--ray", "ray_address", metavar="auto|local|ADDRESS",
              help="Run the statistics pass and, with --tolerance, each candidate's certification evaluation as Ray "
                   "tasks over sample ranges (as `onnxprune stats --ray`; same results). Needs onnxprune[ray].")
@click.option("--no-bench", is_flag=True, help="Skip the latency benchmark.")
@click.option("--bench-runs", default=200, show_default=True, type=click.IntRange(1),
              help="Timed runs per model and thread setting (at most 10 s each).")
@json_option
def compress_cmd(model, output, calib, eval_data, ratio, tolerance, target_macs, target_speedup, delta, loss, loss_tau,
                 grid,
                 recover_data, stats_file, settings, fold_bn, quantize, ort_format, report_dir, plan_out, ray_address,
                 no_bench, bench_runs, as_json) -> None:
    """Prune MODEL and report params, MACs, size, accuracy and latency before and after."""
    from .. import api
    from ..report import info

    if sum(x is not None for x in (ratio, tolerance, target_macs, target_speedup)) > 1:
        raise click.UsageError("give one of --ratio, --tolerance, --target-macs and --target-speedup")
    from ..io.model import check_writable  # every output location is checked before any work

    if plan_out:
        check_writable(plan_out, inputs=(model,), what="plan")
    if report_dir:
        check_writable(f"{report_dir}/report.md", inputs=(model,), what="report")
    r = api.compress(model, output=output, calib=calib, eval_data=eval_data, settings=settings, tolerance=tolerance,
                     delta=delta, grid=grid, fold_bn=fold_bn, quantize=quantize, ort_format=ort_format,
                     bench=not no_bench, bench_runs=bench_runs, sweep=report_dir is not None,
                     target_macs=target_macs, target_speedup=target_speedup, stats=stats_file,
                     recover_data=recover_data, loss=loss, loss_tau=loss_tau, ray=ray_address)
    from .. import report

    if plan_out:
        r.plan.save(plan_out)
    if report_dir:
        files = report.write(r, report_dir)
        info(f"report: {', '.join(str(f) for f in files)}")
    if as_json:
        emit_json(r.to_dict())
    else:
        report.print_summary(r)
        click.echo(f"wrote {r.output}" + "".join(f", {p}" for p in r.extras.values()))
