"""`onnxprune prune`: one pruning run at a fixed ratio; writes the model, optionally the plan, and prints the
per-layer table with file sizes."""
from __future__ import annotations

import click

from ._common import emit_json, json_option, pruning_options


@click.command("prune")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Pruned .onnx path.")
@click.option("--calib", type=click.Path(),
              help="Calibration .npz or folder (statistics, re-fit). Default: the one calib_data/*calib*.npz that "
                   "fits.")
@click.option("--ratio", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
              help="Fraction of the prunable channels (or, unstructured, weights) to remove.")
@click.option("--stats", "stats_file", type=click.Path(dir_okay=False),
              help="Reuse statistics saved by `onnxprune stats -o` for this model instead of a new pass.")
@pruning_options
@click.option("--plan-out", type=click.Path(dir_okay=False), help="Save every mask decision (JSON) for `apply`.")
@click.option("--ray", "ray_address", metavar="auto|local|ADDRESS",
              help="Run the statistics pass as Ray tasks over sample shards (as `onnxprune stats --ray`).")
@json_option
def prune_cmd(model: str, output: str, calib: str | None, ratio: float, stats_file: str | None, settings,
              plan_out: str | None, ray_address: str | None, as_json: bool) -> None:
    """Prune MODEL once at --ratio (channels, or weights with --mode unstructured) and write the result to -o."""
    from .. import api

    r = api.prune(model, output, calib=calib, settings=settings, plan_out=plan_out, stats=stats_file, ray=ray_address)
    show(r.report, output, plan_out, as_json)


def show(report: dict, output: str, plan_out: str | None, as_json: bool) -> None:
    """The per-layer table, sizes and notes (or all of it as JSON)."""
    from ..progress import said
    from ..report import info, print_table

    if as_json:
        emit_json({"output": output, "plan": plan_out, **report})
        return
    rows = [[r["layer"] + (" (protected)" if r["protected"] else ""), r["weights"], r["kept"], f"{r['sparsity']:.2%}",
             "×".join(map(str, r["shape"])) + ("" if r["shape"] == r["pruned_shape"] else
                                               " → " + "×".join(map(str, r["pruned_shape"])))]
            for r in report["layers"]]
    unit = report.get("unit", "weights")
    rows.append(["total (pruned layers)", report["weights"], report["kept"], f"{report['sparsity']:.2%}", ""])
    print_table(f"{report['criterion']} at ratio {report['ratio']}",
                ["layer" if unit == "weights" else "channel group", unit, "kept", "removed", "shape"], rows)
    if "macs" in report:
        p, m = report["params"], report["macs"]
        click.echo(f"params {p['dense']:,} → {p['pruned']:,}; MACs {m['dense']:,} → {m['pruned']:,}")
    s = report["size"]
    click.echo(f"file size: raw {s['dense_raw']:,} → {s['pruned_raw']:,} bytes; "
               f"zlib-compressed {s['dense_zlib']:,} → {s['pruned_zlib']:,} bytes"
               + (" (sampled estimate)" if s.get("zlib_estimated") else ""))
    for n in report["notes"]:
        if f"note: {n}" not in said():  # already printed when it was decided
            info(f"note: {n}")
    click.echo(f"wrote {output}" + (f", plan {plan_out}" if plan_out else ""))
