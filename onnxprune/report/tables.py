"""The numbers a user reads after `compress`, as data: before/after rows, the report dict, and its Markdown.

`summary_rows` is the single source of the before/after numbers; the terminal table, report.md and report.json
are all rendered from it, so they can never disagree.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..workflows.compress import CompressResult

REPORT_KEYS = ("input", "output", "mode", "settings", "calibration_data", "evaluation_data", "label_mode", "summary",
               "kept", "skipped", "certification", "sweep", "benchmark", "extras", "notes")


def summary_rows(r: CompressResult) -> list[dict]:
    """metric, before, after, ratio (after/before, or before/after for latency = speed-up)."""
    rows: list[dict] = []
    if r.infos:
        a, b = r.infos
        rows += [_row("params", a.params, b.params), _row("MACs", a.macs, b.macs),
                 _row("file size (bytes)", a.size_bytes, b.size_bytes),
                 _row("file size zlib (bytes)", a.compressed_bytes, b.compressed_bytes)]
    if r.dense_eval.accuracy is not None:
        rows.append({"metric": f"accuracy ({r.pruned_eval.n} samples)", "before": r.dense_eval.accuracy,
                     "after": r.pruned_eval.accuracy, "ratio": None,
                     "change": r.pruned_eval.accuracy - r.dense_eval.accuracy})
    rows.append({"metric": "agreement with dense", "before": 1.0, "after": r.pruned_eval.agreement, "ratio": None,
                 "change": r.pruned_eval.agreement - 1.0})
    return rows + _latency_rows(r)


def _latency_rows(r: CompressResult) -> list[dict]:
    """p50 latency before/after per thread setting, with the interleaved speed-up."""
    if r.bench is None:
        return []
    rows = []
    for t, label in (("1", "1 thread"), ("default", "default threads")):
        if t in r.bench.comparisons:
            c = r.bench.comparisons[t]
            rows.append({"metric": f"latency p50 ms, {label}", "before": c.a.p50_ms, "after": c.b.p50_ms,
                         "ratio": c.b_over_a, "speedup": c.a_over_b})
    return rows


def _row(metric: str, before: float, after: float) -> dict:
    return {"metric": metric, "before": before, "after": after, "ratio": after / before if before else None}


def to_dict(r: CompressResult) -> dict:
    """report.json and `compress --json`: every key of REPORT_KEYS, in that order."""
    d = {
        "input": str(r.input), "output": str(r.output), "mode": r.settings.mode, "settings": r.settings.to_dict(),
        "calibration_data": r.calib, "evaluation_data": r.eval_data, "label_mode": r.label_mode,
        "summary": summary_rows(r),
        "kept": {k: {"kept": v[0], "total": v[1]} for k, v in r.kept.items()},
        "skipped": [{"group": g, "reason": why} for g, why in r.skipped],
        "certification": None if r.certification is None else r.certification.to_dict(),
        "sweep": r.sweep,
        "benchmark": None if r.bench is None else r.bench.to_dict(),
        "extras": {k: str(v) for k, v in r.extras.items()},
        "notes": r.notes,
    }
    for k, e in r.extra_evals.items():
        d["extras"][f"{k}_eval"] = e.to_dict()
    assert tuple(d) == REPORT_KEYS
    return d


def certification_rows(c: dict) -> list[dict]:
    """One row per grid ratio of a certification dict; `verdict` is "yes", "" or "not tested"."""
    tested = c.get("tested", [True] * len(c["grid"]))
    return [{"ratio": g, "label": ratio_label(g), "risk": rk, "p_value": p,
             "verdict": ("yes" if ok else "") if t else "not tested"}
            for g, rk, p, ok, t in zip(c["grid"], c["empirical_risk"], c["pvalues"], c["certified"], tested)]


def ratio_label(r: float) -> str:
    """Two decimals for the usual grids (0.05 steps), every digit a finer grid needs (0.995 is not 0.99)."""
    return f"{r:.2f}" if abs(r * 100 - round(r * 100)) < 1e-9 else f"{r:g}"


def markdown(d: dict, pngs: list[str]) -> str:
    """report.md from the report dict (and the names of the PNGs beside it)."""
    lines = [f"# onnxprune report: {d['input']}", "",
             f"- output: `{d['output']}` ({d['mode']}, criterion `{d['settings']['criterion']}`, "
             f"ratio {d['settings']['ratio']})",
             f"- calibration data: `{d['calibration_data']}`; evaluation data: `{d['evaluation_data']}`; "
             f"labels: {d['label_mode'] or 'not used'}", ""]
    lines += ["| metric | before | after | after/before |", "|---|---:|---:|---:|"]
    lines += [f"| {x['metric']} | {_f(x['before'])} | {_f(x['after'])} | {_last(x)} |" for x in d["summary"]]
    if d["certification"]:
        lines += _certification_md(d["certification"])
    if d["skipped"]:
        lines += ["", "## Left alone", ""] + [f"- `{s['group']}`: {s['reason']}" for s in d["skipped"]]
    if d["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in d["notes"]]
    lines += [""] + [f"![{p}]({p})" for p in pngs] + [""]
    return "\n".join(lines)


def _certification_md(c: dict) -> list[str]:
    lines = ["", "## Certification (Learn-then-Test)", "", c["message"], "",
             "| ratio | risk | p-value | certified |", "|---:|---:|---:|:---:|"]
    return lines + [f"| {x['label']} | {_f4(x['risk'])} | {_f4(x['p_value'])} | {x['verdict']} |"
                    for x in certification_rows(c)]


def _last(x: dict) -> str:
    """The after/before column: speed-up for latency, ratio for sizes, change for accuracy."""
    if "speedup" in x:
        return f"{x['speedup']:.2f}× faster"
    return f"{x['ratio']:.3f}" if x.get("ratio") is not None else f"{x['change']:+.4f}"


def _f(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.0f}"
    return f"{v:,}"


def _f4(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"
