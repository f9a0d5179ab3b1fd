"""`onnxprune eval`: top-1 accuracy, and agreement with a reference model."""
from __future__ import annotations

import click

from ._common import batch_option, emit_json, json_option


@click.command("eval")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", required=True, type=click.Path(),
              help=".npz with x (and y for accuracy), a folder of .npz shards / .npy files, or an image folder "
                   "(class sub-folders = labels).")
@click.option("--reference", type=click.Path(dir_okay=False), help="Dense model to measure agreement against.")
@batch_option
@json_option
def eval_cmd(model: str, data: str, reference: str | None, batch_size: int, as_json: bool) -> None:
    """Top-1 accuracy of MODEL on DATA (and agreement with --reference)."""
    from .. import api
    from ..report import print_table

    r = api.evaluate(model, data, reference=reference, batch_size=batch_size)
    if as_json:
        emit_json({"model": model, "data": data, **r.to_dict()})
        return
    rows = [["samples", r.n], ["accuracy", r.accuracy]]
    if reference:
        rows.append(["agreement with reference" + (" (per position)" if r.kind == "dense" else ""), r.agreement])
        if r.kind != "classes":
            rows += [["output cosine with reference", r.cosine], ["output relative error", r.rel_error]]
    print_table(f"{model} on {data}", ["metric", "value"], rows)
    if r.note:
        click.echo(f"note: {r.note}", err=True)
