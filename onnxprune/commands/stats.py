"""`onnxprune stats`: one onnxruntime pass over calibration data → activation statistics (.npz) for later commands."""
from __future__ import annotations

import click

from ._common import batch_option, emit_json, json_option


@click.command("stats")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--calib", required=True, type=click.Path(),
              help=".npz with x (and optional y), a folder of .npz shards / .npy files, or an image folder.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output statistics .npz.")
@click.option("--criteria", default="fscreen", show_default=True,
              help="Comma-separated criteria to collect for: fscreen, apoz, wanda, ri, gram, all.")
@click.option("--labels", type=click.Choice(["auto", "true", "predicted"]), default="auto", show_default=True,
              help="auto: y if the data has it, else the model's predictions (label-free mode).")
@click.option("--ray", "ray_address", metavar="auto|local|ADDRESS",
              help="Run the pass as Ray tasks over sample shards and merge them (same result): auto joins the running "
                   "cluster or starts a local one, local starts one, or a cluster address. Needs onnxprune[ray].")
@click.option("--shards", type=click.IntRange(min=1), help="Sample ranges for --ray (default: one per cluster CPU).")
@batch_option
@json_option
def stats_cmd(model: str, calib: str, output: str, criteria: str, labels: str, ray_address: str | None,
              shards: int | None, batch_size: int, as_json: bool) -> None:
    """Collect the activation statistics that CRITERIA need for MODEL in one streaming pass over --calib."""
    from .. import api
    from ..report import info, print_table

    st = api.stats(model, calib, output, criteria=criteria, batch_size=batch_size, labels=labels, ray=ray_address,
                   shards=shards)
    summary = {"model": model, "calib": calib, "output": output, **st.summary()}
    if as_json:
        emit_json(summary)
        return
    if st.label_mode == "predicted":
        info("label-free mode: classes are the dense model's own predictions (the data has no 'y' or "
             "--labels predicted was given)")
    print_table(f"statistics of {model} on {calib} → {output}", ["item", "value"],
                [["samples", st.n], ["labels", st.label_mode],
                 *([["shards (Ray)", st.meta["shards"]]] if "shards" in st.meta else []),
                 ["criteria", ", ".join(summary.get("criteria", []))],
                 ["tensors / layers", summary["tensors"]], ["arrays", summary["arrays"]],
                 ["size (MB)", summary["bytes"] / 1e6], ["model hash", st.model_hash]])
