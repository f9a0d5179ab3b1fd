"""What a user reads after `compress`: the before/after table, JSON, Markdown, and PNG plots.

`summary_rows` is the single source of the before/after numbers; the terminal table, report.md and report.json
are all rendered from it, so they can never disagree.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..workflows.compress import CompressResult

REPORT_KEYS = ("input", "output", "mode", "settings", "calibration_data", "evaluation_data", "label_mode", "summary",
               "kept", "skipped", "certification", "sweep", "benchmark", "extras", "notes")


def summary_rows(r: CompressResult) -> list[dict]:
    """metric, before, after, ratio (after/before, or before/after for latency = speed-up)."""
    rows: list[dict] = []
    acc_name = "accuracy" if r.dense_eval.accuracy is not None else None
    if r.infos:
        a, b = r.infos
        rows += [_row("params", a.params, b.params), _row("MACs", a.macs, b.macs),
                 _row("file size (bytes)", a.size_bytes, b.size_bytes),
                 _row("file size zlib (bytes)", a.compressed_bytes, b.compressed_bytes)]
    if acc_name:
        rows.append({"metric": f"accuracy ({r.pruned_eval.n} samples)", "before": r.dense_eval.accuracy,
                     "after": r.pruned_eval.accuracy, "ratio": None,
                     "change": r.pruned_eval.accuracy - r.dense_eval.accuracy})
    rows.append({"metric": "agreement with dense", "before": 1.0, "after": r.pruned_eval.agreement, "ratio": None,
                 "change": r.pruned_eval.agreement - 1.0})
    if r.bench is not None:
        for t, label in (("1", "1 thread"), ("default", "default threads")):
            if t in r.bench.comparisons:
                c = r.bench.comparisons[t]
                rows.append({"metric": f"latency p50 ms, {label}", "before": c.a.p50_ms, "after": c.b.p50_ms,
                             "ratio": c.b_over_a, "speedup": c.a_over_b})
    return rows


def _row(metric: str, before: float, after: float) -> dict:
    return {"metric": metric, "before": before, "after": after, "ratio": after / before if before else None}


def to_dict(r: CompressResult) -> dict:
    cert = r.certification
    d = {
        "input": str(r.input), "output": str(r.output), "mode": r.settings.mode, "settings": r.settings.to_dict(),
        "calibration_data": r.calib, "evaluation_data": r.eval_data, "label_mode": r.label_mode,
        "summary": summary_rows(r),
        "kept": {k: {"kept": v[0], "total": v[1]} for k, v in r.kept.items()},
        "skipped": [{"group": g, "reason": why} for g, why in r.skipped],
        "certification": None if cert is None else {**cert.certification.to_dict(), "build_samples": cert.build_n,
                                                    "certification_samples": cert.cert_n, "loss": cert.loss},
        "sweep": r.sweep,
        "benchmark": None if r.bench is None else r.bench.to_dict(),
        "extras": {k: str(v) for k, v in r.extras.items()},
        "notes": r.notes,
    }
    for k, e in r.extra_evals.items():
        d["extras"][f"{k}_eval"] = e.to_dict()
    assert tuple(d) == REPORT_KEYS
    return d


def print_summary(r: CompressResult) -> None:
    from ..commands._common import fmt, info, print_table

    for n in r.notes:
        info(f"note: {n}")
    if r.skipped:
        info(f"left alone: {len(r.skipped)} group(s) — " + "; ".join(why if why == g else f"{g}: {why}"
                                                                      for g, why in r.skipped[:5])
             + (" …" if len(r.skipped) > 5 else ""))
    rows = [[x["metric"], x["before"], x["after"],
             f"{x['speedup']:.2f}x faster" if "speedup" in x else (fmt(x["ratio"]) if x["ratio"] is not None
                                                                   else f"{x['change']:+.4f}")]
            for x in summary_rows(r)]
    for k, e in r.extra_evals.items():
        rows.append([f"{k} model accuracy", r.dense_eval.accuracy, e.accuracy, f"agreement {e.agreement:.4f}"])
    print_table(f"{r.input} → {r.output} ({r.settings.mode}, criterion {r.settings.criterion}, "
                f"ratio {r.plan.settings['ratio']:.2f})", ["", "before", "after", "after/before"], rows)


def write(r: CompressResult, folder: str | Path) -> list[Path]:
    """report.json, report.md and the PNGs; returns the files written."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    d = to_dict(r)
    files = [out / "report.json"]
    files[0].write_text(json.dumps(d, indent=2, sort_keys=False, default=float) + "\n")
    files += _plots(r, d, out)
    md = out / "report.md"
    md.write_text(_markdown(d, [f.name for f in files if f.suffix == ".png"]))
    files.append(md)
    return files


def _markdown(d: dict, pngs: list[str]) -> str:
    lines = [f"# onnxprune report: {d['input']}", "",
             f"- output: `{d['output']}` ({d['mode']}, criterion `{d['settings']['criterion']}`, "
             f"ratio {d['settings']['ratio']})",
             f"- calibration data: `{d['calibration_data']}`; evaluation data: `{d['evaluation_data']}`; "
             f"labels: {d['label_mode'] or 'not used'}", ""]
    lines += ["| metric | before | after | after/before |", "|---|---:|---:|---:|"]
    for x in d["summary"]:
        last = f"{x['speedup']:.2f}× faster" if "speedup" in x else (
            f"{x['ratio']:.3f}" if x.get("ratio") is not None else f"{x['change']:+.4f}")
        lines.append(f"| {x['metric']} | {_f(x['before'])} | {_f(x['after'])} | {last} |")
    if d["certification"]:
        c = d["certification"]
        lines += ["", "## Certification (Learn-then-Test)", "", c["message"], "",
                  "| ratio | risk | p-value | certified |", "|---:|---:|---:|:---:|"]
        lines += [f"| {g:.2f} | {rk:.4f} | {p:.4f} | {'yes' if ok else ''} |"
                  for g, rk, p, ok in zip(c["grid"], c["empirical_risk"], c["pvalues"], c["certified"])]
    if d["skipped"]:
        lines += ["", "## Left alone", ""] + [f"- `{s['group']}`: {s['reason']}" for s in d["skipped"]]
    if d["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in d["notes"]]
    lines += [""] + [f"![{p}]({p})" for p in pngs] + [""]
    return "\n".join(lines)


def _f(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.0f}"
    return f"{v:,}"


def _plots(r: CompressResult, d: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    if r.sweep:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [s["ratio"] for s in r.sweep]
        key = "accuracy" if r.sweep[0]["accuracy"] is not None else "agreement"
        ax.plot(xs, [s[key] for s in r.sweep], "o-", label=f"{r.settings.criterion} (no reconstruction)")
        ax.axvline(r.plan.settings["ratio"], color="grey", ls="--", label="chosen ratio")
        ax.set(xlabel="pruning ratio", ylabel=key, title=f"{key} vs ratio ({r.sweep[0]['n']} eval samples)")
        ax.grid(alpha=0.3)
        ax.legend()
        files.append(_save(fig, out / "accuracy_vs_ratio.png"))
    if r.kept:
        names = list(r.kept)
        frac = [k / t for k, t in r.kept.values()]
        fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(names)), 4))
        ax.bar(range(len(names)), frac, color="tab:blue")
        labels = [n.rsplit("/", 1)[0] if n.count("/") > 1 else n for n in names]  # drop the trailing op name
        ax.set_xticks(range(len(names)), labels, rotation=90, fontsize=6)
        ax.set(ylim=(0, 1.05), ylabel="kept fraction", title="kept fraction per layer / channel group")
        fig.tight_layout()
        files.append(_save(fig, out / "kept_per_layer.png"))
    if r.bench is not None and r.bench.comparisons:
        fig, ax = plt.subplots(figsize=(6, 4))
        labels, before, after = [], [], []
        for t, c in r.bench.comparisons.items():
            labels.append("1 thread" if t == "1" else "default threads")
            before.append(c.a.p50_ms)
            after.append(c.b.p50_ms)
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], before, 0.4, label="dense")
        ax.bar([i + 0.2 for i in x], after, 0.4, label="pruned")
        for i, c in enumerate(r.bench.comparisons.values()):
            ax.text(i + 0.2, after[i], f"{c.a_over_b:.2f}×", ha="center", va="bottom")
        ax.set_xticks(list(x), labels)
        ax.set(ylabel="p50 latency, batch 1 (ms)", title="onnxruntime latency (interleaved runs)")
        ax.legend()
        files.append(_save(fig, out / "latency.png"))
    if d["certification"]:
        files.append(certification_plot(d["certification"], out / "certification.png"))
    return files


def certification_plot(c: dict, path: str | Path) -> Path:
    """Risk and p-value against ratio, with ε, δ and the certified ratio marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(c["grid"], c["empirical_risk"], "o-", label="empirical risk")
    ax.axhline(c["eps"], color="tab:red", ls="--", label=f"tolerance ε={c['eps']}")
    ax2 = ax.twinx()
    ax2.plot(c["grid"], c["pvalues"], "s-", color="tab:green", label="p-value")
    ax2.axhline(c["delta"], color="tab:green", ls=":", label=f"δ={c['delta']}")
    ax2.set(ylabel="p-value", ylim=(0, 1.05))
    if c["certified_ratio"] is not None:
        ax.axvline(c["certified_ratio"], color="black", lw=1, label="certified ratio")
    top = min(1.0, 4 * c["eps"])  # the region that matters is around ε; larger risks run off the top
    ax.set(xlabel="pruning ratio", ylabel=f"risk (axis clipped at {top:g})", ylim=(0, top),
           title="Learn-then-Test certification")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
    return _save(fig, Path(path))


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
