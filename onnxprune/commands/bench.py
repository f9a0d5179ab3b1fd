"""`onnxprune bench`: batch-1 latency (interleaved A/B ratio for two models), size, params and MACs."""
from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..measure.bench import BenchResult

from ._common import emit_json, json_option

_THREAD_LABEL = {"1": "1 thread", "default": "default threads"}


@click.command("bench")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("model_b", required=False, type=click.Path(dir_okay=False))
@click.option("--threads", type=click.Choice(["1", "default", "both"]), default="both", show_default=True,
              help="1 = edge setting (one intra-op thread, sequential); default = onnxruntime's choice.")
@click.option("--runs", default=200, show_default=True, type=click.IntRange(1),
              help="Timed runs per model (stops earlier once --seconds have passed).")
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(0), help="Untimed runs first.")
@click.option("--seconds", default=10.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Time limit of the timed phase per thread setting.")
@click.option("--shape", "shapes", multiple=True, metavar="[NAME=]D,D,...",
              help="Fixed input shape for inputs with dynamic dims other than the batch axis (repeatable).")
@json_option
def bench_cmd(model: str, model_b: str | None, threads: str, runs: int, warmup: int, seconds: float,
              shapes: tuple[str, ...], as_json: bool) -> None:
    """Benchmark MODEL, or compare MODEL (A) with MODEL_B (B) run by run in one process."""
    from .. import api
    from ..measure.bench import parse_shapes

    r = api.bench(model, model_b, threads=threads, runs=runs, warmup=warmup, seconds=seconds,
                  shapes=parse_shapes(shapes))
    if as_json:
        emit_json(r.to_dict())
        return
    _print(r)


def _print(r: BenchResult) -> None:
    from ..report import print_table

    two = len(r.models) == 2
    if two:
        click.echo(f"A = {r.models[0].name}\nB = {r.models[1].name}")
    cols = ["", "A", "B", "B/A"] if two else ["", r.models[0].name]
    rows: list[list] = []
    for label, attr in (("file size (bytes)", "size_bytes"), ("zlib size (bytes)", "compressed_bytes"),
                        ("params", "params"), ("MACs", "macs")):
        vals = [getattr(m, attr) for m in r.models]
        rows.append([label, *vals] + ([vals[1] / vals[0] if vals[0] else None] if two else []))
    for t, stats in r.latency.items():
        for p in ("p50", "p90", "p99"):
            vals = [getattr(s, f"{p}_ms") for s in stats]
            ratio = [r.comparisons[t].b_over_a if p == "p50" else None] if two else []
            rows.append([f"{p} ms, {_THREAD_LABEL[t]}", *vals, *ratio])
    shape = "; ".join(f"{k} {tuple(v)}" for k, v in r.shapes.items())
    runs = "/".join(dict.fromkeys(str(stats[0].runs) for stats in r.latency.values()))
    print_table(f"batch 1, {shape}: {r.warmup} warm-ups, {runs} timed runs, ORT_ENABLE_ALL", cols, rows)
    for m in r.models:
        if m.macs_unknown:
            click.echo(f"{m.name}: MACs are a lower bound "
                       f"({m.macs_unknown} nodes have shapes that could not be inferred)")
    for t, c in r.comparisons.items():
        click.echo(f"{_THREAD_LABEL[t]}: B/A latency {c.b_over_a:.3f}, speed-up of B over A {c.a_over_b:.3f}x "
                   f"(medians of {c.a.runs} interleaved per-pair ratios)")
