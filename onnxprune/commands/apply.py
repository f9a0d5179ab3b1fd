"""`onnxprune apply`: re-apply a saved plan to the model it was made for (byte-identical to the original run)."""
from __future__ import annotations

import click

from ._common import json_option
from .prune import show


@click.command("apply")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Pruned .onnx path.")
@click.option("--calib", type=click.Path(),
              help="Needed when the plan was made with --reconstruct: the same calibration data, to re-fit.")
@json_option
def apply_cmd(model: str, plan: str, output: str, calib: str | None, as_json: bool) -> None:
    """Apply PLAN (from `prune --plan-out`) to MODEL and write the result to -o."""
    from .. import api

    r = api.apply(model, plan, output, calib=calib)
    show(r.report, output, None, as_json)
