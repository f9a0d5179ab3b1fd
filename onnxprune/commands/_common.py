"""Helpers shared by the CLI commands: output formatting and common options."""
from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def emit_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, sort_keys=True, default=_jsonable))


def _jsonable(o: Any) -> Any:
    import numpy as np
    from pathlib import Path

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    console.print(title, highlight=False)
    t = Table()
    for c in columns:
        t.add_column(c, justify="right" if c != columns[0] else "left")
    for r in rows:
        t.add_row(*[fmt(v) for v in r])
    console.print(t)


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def info(msg: str) -> None:
    """Status lines go to stderr so stdout stays clean for --json."""
    err_console.print(msg, highlight=False)


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
batch_option = click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1),
                            help="Samples per onnxruntime call.")


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()
