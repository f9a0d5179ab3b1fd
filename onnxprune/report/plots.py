"""PNG plots of a `compress` run and of a certification: matplotlib, headless (Agg), one function per figure."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..workflows.compress import CompressResult


def plots(r: CompressResult, d: dict, out: Path) -> list[Path]:
    """Every plot the run has data for, written into `out`; returns the files."""
    files = []
    if r.sweep:
        files.append(sweep_plot(r, out / "accuracy_vs_ratio.png"))
    if r.kept:
        files.append(kept_plot(r.kept, out / "kept_per_layer.png"))
    if r.bench is not None and r.bench.comparisons:
        files.append(latency_plot(r.bench.comparisons, out / "latency.png"))
    if d["certification"]:
        files.append(certification_plot(d["certification"], out / "certification.png"))
    return files


def sweep_plot(r: CompressResult, path: Path) -> Path:
    """Accuracy (or agreement without labels) against ratio, built as the written model was built (the sweep says
    how), with the dense model's level and the written model's own point."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    pts = [s for s in r.sweep if s.get("kind", "sweep") == "sweep"]
    key = "accuracy" if pts[0]["accuracy"] is not None else "agreement"
    n = pts[0]["n"]
    how = pts[0].get("how", "")
    ax.plot([s["ratio"] for s in pts], [s[key] for s in pts], "o-", label=f"{r.settings.criterion}, {how}".rstrip(", "))
    dense = r.dense_eval.accuracy if key == "accuracy" else 1.0
    if dense is not None:
        ax.axhline(dense, color="grey", ls=":", label=f"dense model ({dense:.3f})")
    written = r.pruned_eval.accuracy if key == "accuracy" else r.pruned_eval.agreement
    ax.plot([r.plan.settings["ratio"]], [written], "*", ms=14, color="tab:red",
            label=f"written model ({written:.3f}, {r.pruned_eval.n} samples)")
    ax.set(xlabel="pruning ratio (fraction of channels or weights removed)", ylabel=key, ylim=(0, 1.02),
           title=f"{key} against ratio ({n} evaluation samples)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def kept_plot(kept: dict[str, tuple[int, int]], path: Path) -> Path:
    """Kept fraction per layer or channel group, each bar labelled with its kept / total count."""
    plt = _pyplot()
    names = list(kept)
    frac = [k / t for k, t in kept.values()]
    fig, ax = plt.subplots(figsize=(max(6.4, 0.32 * len(names) + 1.5), 4.8))
    bars = ax.bar(range(len(names)), frac, color="tab:blue")
    for bar, (k, t) in zip(bars, kept.values()):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, f"{k}/{t}", ha="center", va="bottom",
                rotation=90, fontsize=7)
    ax.set_xticks(range(len(names)), [_short(n) for n in names], rotation=90, fontsize=8)
    ax.set(ylim=(0, 1.25), ylabel="kept fraction", xlabel="layer / channel group (first producer)",
           title="what each layer or channel group keeps (kept / total)")
    fig.tight_layout()
    return _save(fig, path)


def _short(name: str, width: int = 22) -> str:
    """A readable label: exporter paths like '/4/body/body.0/Conv' become '4/…/body.0'."""
    parts = [x for x in name.split("/") if x]
    op = parts.pop() if len(parts) > 1 and parts[-1][:1].isupper() else ""  # the trailing op name
    if len(parts) > 2:  # the outermost module (often a block index) and the innermost tell groups apart
        label = f"{parts[0]}/…/{parts[-1]}"
    else:
        label = "/".join(parts) if len(parts) > 1 else (f"{parts[0]} {op}".strip() if parts else name)
    return label if len(label) <= width else "…" + label[-(width - 1):]


def latency_plot(comparisons: dict, path: Path) -> Path:
    """p50 latency dense vs pruned per thread setting, the speed-up written over each pruned bar."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = ["1 thread" if t == "1" else "default threads" for t in comparisons]
    before = [c.a.p50_ms for c in comparisons.values()]
    after = [c.b.p50_ms for c in comparisons.values()]
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], before, 0.4, label="dense")
    ax.bar([i + 0.2 for i in x], after, 0.4, label="pruned")
    for i, c in enumerate(comparisons.values()):
        ax.text(i + 0.2, after[i], f"{c.a_over_b:.2f}×", ha="center", va="bottom")
    ax.set_xticks(list(x), labels)
    ax.set(ylabel="p50 latency, batch 1 (ms)", title="onnxruntime latency (interleaved runs)")
    ax.legend()
    return _save(fig, path)


def certification_plot(c: dict, path: str | Path) -> Path:
    """Two panels a colleague can read: risk against ratio with the tolerance ε, and p-value against ratio (log) with
    δ; the certified ratio is marked on both, untested ratios are left out."""
    plt = _pyplot()
    tested = c.get("tested", [True] * len(c["grid"]))
    grid = [g for g, t in zip(c["grid"], tested) if t]
    risk, pv = c["empirical_risk"][:len(grid)], c["pvalues"][:len(grid)]
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(6.4, 6), sharex=True)
    ax.plot(grid, risk, "o-", label="risk on the certification samples")
    ax.axhline(c["eps"], color="tab:red", ls="--", label=f"tolerance ε = {c['eps']:g}")
    ax.set(ylabel="risk", ylim=(0, max(2 * c["eps"], max(risk, default=0) * 1.1)),
           title=f"Learn-then-Test: risk ≤ ε with probability ≥ {1 - c['delta']:g}" + (f" ({c['n']} samples)" if "n" in c else ""))
    bx.semilogy(grid, [max(p, 1e-300) for p in pv], "s-", color="tab:green", label="p-value")
    bx.axhline(c["delta"], color="tab:green", ls=":", label=f"δ = {c['delta']:g}")
    bx.set(xlabel="pruning ratio", ylabel="p-value (log scale)")
    for axis in (ax, bx):
        if c["certified_ratio"] is not None:
            axis.axvline(c["certified_ratio"], color="black", lw=1, label=f"certified ratio {c['certified_ratio']:g}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="upper left")
    return _save(fig, Path(path))


def _pyplot():
    """matplotlib.pyplot on the headless backend (imported late: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path
