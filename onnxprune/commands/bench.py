"""`onnxprune bench`: batch-1 latency (interleaved A/B ratio for two models), size, params and MACs."""
from __future__ import annotations

import click

from .. import api
from ..bench import BenchResult, parse_shapes
from ._common import emit_json, json_option, print_table

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
    r = api.bench(model, model_b, threads=threads, runs=runs, warmup=warmup, seconds=seconds,
                  shapes=parse_shapes(shapes))
    if as_json:
        emit_json(r.to_dict())
        return
    _print(r)


def _print(r: BenchResult) -> None:
    two = len(r.models) == 2
    cols = ["", *(f"{ab}{m.name}" for ab, m in zip(("A: ", "B: ") if two else ("",), r.models))]
    cols += ["B/A"] if two else []
    rows: list[list] = []
    for label, attr in (("file size (bytes)", "size_bytes"), ("zlib size (bytes)", "compressed_bytes"),
                        ("params", "params"), ("MACs (batch 1)", "macs")):
        vals = [getattr(m, attr) for m in r.models]
        rows.append([label, *vals] + ([vals[1] / vals[0] if vals[0] else None] if two else []))
    for t, stats in r.latency.items():
        for p in ("p50", "p90", "p99"):
            vals = [getattr(s, f"{p}_ms") for s in stats]
            ratio = [r.comparisons[t].b_over_a if p == "p50" else None] if two else []
            rows.append([f"{p} ms, {_THREAD_LABEL[t]}", *vals, *ratio])
    shape = "; ".join(f"{k} {tuple(v)}" for k, v in r.shapes.items())
    runs = "/".join(str(s.runs) for stats in r.latency.values() for s in stats[:1])
    print_table(f"batch 1, {shape}, ORT_ENABLE_ALL, {r.warmup} warm-ups, {runs} timed runs", cols, rows)
    for t, c in r.comparisons.items():
        click.echo(f"{_THREAD_LABEL[t]}: B takes {c.b_over_a:.3f}× A's time; speed-up A/B {c.a_over_b:.3f}× "
                   f"(median of {c.a.runs} interleaved pairs)")
