"""The Python API: one function per CLI command, each returning a result object.

The CLI is a thin layer over these; paths or in-memory `onnx.ModelProto`s are both accepted where a model is.
"""
from __future__ import annotations

from pathlib import Path

import onnx

from .measure import bench as _bench
from .measure.check import CheckResult
from .measure.check import check as _check
from .io.data import Dataset, load_dataset
from .measure.evaluate import EvalResult
from .measure.evaluate import evaluate as _evaluate
from .io.export import ExportResult
from .io.export import export as _export
from .errors import OnnxPruneError
from .io.model import load_model
from .stats import Stats

ModelLike = str | Path | onnx.ModelProto


def as_model(m: ModelLike) -> onnx.ModelProto:
    return m if isinstance(m, onnx.ModelProto) else load_model(m)


def as_dataset(d: str | Path | Dataset, model: onnx.ModelProto) -> Dataset:
    return d if isinstance(d, Dataset) else load_dataset(d, model)


def evaluate(model: ModelLike, data: str | Path | Dataset, reference: ModelLike | None = None,
             batch_size: int = 256) -> EvalResult:
    """Top-1 accuracy on labelled data, and agreement with `reference` when given."""
    m = as_model(model)
    ref = as_model(reference) if reference is not None else None
    return _evaluate(m, as_dataset(data, m), ref, batch_size)


def export(src: str, out: str | Path, input_shape: tuple[int, ...], weights: str | Path | None = None,
           opset: int = 18, tolerance: float = 1e-4) -> ExportResult:
    """PyTorch factory (file.py:function) + optional state_dict → checked ONNX file."""
    return _export(src, out, input_shape, weights=weights, opset=opset, tolerance=tolerance)


def bench(model: ModelLike, model_b: ModelLike | None = None, threads: str = "both", runs: int = 200,
          warmup: int = 10, seconds: float = 10.0, shapes: dict[str, tuple[int, ...]] | None = None
          ) -> _bench.BenchResult:
    """Latency (batch 1; interleaved A/B ratios for two models), file size, params and MACs."""
    return _bench.benchmark(model, model_b, threads=threads, runs=runs, warmup=warmup, seconds=seconds, shapes=shapes)


def check(pruned: ModelLike, reference: ModelLike, data: str | Path | Dataset, max_drop: float = 0.01,
          batch_size: int = 256) -> CheckResult:
    """Pass/fail: accuracy drop (or, without labels, disagreement) of `pruned` vs `reference` ≤ `max_drop`."""
    m, ref = as_model(pruned), as_model(reference)
    return _check(m, ref, as_dataset(data, m), max_drop, batch_size)


def compress(model: str | Path, **kwargs):
    """The whole chain (see `onnxprune.compress.compress` for the options); returns a CompressResult."""
    from .workflows.compress import compress as _compress

    return _compress(model, **kwargs)


def certify(model: ModelLike, calib: str | Path | Dataset, *, eps: float, delta: float = 0.1,
            grid: str = "0:0.95:0.05", settings=None, cert_data: str | Path | Dataset | None = None,
            pvalue: str = "binomial", control: str = "fixed_sequence", cert_fraction: float = 0.5):
    """Learn-then-Test: the largest ratio in `grid` whose risk is ≤ eps with probability ≥ 1 - delta."""
    from .workflows.certify import run
    from .certify import parse_grid
    from .select.plan import PruneSettings

    m = as_model(model)
    settings = settings or PruneSettings()
    return run(m, as_dataset(calib, m), settings, parse_grid(grid), eps, delta,
               cert_data=None if cert_data is None else as_dataset(cert_data, m), cert_fraction=cert_fraction,
               pvalue=pvalue, control=control, reconstruct=settings.reconstruct)


def prune(model: str | Path | onnx.ModelProto, output: str | Path, calib: str | Path | Dataset | None = None,
          settings=None, plan_out: str | Path | None = None):
    """Prune at `settings.ratio`: writes the model (never over the input) and, if asked, the plan.
    Returns a `pipeline.PruneResult` (model, plan, per-layer or per-group report)."""
    from .io.model import save_model
    from .workflows.prune import prune as _prune
    from .select.plan import PruneSettings

    settings = settings or PruneSettings()
    m = as_model(model)
    r = _prune(m, None if calib is None else as_dataset(calib, m), settings)
    save_model(r.model, output, inputs=() if isinstance(model, onnx.ModelProto) else (model,))
    if plan_out:
        r.plan.save(plan_out)
    return r


def apply(model: str | Path | onnx.ModelProto, plan, output: str | Path, calib: str | Path | Dataset | None = None):
    """Re-apply a saved plan (path or Plan) to the model it was made for; re-fits with `calib` when the plan was
    made with reconstruction. Same inputs → byte-identical output."""
    from .io.model import save_model
    from .workflows.prune import replay
    from .select.plan import Plan

    m = as_model(model)
    p = plan if isinstance(plan, Plan) else Plan.load(plan)
    r = replay(m, p, None if calib is None else as_dataset(calib, m))
    save_model(r.model, output, inputs=() if isinstance(model, onnx.ModelProto) else (model,))
    return r


def stats(model: ModelLike, calib: str | Path | Dataset, output: str | Path | None = None,
          criteria: str | list[str] | tuple[str, ...] = ("fscreen",), batch_size: int = 256,
          labels: str = "auto") -> Stats:
    """One streaming onnxruntime pass → finalized activation statistics for `criteria` (saved to `output` if given).

    criteria ⊆ {fscreen, apoz, wanda, ri, gram, all}; labels: auto (y if present, else the model's predictions),
    true, or predicted (label-free mode, recorded in `Stats.label_mode`).
    """
    from .stats import collect, default_requests

    m = as_model(model)
    data = as_dataset(calib, m)
    reqs = default_requests(m, criteria)
    if not reqs:
        raise OnnxPruneError("the model has no Gemm, MatMul (constant weight) or Conv layers to collect statistics for")
    st = collect(m, data, reqs, batch_size=batch_size, labels=labels)
    st.meta["criteria"] = sorted(set(criteria.replace(",", " ").split()) if isinstance(criteria, str) else set(criteria))
    st.meta["calib"] = str(calib) if not isinstance(calib, Dataset) else (calib.source or "<dataset>")
    if output is not None:
        st.save(output)
    return st
