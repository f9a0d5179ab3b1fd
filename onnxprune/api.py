"""The Python API: one function per CLI command, each returning a result object.

The CLI is a thin layer over these; paths or in-memory `onnx.ModelProto`s are both accepted where a model is.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from .errors import OnnxPruneError
from .io.data import Dataset, load_dataset
from .io.export import ExportResult
from .io.export import export as _export
from .io.model import load_model
from .measure import bench as _bench
from .measure.check import CheckResult
from .measure.check import check as _check
from .measure.evaluate import EvalResult
from .measure.evaluate import evaluate as _evaluate
from .stats import Stats

if TYPE_CHECKING:
    from .select.plan import Plan, PruneSettings
    from .workflows.certify import CertifyRun
    from .workflows.compress import CompressResult
    from .workflows.prune import PruneResult

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


def compress(model: str | Path, **kwargs) -> CompressResult:
    """The whole chain (see `onnxprune.workflows.compress.compress` for the options); returns a CompressResult."""
    from .workflows.compress import compress as _compress

    return _compress(model, **kwargs)


def certify(model: ModelLike, calib: str | Path | Dataset, *, tolerance: float, delta: float = 0.1,
            grid: str = "0:0.95:0.05", settings: PruneSettings | None = None,
            cert_data: str | Path | Dataset | None = None, pvalue: str = "binomial", control: str = "fixed_sequence",
            cert_fraction: float = 0.5) -> CertifyRun:
    """Learn-then-Test: the largest ratio in `grid` whose risk is ≤ `tolerance` with probability ≥ 1 - delta.

    Returns a `workflows.certify.CertifyRun`, whose `candidate` is the certified model and plan (None if nothing
    was certified). `cert_data` must share no sample with `calib`."""
    from .certify import parse_grid
    from .select.plan import PruneSettings
    from .workflows.certify import run

    m = as_model(model)
    ratios = parse_grid(grid)
    return run(m, as_dataset(calib, m), settings or PruneSettings(), ratios, tolerance, delta,
               cert_data=None if cert_data is None else as_dataset(cert_data, m), cert_fraction=cert_fraction,
               pvalue=pvalue, control=control)


def prune(model: str | Path | onnx.ModelProto, output: str | Path, calib: str | Path | Dataset | None = None,
          settings: PruneSettings | None = None, plan_out: str | Path | None = None) -> PruneResult:
    """Prune at `settings.ratio`: writes the model (never over the input) and, if asked, the plan.
    Returns a `workflows.prune.PruneResult` (model, plan, per-layer or per-group report)."""
    from .io.model import save_model
    from .select.plan import PruneSettings
    from .workflows.prune import prune as _prune

    settings = settings or PruneSettings()
    m = as_model(model)
    r = _prune(m, None if calib is None else as_dataset(calib, m), settings)
    save_model(r.model, output, inputs=() if isinstance(model, onnx.ModelProto) else (model,))
    if plan_out:
        r.plan.save(plan_out)
    return r


def apply(model: str | Path | onnx.ModelProto, plan: str | Path | Plan, output: str | Path,
          calib: str | Path | Dataset | None = None) -> PruneResult:
    """Re-apply a saved plan (path or Plan) to the model it was made for; re-fits with `calib` when the plan was
    made with reconstruction. Same inputs → byte-identical output."""
    from .io.model import save_model
    from .select.plan import Plan
    from .workflows.prune import replay

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
    from .criteria.needs import default_requests
    from .stats import collect

    m = as_model(model)
    data = as_dataset(calib, m)
    reqs = default_requests(m, criteria)
    if not reqs:
        raise OnnxPruneError("the model has no Gemm, MatMul (constant weight) or Conv layers to collect statistics for")
    st = collect(m, data, reqs, batch_size=batch_size, labels=labels)
    names = criteria.replace(",", " ").split() if isinstance(criteria, str) else criteria
    st.meta["criteria"] = sorted(set(names))
    st.meta["calib"] = str(calib) if not isinstance(calib, Dataset) else (calib.source or "<dataset>")
    if output is not None:
        st.save(output)
    return st
