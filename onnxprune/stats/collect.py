"""One streaming onnxruntime pass over the calibration data → finalized `Stats`.

`collect` turns `Request`s into taps on an instrumented copy of the model (see `instrument.py`), runs it batch by
batch and feeds each batch to online accumulators (`accumulators.py`); memory depends on the model and batch size,
never on the number of samples. `stream` is the low-level generator of raw tensors per batch.

Graph optimisation: the instrumented model runs with ORT_ENABLE_ALL. Requested tensors are graph outputs, and
onnxruntime does not fuse away a node whose output is a graph output (a Conv→BN→ReLU chain whose BN output is tapped
keeps its BN; fusions elsewhere still apply), so every requested tensor is produced with its unfused value; the
collector still checks that the session exposes every requested output. ENABLE_ALL measured faster than DISABLE_ALL
(docs/BENCHMARKS.md, "Statistics pass overhead"), and `optimize="disable"` is available to double-check (the tests
compare the two).

Speed: onnxruntime (which releases the GIL) runs batch k+1 while a worker thread feeds batch k to the accumulators
(at most two batches in flight), and BLAS is pinned to one thread for the pass — the accumulators' GEMMs are small
and multi-threaded OpenBLAS next to onnxruntime's own threads was several times slower.
"""
from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..data import Dataset
from ..errors import OnnxPruneError
from ..model_io import model_hash
from ..progress import track
from ..runtime import make_session, run_batches
from ._blas import single_threaded_blas
from .accumulators import ClassMoments, Contributions, Gram, Moments, ZeroCounts
from .instrument import Tap, TensorInfo, following_activation, instrument, layer_info, tensor_infos
from .store import Stats

STATS = frozenset({"class_moments", "zeros", "moments", "gram", "contrib"})
KINDS = ("features", "channels")
LABEL_MODES = ("auto", "true", "predicted")
DEFAULT_OPTIMIZE = "all"


@dataclass(frozen=True)
class Request:
    """One tensor and the statistics wanted of it.

    kind "features": the value per sample viewed as (B, F) (all non-batch axes flattened).
    kind "channels": a (B, C, *spatial) map reduced in the graph to per-sample spatial means (B, C); zero fractions
    (for "zeros") and per-sample Σx² over positions (for "moments" → sqnorm) are reduced in the graph too. A rank-2
    tensor requested as "channels" is the same as "features".
    stats ⊆ {"class_moments", "zeros", "moments", "gram", "contrib"}; "contrib" needs `layer`, the Gemm / MatMul /
    Conv node whose data input `tensor` is.
    """

    tensor: str
    kind: str
    stats: frozenset[str]
    layer: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stats", frozenset(self.stats))
        if self.kind not in KINDS:
            raise OnnxPruneError(f"request for '{self.tensor}': kind must be 'features' or 'channels', got {self.kind!r}")
        bad = self.stats - STATS
        if bad:
            raise OnnxPruneError(f"request for '{self.tensor}': unknown statistics {sorted(bad)} "
                                 f"(known: {', '.join(sorted(STATS))})")
        if not self.stats:
            raise OnnxPruneError(f"request for '{self.tensor}': no statistics asked for")
        if "contrib" in self.stats and not self.layer:
            raise OnnxPruneError(f"request for '{self.tensor}': 'contrib' needs the consuming layer (layer=...)")


@dataclass
class _Binding:
    """One accumulator and how to feed it from a batch's fetched outputs."""

    tensor: str  # key the finalized arrays are stored under
    acc: object
    feed: Callable[[dict[str, np.ndarray], np.ndarray | None], None]
    needs_labels: bool = False


@dataclass
class _Plan:
    taps: list[Tap] = field(default_factory=list)
    bindings: list[_Binding] = field(default_factory=list)
    contrib_inputs: dict[str, str] = field(default_factory=dict)

    def tap(self, t: Tap) -> str:
        if t not in self.taps:
            self.taps.append(t)
        return t.output


def _features(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1)


def _positions(info: TensorInfo) -> int | None:
    """Number of spatial positions of a (N, C, *spatial) map when all spatial sizes are static."""
    dims = info.shape[2:]
    return int(np.prod(dims)) if dims and all(isinstance(d, int) and d > 0 for d in dims) else None


def _plan(model: onnx.ModelProto, requests: list[Request], infos: dict[str, TensorInfo], n_classes: int) -> _Plan:
    plan = _Plan()
    by_tensor: dict[str, list[Request]] = {}
    for r in requests:
        by_tensor.setdefault(r.tensor, []).append(r)
    inits = {t.name for t in model.graph.initializer}
    for tensor, reqs in by_tensor.items():
        if tensor in inits:
            raise OnnxPruneError(f"request for '{tensor}': that is a weight (initializer), not an activation")
        info = infos.get(tensor)
        if info is None:
            raise OnnxPruneError(f"request for '{tensor}': no such tensor in the model (or its type is unknown)")
        kinds = {r.kind for r in reqs}
        rank = info.rank
        as_map = "channels" in kinds and (rank is None or rank >= 3)
        if as_map and "features" in kinds:
            raise OnnxPruneError(f"tensor '{tensor}' is requested both as 'features' and as 'channels'; pick one")
        if as_map and rank is None:
            raise OnnxPruneError(f"tensor '{tensor}': rank unknown after shape inference; cannot reduce it as a map")
        wanted = frozenset().union(*(r.stats for r in reqs))
        needs_x = bool(wanted & {"class_moments", "moments", "gram", "contrib"}) or not as_map
        if as_map:
            x_out = plan.tap(Tap(tensor, "mean")) if needs_x else ""
        else:
            x_out = plan.tap(Tap(tensor, "raw"))
        get_x = (lambda o, k=x_out: o[k]) if as_map else (lambda o, k=x_out: _features(o[k]))

        if "class_moments" in wanted:
            acc = ClassMoments(n_classes)
            plan.bindings.append(_Binding(tensor, acc, lambda o, y, a=acc, g=get_x: a.update(g(o), y), True))
        if "zeros" in wanted:
            if as_map:
                z_out = plan.tap(Tap(tensor, "zfrac"))
                acc = ZeroCounts(fractions=True)
                plan.bindings.append(_Binding(tensor, acc, lambda o, y, a=acc, k=z_out: a.update(o[k])))
            else:
                acc = ZeroCounts()
                plan.bindings.append(_Binding(tensor, acc, lambda o, y, a=acc, g=get_x: a.update(g(o))))
        if "moments" in wanted:
            acc = Moments()
            if as_map:
                positions = _positions(info)
                if positions:  # static spatial size: Σx² = positions · GAP(x·x), which runs in NCHWc
                    s_out = plan.tap(Tap(tensor, "sqmean"))
                    plan.bindings.append(_Binding(tensor, acc, lambda o, y, a=acc, g=get_x, k=s_out, p=positions:
                                                  a.update(g(o), sq=o[k].astype(np.float64) * p)))
                else:
                    s_out = plan.tap(Tap(tensor, "sqsum"))
                    plan.bindings.append(_Binding(tensor, acc, lambda o, y, a=acc, g=get_x, k=s_out:
                                                  a.update(g(o), sq=o[k])))
            else:
                plan.bindings.append(_Binding(tensor, acc, lambda o, y, a=acc, g=get_x: a.update(g(o))))
        if "gram" in wanted:
            acc = Gram()
            plan.bindings.append(_Binding(tensor, acc, lambda o, y, a=acc, g=get_x: a.update(g(o))))
        for r in reqs:
            if "contrib" in r.stats:
                _plan_contrib(model, plan, r, as_map, x_out, infos)
    return plan


def _plan_contrib(model: onnx.ModelProto, plan: _Plan, r: Request, as_map: bool, x_out: str,
                  infos: dict[str, TensorInfo]) -> None:
    layer = layer_info(model, r.layer)
    if layer.input != r.tensor:
        raise OnnxPruneError(f"request for '{r.tensor}': layer '{r.layer}' reads '{layer.input}', not this tensor")
    if (layer.kind == "channels") != as_map:
        need = "channels" if layer.kind == "channels" else "features"
        raise OnnxPruneError(f"request for '{r.tensor}': contributions into {layer.node.op_type} '{r.layer}' need "
                             f"kind '{need}'")
    if layer.name in plan.contrib_inputs:
        return
    acc = Contributions(layer.weight, layer.bias, layer.groups)
    n_in = layer.weight.shape[1] * layer.groups
    act = following_activation(model, layer.node)
    plan.contrib_inputs[layer.name] = r.tensor
    if as_map:
        a_out = plan.tap(Tap(act[0], "active", act[2], act[3])) if act else None

        def feed(o, y, a=acc, k=x_out, ak=a_out):
            a.update(o[k], active=None if ak is None else o[ak] > 0)
    else:
        p_out = plan.tap(Tap(act[0], "raw")) if act else None
        lo, hi = (act[2], act[3]) if act else (None, None)

        def feed(o, y, a=acc, k=x_out, pk=p_out, lo=lo, hi=hi, n_in=n_in):
            x = o[k]
            x = x.reshape(-1, n_in) if x.ndim > 2 and x.shape[-1] == n_in else x.reshape(len(x), -1)
            active = None
            if pk is not None:
                p = o[pk].reshape(len(x), -1)
                active = (p > lo) & (p < hi)
            a.update(x, active=active)
    plan.bindings.append(_Binding(layer.name, acc, feed))


def _label_mode(labels: str, data: Dataset) -> str:
    if labels not in LABEL_MODES:
        raise OnnxPruneError(f"labels must be one of {', '.join(LABEL_MODES)}, got {labels!r}")
    if labels == "true" and not data.labelled:
        raise OnnxPruneError(f"{data.source or 'data'}: no labels ('y') in the data; use --labels predicted "
                             f"(label-free mode: the dense model's own predictions)")
    if labels == "true" or (labels == "auto" and data.labelled):
        return "true"
    return "predicted"


def _run(sess, data: Dataset, plan: _Plan, fetch: list[str], from_feed: list[str], mode: str, need_pred: bool,
         first_out: str, batch_size: int, progress: str, total: int, pipeline: bool) -> int:
    """Run every batch through onnxruntime and the accumulators.

    pipeline=True overlaps the two: a worker thread accumulates batch k while onnxruntime (which releases the GIL)
    runs batch k+1. The hand-over queue holds at most two batches, so memory stays bounded.
    """
    def outputs():
        n = 0
        for feed, y in zip(data.batches(batch_size), data.label_batches(batch_size)):
            outs = next(run_batches(sess, iter([feed]), fetch)) if fetch else []
            o = dict(zip(fetch, outs))
            o.update({k: feed[k] for k in from_feed})
            b = len(next(iter(feed.values())))
            if n == 0:
                for name, a in o.items():
                    if a.ndim == 0 or a.shape[0] != b:
                        raise OnnxPruneError(f"tensor '{name}' has shape {a.shape}; expected a leading batch axis "
                                             f"of {b}")
            if mode == "predicted":
                y = o[first_out].reshape(b, -1).argmax(1) if need_pred else None
            n += b
            yield o, y, b

    def accumulate(o, y) -> None:
        for bd in plan.bindings:
            bd.feed(o, y)

    n = 0
    items = track(outputs(), progress, total=total)
    if not pipeline:
        for o, y, b in items:
            accumulate(o, y)
            n += b
        return n
    q: queue.Queue = queue.Queue(maxsize=1)
    failure: list[BaseException] = []

    def worker() -> None:
        while True:
            item = q.get()
            if item is None:
                return
            if not failure:
                try:
                    accumulate(*item)
                except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
                    failure.append(e)

    th = threading.Thread(target=worker, name="onnxprune-stats", daemon=True)
    th.start()
    try:
        for o, y, b in items:
            if failure:
                break
            q.put((o, y))
            n += b
    finally:
        q.put(None)
        th.join()
    if failure:
        raise failure[0]
    return n


def collect(model: onnx.ModelProto, data: Dataset, requests: list[Request], *, batch_size: int = 256,
            labels: str = "auto", optimize: str = DEFAULT_OPTIMIZE, progress: str = "statistics",
            pipeline: bool = True) -> Stats:
    """One onnxruntime pass over `data` → finalized statistics for every request.

    labels: "auto" (the data's `y` if present, else the model's predictions), "true" or "predicted" (label-free
    mode: argmax of the model's first output, fetched in the same pass). The mode is recorded in `Stats.label_mode`.
    """
    if batch_size < 1:
        raise OnnxPruneError(f"batch size must be >= 1, got {batch_size}")
    if not requests:
        raise OnnxPruneError("no statistics requested")
    mode = _label_mode(labels, data)
    infos = tensor_infos(model)
    first_out = model.graph.output[0].name
    if mode == "true":
        n_classes = int(data.labels.max()) + 1
    else:
        shp = infos.get(first_out).shape if first_out in infos else ()
        n_classes = shp[-1] if shp and isinstance(shp[-1], int) else 0
    plan = _plan(model, requests, infos, n_classes)
    need_pred = mode == "predicted" and any(b.needs_labels for b in plan.bindings)
    graph_inputs = {i.name for i in model.graph.input}
    from_feed = [t.output for t in plan.taps if t.what == "raw" and t.tensor in graph_inputs]
    inst = instrument(model, [t for t in plan.taps if t.output not in from_feed], infos)
    sess = make_session(inst, optimize=optimize)
    fetch = list(dict.fromkeys(t.output for t in plan.taps if t.output not in from_feed))
    produced = {o.name for o in sess.get_outputs()}
    missing = [f for f in fetch if f not in produced]
    if missing:  # pragma: no cover - onnxruntime keeps graph outputs; this guards against a future change
        raise OnnxPruneError(f"onnxruntime did not expose requested tensors: {', '.join(missing[:5])}")
    if need_pred and first_out not in fetch:
        fetch.append(first_out)
    total = math.ceil(len(data) / batch_size)
    with single_threaded_blas():
        n = _run(sess, data, plan, fetch, from_feed, mode, need_pred, first_out, batch_size, progress, total,
                 pipeline)
    arrays: dict[tuple[str, str], np.ndarray] = {}
    for bd in plan.bindings:
        for k, v in bd.acc.finalize().items():
            arrays[(bd.tensor, k)] = np.asarray(v, dtype=np.float64)
    meta = {"n_classes": n_classes, "batch_size": batch_size, "optimize": optimize,
            "contrib_inputs": plan.contrib_inputs,
            "requests": [{"tensor": r.tensor, "kind": r.kind, "stats": sorted(r.stats), "layer": r.layer}
                         for r in requests]}
    return Stats(arrays, model_hash=model_hash(model), n=n, label_mode=mode, meta=meta)


def stream(model: onnx.ModelProto, data: Dataset, tensors: list[str], *, batch_size: int = 256,
           optimize: str = DEFAULT_OPTIMIZE) -> Iterator[dict[str, np.ndarray]]:
    """Yield {tensor: raw value} per batch (full maps, unreduced) for the given tensors, in data order.

    Tensors that are graph inputs are passed through from the feed. Requested intermediates become graph outputs,
    which onnxruntime never fuses away.
    """
    if not tensors:
        raise OnnxPruneError("stream: no tensors requested")
    inputs = {i.name for i in model.graph.input}
    inner = [t for t in dict.fromkeys(tensors) if t not in inputs]
    infos = tensor_infos(model)
    for t in inner:
        if t not in infos:
            raise OnnxPruneError(f"stream: no tensor '{t}' in the model (or its type is unknown)")
    inst = instrument(model, [Tap(t, "raw") for t in inner], infos)
    sess = make_session(inst, optimize=optimize)
    for feed in data.batches(batch_size):
        outs = next(run_batches(sess, iter([feed]), inner)) if inner else []
        got = dict(zip(inner, outs))
        yield {t: (feed[t] if t in inputs else got[t]) for t in tensors}
