"""`onnxprune export`: PyTorch factory + weights → verified ONNX."""
from __future__ import annotations

import click

from ._common import emit_json, json_option


@click.command("export")
@click.argument("src")
@click.option("--weights", type=click.Path(dir_okay=False), help="state_dict saved with torch.save.")
@click.option("--input-shape", required=True, help="Example input shape, batch first, e.g. 1,3,32,32.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .onnx path.")
@click.option("--opset", default=18, show_default=True, type=int, help="ONNX opset to export with.")
@click.option("--tolerance", default=1e-4, show_default=True, type=float,
              help="Max abs torch-vs-onnxruntime difference, relative to max(1, |output|).")
@json_option
def export_cmd(src: str, weights: str | None, input_shape: str, output: str, opset: int, tolerance: float,
               as_json: bool) -> None:
    """Export SRC (file.py:factory) to ONNX with a dynamic batch axis and check it against onnxruntime."""
    from .. import api
    from ..io.export import parse_shape

    r = api.export(src, output, parse_shape(input_shape), weights=weights, opset=opset, tolerance=tolerance)
    if as_json:
        emit_json({"output": str(r.path), "max_abs_diff": r.max_abs_diff, "tolerance": r.tolerance, "opset": r.opset})
    else:
        click.echo(f"wrote {r.path} (opset {r.opset}); torch vs onnxruntime max abs diff {r.max_abs_diff:.3g} "
                   f"(tolerance {r.tolerance:.3g})")
