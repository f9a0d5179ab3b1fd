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
    """Accuracy (or agreement without labels) against ratio, the chosen ratio marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [s["ratio"] for s in r.sweep]
    key = "accuracy" if r.sweep[0]["accuracy"] is not None else "agreement"
    ax.plot(xs, [s[key] for s in r.sweep], "o-", label=f"{r.settings.criterion} (no reconstruction)")
    ax.axvline(r.plan.settings["ratio"], color="grey", ls="--", label="chosen ratio")
    ax.set(xlabel="pruning ratio", ylabel=key, title=f"{key} vs ratio ({r.sweep[0]['n']} eval samples)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def kept_plot(kept: dict[str, tuple[int, int]], path: Path) -> Path:
    """Kept fraction per layer or channel group."""
    plt = _pyplot()
    names = list(kept)
    frac = [k / t for k, t in kept.values()]
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(names)), 4))
    ax.bar(range(len(names)), frac, color="tab:blue")
    labels = [n.rsplit("/", 1)[0] if n.count("/") > 1 else n for n in names]  # drop the trailing op name
    ax.set_xticks(range(len(names)), labels, rotation=90, fontsize=6)
    ax.set(ylim=(0, 1.05), ylabel="kept fraction", title="kept fraction per layer / channel group")
    fig.tight_layout()
    return _save(fig, path)


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
    """Risk and p-value against the tested ratios, with ε, δ and the certified ratio marked."""
    plt = _pyplot()
    tested = c.get("tested", [True] * len(c["grid"]))
    grid = [g for g, t in zip(c["grid"], tested) if t]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(grid, c["empirical_risk"][:len(grid)], "o-", label="empirical risk")
    ax.axhline(c["eps"], color="tab:red", ls="--", label=f"tolerance ε={c['eps']}")
    ax2 = ax.twinx()
    ax2.plot(grid, c["pvalues"][:len(grid)], "s-", color="tab:green", label="p-value")
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
