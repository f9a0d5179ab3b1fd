"""Terminal rendering: number formatting, rich tables, status lines, and the `compress` summary.

Status lines go to stderr so stdout stays clean for --json.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from ..progress import said


if TYPE_CHECKING:
    from ..workflows.compress import CompressResult

console = Console()
err_console = Console(stderr=True)


def fmt(v: Any) -> str:
    """A table cell: '-' for None, 4 decimals for small floats, thousands separators for large numbers."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A titled table on stdout; the first column left-aligned, the others right-aligned."""
    console.print(title, highlight=False)
    t = Table()
    for c in columns:
        t.add_column(c, justify="right" if c != columns[0] else "left")
    for r in rows:
        t.add_row(*[fmt(v) for v in r])
    console.print(t)


def info(msg: str) -> None:
    """A status line on stderr."""
    err_console.print(msg, highlight=False)


def print_summary(r: CompressResult) -> None:
    """Notes, what was left alone, and the before/after table of a `compress` run."""
    for n in r.notes:
        if f"note: {n}" not in said():  # notes printed as they were decided are not repeated
            info(f"note: {n}")
    if r.skipped:
        info(f"left alone: {len(r.skipped)} group(s) — " + "; ".join(why if why == g else f"{g}: {why}"
                                                                      for g, why in r.skipped[:5])
             + (" …" if len(r.skipped) > 5 else ""))
    rows = [[x["metric"], x["before"], x["after"], x["ratio"], _change(x.get("change"))] for x in r.rows()]
    for k, e in r.extra_evals.items():
        agree = "" if e.agreement is None else f" (agreement {e.agreement:.4f})"
        both = None not in (r.dense_eval.accuracy, e.accuracy)
        rows.append([f"{k} model accuracy{agree}", r.dense_eval.accuracy, e.accuracy, None,
                     _change(e.accuracy - r.dense_eval.accuracy if both else None)])
    print_table(f"{r.input} → {r.output} ({r.settings.mode}, criterion {r.settings.criterion}, "
                f"ratio {r.plan.settings['ratio']:.2f})", ["", "before", "after", "after/before", "change"], rows)


def _change(v: float | None) -> str:
    return "" if v is None else f"{v:+.4f}"
