"""report.md and the certification table, rendered from the report dict (`CompressResult.to_dict`).

`CompressResult.rows` is the single source of the before/after numbers; the terminal table, report.md and
report.json are all rendered from it, so they can never disagree.
"""
from __future__ import annotations

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
    lines += ["| metric | before | after | after/before | change |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {x['metric']} | {_f(x['before'])} | {_f(x['after'])} | "
              f"{'' if x.get('ratio') is None else format(x['ratio'], '.3f')} | "
              f"{'' if x.get('change') is None else format(x['change'], '+.4f')} |" for x in d["summary"]]
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


def _f(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.0f}"
    return f"{v:,}"


def _f4(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"
