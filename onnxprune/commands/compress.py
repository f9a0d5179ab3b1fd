"""`onnxprune compress`: prune, validate, evaluate, benchmark and report in one command."""
from __future__ import annotations

import click

from .. import api
from ..report import info
from ._common import emit_json, json_option, pruning_options


@click.command("compress")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Default: MODEL.pruned.onnx beside the input.")
@click.option("--calib", type=click.Path(dir_okay=False),
              help="Calibration .npz. Default: the one calib_data/*calib*.npz that fits the model input.")
@click.option("--eval", "eval_data", type=click.Path(dir_okay=False),
              help="Evaluation .npz. Default: the one calib_data/*eval*.npz that fits; else the calibration data.")
@click.option("--ratio", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Fraction of channels (structured) or weights (unstructured) to remove. [default: 0.5]")
@click.option("--tolerance", type=click.FloatRange(0, 1, min_open=True),
              help="Instead of --ratio: certify the largest ratio whose accuracy loss ≤ ε with prob. ≥ 1-δ (LTT).")
@click.option("--delta", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1, show_default=True)
@click.option("--grid", default="0:0.9:0.05", show_default=True, help="Ratios tested by --tolerance (start:stop:step).")
@pruning_options
@click.option("--fold-bn", is_flag=True, help="Fold BatchNorm into the preceding Conv (deployment).")
@click.option("--quantize", type=click.Choice(["int8"]), help="Also write a static int8 (QDQ) model.")
@click.option("--ort-format", is_flag=True, help="Also write the model in onnxruntime's ORT format.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Write report.md/json and PNGs here.")
@click.option("--plan-out", type=click.Path(dir_okay=False), help="Save the pruning plan (JSON) for `apply`.")
@click.option("--no-bench", is_flag=True, help="Skip the latency benchmark.")
@click.option("--bench-runs", default=200, show_default=True, type=click.IntRange(1))
@json_option
def compress_cmd(model, output, calib, eval_data, ratio, tolerance, delta, grid, settings, fold_bn, quantize,
                 ort_format, report_dir, plan_out, no_bench, bench_runs, as_json) -> None:
    """Prune MODEL and report params, MACs, size, accuracy and latency before and after."""
    if ratio is not None and tolerance is not None:
        raise click.UsageError("give either --ratio or --tolerance, not both")
    r = api.compress(model, output=output, calib=calib, eval_data=eval_data, settings=settings, tolerance=tolerance,
                     delta=delta, grid=grid, fold_bn=fold_bn, quantize=quantize, ort_format=ort_format,
                     bench=not no_bench, bench_runs=bench_runs, sweep=report_dir is not None)
    from .. import report

    if plan_out:
        r.plan.save(plan_out)
    if report_dir:
        files = report.write(r, report_dir)
        info(f"report: {', '.join(str(f) for f in files)}")
    if as_json:
        emit_json(report.to_dict(r))
    else:
        report.print_summary(r)
        click.echo(f"wrote {r.output}" + "".join(f", {p}" for p in r.extras.values()))
