"""`onnxprune check`: a CI gate — exit 0 if the pruned model is within --max-drop of the reference, else 1."""
from __future__ import annotations

import sys

import click

from ._common import batch_option, emit_json, json_option


@click.command("check")
@click.argument("pruned", type=click.Path(dir_okay=False))
@click.option("--reference", required=True, type=click.Path(dir_okay=False), help="The dense model.")
@click.option("--data", required=True, type=click.Path(),
              help=".npz with x (and y: without labels, disagreement with the reference is checked), a folder of .npz "
                   "shards / .npy files, or an image folder.")
@click.option("--max-drop", default=0.01, show_default=True, type=click.FloatRange(0, 1),
              help="Largest allowed accuracy drop (or disagreement rate without labels).")
@batch_option
@json_option
def check_cmd(pruned: str, reference: str, data: str, max_drop: float, batch_size: int, as_json: bool) -> None:
    """Exit 0 if PRUNED loses at most --max-drop accuracy against --reference on --data, 1 if it loses more."""
    from .. import api

    r = api.check(pruned, reference, data, max_drop=max_drop, batch_size=batch_size)
    if as_json:
        emit_json({"pruned": pruned, "reference": reference, "data": data, **r.to_dict()})
    else:
        click.echo(r.verdict())
    sys.exit(0 if r.passed else 1)
