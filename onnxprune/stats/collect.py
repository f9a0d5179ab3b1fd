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

Speed: class statistics (fscreen) are summed per batch inside the graph, so only (K, F) arrays cross into numpy for
them; the other statistics fetch per-sample values ((B, C) for conv maps). BLAS is pinned to one thread for the
pass — the accumulators' GEMMs are small and multi-threaded OpenBLAS next to onnxruntime's own threads was several
times slower. `pipeline=True` overlaps accumulation with onnxruntime in a worker thread; it is off by default
(measurements in `collect`).
"""
from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import helper

from ..io.data import Dataset
from ..io.shapes import data_shapes, output_kind
from ..errors import OnnxPruneError
from ..io.subgraph import upstream
from ..io.model import model_hash
from ..progress import track
from ..io.runtime import make_session, run_batches
from ._blas import single_threaded_blas
from .accumulators import ClassMoments, Contributions, Gram, Moments, ZeroCounts, check_labels
from .instrument import (
    CLASS_COUNT,
    CLASS_SUMS,
    LABELS,
    Classes,
    Tap,
    TensorInfo,
    instrument,
    sum_type,
    tensor_infos,
    token_mask,
)
from .store import Stats

STATS = frozenset({"class_moments", "zeros", "moments", "gram", "contrib"})
KINDS = ("features", "channels", "tokens", "heads")
LABEL_MODES = ("auto", "true", "predicted")
DEFAULT_OPTIMIZE = "all"


@dataclass(frozen=True, eq=False)
class ContribSpec:
    """What the relative-importance accumulator needs of the layer that reads a requested tensor; made by
    `units.weights.contrib_spec`, so the statistics engine needs no knowledge of layers or graph walking."""

    layer: str  # the Gemm / MatMul / Conv node (statistics are stored under this name)
    op: str
    input: str  # the layer's data input: the tensor the request must be for
    weight: np.ndarray  # (out, in/groups) float64; Conv: Σ|w| over the kernel
    bias: np.ndarray | None
    groups: int
    kind: str  # "features" or "channels": how the layer's input must be requested
    activation: tuple[str, float, float] | None = None  # (tensor, lo, hi): the activation after the layer, whose
    # output outside (lo, hi) marks samples in its blind range


@dataclass(frozen=True)
class Request:
    """One tensor and the statistics wanted of it.

    kind "features": the value per sample viewed as (B, F) (all non-batch axes flattened).
    kind "channels": a (B, C, *spatial) map reduced in the graph to per-sample spatial means (B, C); zero fractions
    (for "zeros") and per-sample Σx² over positions (for "moments" → sqnorm) are reduced in the graph too. A rank-2
    tensor requested as "channels" is the same as "features".
    stats ⊆ {"class_moments", "zeros", "moments", "gram", "contrib"}; "contrib" needs `contrib`, the layer whose
    data input `tensor` is.
    """

    tensor: str
    kind: str
    stats: frozenset[str]
    contrib: ContribSpec | None = None
    block: int = 1  # kind "heads": features per head (see `_plan_tokens`)

    @property
    def layer(self) -> str | None:
        return None if self.contrib is None else self.contrib.layer

    def __post_init__(self) -> None:
        object.__setattr__(self, "stats", frozenset(self.stats))
        if self.kind not in KINDS:
            raise OnnxPruneError(f"request for '{self.tensor}': kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        bad = self.stats - STATS
        if bad:
            raise OnnxPruneError(f"request for '{self.tensor}': unknown statistics {sorted(bad)} "
                                 f"(known: {', '.join(sorted(STATS))})")
        if not self.stats:
            raise OnnxPruneError(f"request for '{self.tensor}': no statistics asked for")
        if "contrib" in self.stats and self.contrib is None:
            raise OnnxPruneError(f"request for '{self.tensor}': 'contrib' needs the consuming layer (contrib=...)")


@dataclass
class _Binding:
    """One accumulator and how to feed it from a batch's fetched outputs."""

    tensor: str  # key the finalized arrays are stored under
    acc: object
    feed: Callable[[dict[str, np.ndarray]], None]


@dataclass
class _Plan:
    taps: list[Tap] = field(default_factory=list)  # fetched with every batch
    bindings: list[_Binding] = field(default_factory=list)
    contrib_inputs: dict[str, str] = field(default_factory=dict)
    shifts: dict[str, Tap] = field(default_factory=dict)  # shift input → its `class_first` tap, read once (`_shifts`)

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
        if kinds & {"tokens", "heads"}:
            _plan_tokens(plan, tensor, reqs, n_classes, token_mask(model.graph, info))
            continue
        rank = info.rank
        as_map = "channels" in kinds and (rank is None or rank >= 3)
        if as_map and "features" in kinds:
            raise OnnxPruneError(f"tensor '{tensor}' is requested both as 'features' and as 'channels'; pick one")
        if as_map and rank is None:
            raise OnnxPruneError(f"tensor '{tensor}': rank unknown after shape inference; cannot reduce it as a map")
        wanted = frozenset().union(*(r.stats for r in reqs))
        # the per-sample values cross into numpy only for the statistics accumulated there; class sums are in-graph
        if wanted & {"moments", "gram"} or ("zeros" in wanted and not as_map):
            x_out = plan.tap(Tap(tensor, "mean" if as_map else "raw"))
        else:
            x_out = ""
        get_x = (lambda o, k=x_out: o[k]) if as_map else (lambda o, k=x_out: _features(o[k]))

        if "class_moments" in wanted:  # a batch's class sums come out of the graph; add them up in float64
            first = Tap(tensor, "class_first", view="channels" if as_map else "features")
            plan.shifts[first.shift_input] = first  # read once, before the pass (`_shifts`)
            s_out, ss_out = (plan.tap(replace(first, what=w)) for w in CLASS_SUMS)
            acc = ClassMoments(n_classes)
            plan.bindings.append(_Binding(tensor, acc, lambda o, a=acc, k=first.shift_input, s=s_out, ss=ss_out:
                                          a.add_sums(o[CLASS_COUNT], o[k], o[s], o[ss])))
        if "zeros" in wanted:
            if as_map:
                z_out = plan.tap(Tap(tensor, "zfrac"))
                acc = ZeroCounts(fractions=True)
                plan.bindings.append(_Binding(tensor, acc, lambda o, a=acc, k=z_out: a.update(o[k])))
            else:
                acc = ZeroCounts()
                plan.bindings.append(_Binding(tensor, acc, lambda o, a=acc, g=get_x: a.update(g(o))))
        if "moments" in wanted:
            acc = Moments()
            if as_map:
                positions = _positions(info)
                if positions:  # static spatial size: Σx² = positions · GAP(x·x), which runs in NCHWc
                    s_out = plan.tap(Tap(tensor, "sqmean"))
                    plan.bindings.append(_Binding(tensor, acc, lambda o, a=acc, g=get_x, k=s_out, p=positions:
                                                  a.update(g(o), sq=o[k].astype(np.float64) * p)))
                else:
                    s_out = plan.tap(Tap(tensor, "sqsum"))
                    plan.bindings.append(_Binding(tensor, acc, lambda o, a=acc, g=get_x, k=s_out:
                                                  a.update(g(o), sq=o[k])))
            else:
                plan.bindings.append(_Binding(tensor, acc, lambda o, a=acc, g=get_x: a.update(g(o))))
        if "gram" in wanted:
            acc = Gram()
            plan.bindings.append(_Binding(tensor, acc, lambda o, a=acc, g=get_x: a.update(g(o))))
        for r in reqs:
            if "contrib" in r.stats:
                # a transformer's tokens are its rows: the padded ones are no samples
                _plan_contrib(plan, r, as_map, None if as_map else token_mask(model.graph, info))
    return plan


def _plan_tokens(plan: _Plan, tensor: str, reqs: list[Request], n_classes: int, mask: str | None) -> None:
    """Transformer tensors [N, T.., F] (features last; also [N·T, F] rows): kind "tokens" reduces over the tokens
    per sample in the graph, (B, F): the F-screen's class sums and APoZ's zero fractions; kind "heads" reduces x²
    over the tokens and each head's `block` features, (B, H), for the per-head F-screen. "gram" is over all tokens
    (every token a row of XᵀX), as are "moments" (Wanda's ‖x_j‖ over all tokens); both fetch the raw tensor. Under
    the attention mask input `mask` (`instrument.token_mask`) all of them count the real tokens only: the graph
    reductions weigh by it, and the rows of padded tokens are dropped before "gram", "moments" (`_real_rows`) and
    relative importance's contributions (`_plan_contrib`)."""
    contrib = [r for r in reqs if r.contrib is not None]  # relative importance: raw tokens as rows (its feed)
    reqs = [r for r in reqs if r.contrib is None]

    kinds = {r.kind for r in reqs}
    if len(kinds) > 1 or len({r.block for r in reqs}) > 1:
        raise OnnxPruneError(f"tensor '{tensor}' is requested with different kinds {sorted(kinds)}; pick one")
    for r in contrib:  # every real token a sample of r_ij, as for "gram" (`_real_rows`)
        _plan_contrib(plan, r, False, mask)
    if not reqs:
        return
    kind, block = reqs[0].kind, reqs[0].block
    wanted = frozenset().union(*(r.stats for r in reqs))
    bad = wanted - ({"class_moments", "zeros", "gram", "moments"} if kind == "tokens" else {"class_moments"})
    if bad:
        raise OnnxPruneError(f"request for '{tensor}': {sorted(bad)} not available for kind '{kind}'")
    if wanted & {"gram", "moments"}:  # over all (real) tokens: every token a row
        x_out = plan.tap(Tap(tensor, "rows"))
        m_out = plan.tap(Tap(mask, "raw")) if mask is not None else None  # a graph input: taken from the feed
        for acc in ([Gram()] if "gram" in wanted else []) + ([Moments()] if "moments" in wanted else []):
            plan.bindings.append(_Binding(tensor, acc, lambda o, a=acc, k=x_out, m=m_out:
                                          a.update(_real_rows(o[k], None if m is None else o[m]))))
    if "class_moments" in wanted:
        first = Tap(tensor, "class_first", view=kind, block=block)
        plan.shifts[first.shift_input] = first
        s_out, ss_out = (plan.tap(replace(first, what=w)) for w in CLASS_SUMS)
        acc = ClassMoments(n_classes)
        plan.bindings.append(_Binding(tensor, acc, lambda o, a=acc, k=first.shift_input, s=s_out, ss=ss_out:
                                      a.add_sums(o[CLASS_COUNT], o[k], o[s], o[ss])))
    if "zeros" in wanted:
        z_out = plan.tap(Tap(tensor, "tzfrac"))
        acc = ZeroCounts(fractions=True)
        plan.bindings.append(_Binding(tensor, acc, lambda o, a=acc, k=z_out: a.update(o[k])))


def _real_rows(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """x's tokens as rows (F last), without the padded ones when the attention mask has one entry per row (the
    rows of [B, T, F] and of [B·T, F] are in sample-major token order, as the mask's); else every row."""
    rows = x.reshape(-1, x.shape[-1])
    if mask is None or mask.size != len(rows):
        return rows
    return rows[mask.reshape(-1) != 0]


def _plan_contrib(plan: _Plan, r: Request, as_map: bool, mask: str | None = None) -> None:
    """Relative importance of the connections into `r.contrib`'s layer. Feature inputs: each row of x a sample
    (a transformer's tokens, [B, T, F] or [B·T, F]), without the padded ones under the attention mask input `mask`
    (`instrument.token_mask`)."""
    spec = r.contrib
    if spec.input != r.tensor:
        raise OnnxPruneError(f"request for '{r.tensor}': layer '{spec.layer}' reads '{spec.input}', not this tensor")
    if (spec.kind == "channels") != as_map:
        raise OnnxPruneError(f"request for '{r.tensor}': contributions into {spec.op} '{spec.layer}' need "
                             f"kind '{spec.kind}'")
    if spec.layer in plan.contrib_inputs:
        return
    acc = Contributions(spec.weight, spec.bias, spec.groups)
    n_in = spec.weight.shape[1] * spec.groups
    act = spec.activation
    plan.contrib_inputs[spec.layer] = r.tensor
    if as_map:
        x_out = plan.tap(Tap(r.tensor, "mean"))
        a_out = plan.tap(Tap(act[0], "active", act[1], act[2])) if act else None

        def feed(o, a=acc, k=x_out, ak=a_out):
            a.update(o[k], active=None if ak is None else o[ak] > 0)
    else:
        view = "raw" if mask is None else "rows"  # [B·T, F] rows have no leading batch axis
        x_out = plan.tap(Tap(r.tensor, view))
        p_out = plan.tap(Tap(act[0], view)) if act else None
        m_out = plan.tap(Tap(mask, "raw")) if mask is not None else None  # a graph input: taken from the feed
        lo, hi = (act[1], act[2]) if act else (None, None)

        def feed(o, a=acc, k=x_out, pk=p_out, lo=lo, hi=hi, n_in=n_in, mk=m_out):
            x = o[k]
            x = x.reshape(-1, n_in) if x.ndim > 2 and x.shape[-1] == n_in else x.reshape(len(x), -1)
            active = None
            if pk is not None:
                p = o[pk].reshape(len(x), -1)
                active = (p > lo) & (p < hi)
            if mk is not None:
                x, active = _real_rows(x, o[mk]), None if active is None else _real_rows(active, o[mk])
            a.update(x, active=active)
    plan.bindings.append(_Binding(spec.layer, acc, feed))


def _label_mode(labels: str, data: Dataset) -> str:
    if labels not in LABEL_MODES:
        raise OnnxPruneError(f"labels must be one of {', '.join(LABEL_MODES)}, got {labels!r}")
    if labels == "true" and not data.labelled:
        raise OnnxPruneError(f"{data.source or 'data'}: no labels ('y') in the data; use --labels predicted "
                             f"(label-free mode: the dense model's own predictions)")
    if labels == "true" or (labels == "auto" and data.labelled):
        return "true"
    return "predicted"


def _infos(model: onnx.ModelProto, data: Dataset, tensors: list[str]) -> dict[str, TensorInfo]:
    """`tensor_infos`, with any requested tensor it could not type (shape inference stopped at an unknown op and
    the input shape is dynamic) typed from one onnxruntime run on the first calibration batch."""
    infos = tensor_infos(model)
    missing = [t for t in dict.fromkeys(tensors) if t not in infos or infos[t].rank is None]
    if missing and len(data):
        from ..io.shapes import runtime_types

        feed = next(data.batches(data.fixed_batch or 1))
        for t, (shape, elem) in runtime_types(model, missing, feed=feed).items():
            infos[t] = TensorInfo(elem, len(shape), (None, *shape[1:]) if shape else ())
    return infos


def _renumbered(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels renumbered 0..G-1 over their G distinct values (the F-statistic only needs the grouping)."""
    values, groups = np.unique(labels, return_inverse=True)
    return groups.astype(np.int64), len(values)


PREDICTED_GROUPS = 10  # quantile groups of a non-classifier's output (label-free mode)


def _output_groups(model: onnx.ModelProto, data: Dataset, kind: str, batch_size: int
                   ) -> tuple[np.ndarray, int, str]:
    """Label-free class statistics for a model whose output is not (N, K) class scores, from one pass of the dense
    model: a per-position output (segmentation) groups each sample by its dominant class (the class with the
    highest score averaged over positions); a regression / embedding output by the decile of its leading principal
    component. The returned label mode says which, so the report names the fallback."""
    from ..io.infer import outputs

    if kind == "dense":  # reduced per batch: memory follows N, not the score maps
        top = outputs(model, data, batch_size, "label-free groups",
                      lambda y: y.reshape(len(y), y.shape[1], -1).mean(axis=2).argmax(axis=1))
        labels, k = _renumbered(top)
        return labels, k, "predicted (dominant class of the per-position output)"
    y = outputs(model, data, batch_size, "label-free groups", lambda y: y.reshape(len(y), -1))
    v = y.astype(np.float64)
    v = v - v.mean(axis=0)
    if v.shape[1] > 1:
        _, _, vt = np.linalg.svd(v[:4096], full_matrices=False)
        v = v @ vt[0]
    else:
        v = v[:, 0]
    edges = np.quantile(v, np.linspace(0, 1, PREDICTED_GROUPS + 1)[1:-1])
    labels, k = _renumbered(np.searchsorted(edges, v, side="right"))
    return labels, k, ("none: the output is not a class score; F-statistic groups are the deciles of the dense "
                       "output's leading principal component")


def _probe_size(model: onnx.ModelProto, infos: dict[str, TensorInfo]) -> int:
    """Samples in the shift probe: 1, or the batch size the model's first input declares if it has a fixed one."""
    first = infos.get(model.graph.input[0].name) if model.graph.input else None
    dim = first.shape[0] if first and first.shape else None
    return dim if isinstance(dim, int) and dim > 0 else 1


def _shifts(sess, model: onnx.ModelProto, data: Dataset, plan: _Plan, infos: dict[str, TensorInfo],
            labels: np.ndarray | None, probe: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The shift each tensor's class sums are taken about (fed as `Tap.shift_input`): its first sample's values.

    One data point shared by all batches: their sums then add up without re-basing, constant (or dead) features give
    exact zeros and large means do not cancel precision away — as in `ClassMoments.update`, whose shift is the first
    sample seen too. Read from the `class_first` taps by one run on the first sample (`_probe_size`) before the pass.
    """
    n = _probe_size(model, infos)
    feed = dict(probe) if probe is not None else next(data.batches(n))
    if labels is not None:
        feed[LABELS] = labels[:len(next(iter(feed.values())))]  # any labels: only the first sample's values count
    for shift, t in plan.shifts.items():  # any value: the sums of this run are not used
        feed[shift] = np.zeros((1, 1), helper.tensor_dtype_to_np_dtype(sum_type(infos[t.tensor].elem_type)))
    outs = next(run_batches(sess, iter([feed]), [t.output for t in plan.shifts.values()]))
    return dict(zip(plan.shifts, outs))


def _run(sess, data: Dataset, plan: _Plan, fetch: list[str], from_feed: list[str], batched: list[str],
         labels: np.ndarray | None, shifts: dict[str, np.ndarray], batch_size: int, progress: str, total: int,
         pipeline: bool) -> int:
    """Run every batch through onnxruntime and the accumulators; `labels` (if given) are fed as LABELS and `shifts`
    with every batch (the accumulators get the shifts with the outputs).

    pipeline=True overlaps the two: a worker thread accumulates batch k while onnxruntime (which releases the GIL)
    runs batch k+1. The hand-over queue holds at most two batches, so memory stays bounded (off by default, see
    `collect`).
    """
    def outputs():
        n = 0
        for feed in data.batches(batch_size):
            b = len(next(iter(feed.values())))
            extra = shifts if labels is None else {**shifts, LABELS: labels[n:n + b]}
            outs = next(run_batches(sess, iter([{**feed, **extra}]), fetch)) if fetch else []
            o = dict(zip(fetch, outs))
            o.update({k: feed[k] for k in from_feed})
            o.update(shifts)
            if n == 0:
                for name in batched:
                    if o[name].ndim == 0 or o[name].shape[0] != b:
                        raise OnnxPruneError(f"tensor '{name}' has shape {o[name].shape}; expected a leading batch "
                                             f"axis of {b}")
            n += b
            yield o, b

    def accumulate(o) -> None:
        for bd in plan.bindings:
            bd.feed(o)

    n = 0
    items = track(outputs(), progress, total=total)
    if not pipeline:
        for o, b in items:
            accumulate(o)
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
                    accumulate(item)
                except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
                    failure.append(e)

    th = threading.Thread(target=worker, name="onnxprune-stats", daemon=True)
    th.start()
    try:
        for o, b in items:
            if failure:
                break
            q.put(o)
            n += b
    finally:
        q.put(None)
        th.join()
    if failure:
        raise failure[0]
    return n


@dataclass
class Partial:
    """The unfinalized, mergeable accumulators of one pass (over all data, or one shard of it: `distributed.py`).

    `merge` adds another shard's accumulators binding by binding (the same requests give the same bindings in the
    same order); `finalize` turns them into `Stats`.
    """

    accumulators: list[tuple[str, object]]  # (name the arrays are stored under, accumulator)
    n: int
    label_mode: str
    meta: dict
    model_hash: str

    def merge(self, other: "Partial") -> "Partial":
        mine = [(t, type(a).__name__) for t, a in self.accumulators]
        theirs = [(t, type(a).__name__) for t, a in other.accumulators]
        if mine != theirs or self.model_hash != other.model_hash:
            raise OnnxPruneError("statistics merge: the partial results are of different requests or models")
        if other.label_mode != self.label_mode:
            raise OnnxPruneError(f"statistics merge: label modes differ ({self.label_mode} vs {other.label_mode})")
        for (_, a), (_, b) in zip(self.accumulators, other.accumulators):
            a.merge(b)
        self.n += other.n
        return self

    def finalize(self) -> Stats:
        arrays: dict[tuple[str, str], np.ndarray] = {}
        for tensor, acc in self.accumulators:
            for k, v in acc.finalize().items():
                arrays[(tensor, k)] = np.asarray(v, dtype=np.float64)
        return Stats(arrays, model_hash=self.model_hash, n=self.n, label_mode=self.label_mode, meta=dict(self.meta))


def collect(model: onnx.ModelProto, data: Dataset, requests: list[Request], *, batch_size: int = 256,
            labels: str = "auto", optimize: str = DEFAULT_OPTIMIZE, progress: str = "statistics",
            pipeline: bool = False) -> Stats:
    """One onnxruntime pass over `data` → finalized statistics for every request.

    labels: "auto" (the data's `y` if present, else the model's predictions), "true" or "predicted" (label-free
    mode: argmax of the model's first output, computed in the same pass). The mode is recorded in `Stats.label_mode`.
    pipeline: accumulate in a worker thread, overlapped with onnxruntime (see `_run`). Off by default: with the class
    sums in the graph it gained nothing beyond noise on the 2-core dev box (ratio to a plain pass without / with,
    Python under `taskset -c 0`: LeNet-300-100 fscreen 1.41–1.48 / 1.45–1.50, all 21.4 / 21.1; ResNet-20 fscreen
    1.22 / 1.20, all 1.71 / 1.85; unpinned, LeNet-300-100 fscreen 1.45 / 1.54 — docs/BENCHMARKS.md).
    """
    return collect_partial(model, data, requests, batch_size=batch_size, labels=labels, optimize=optimize,
                           progress=progress, pipeline=pipeline).finalize()


def class_groups(model: onnx.ModelProto, data: Dataset, requests: list[Request], labels: str, batch_size: int
                 ) -> tuple[np.ndarray, int, str] | None:
    """The class grouping a pass over all of `data` would use when it is not per-sample local: (labels, K, mode)
    for true labels of a non-classifier (renumbered over all samples) or label-free groups of a non-classifier
    (quantiles of the dense output over all samples); None when each shard can find its own (true labels of a
    classifier, or its predictions). A distributed pass computes this once and hands each shard its slice."""
    if not any("class_moments" in r.stats for r in requests):
        return None
    mode = _label_mode(labels, data)
    kind, k = output_kind(model, data_shapes(data))
    if mode == "true":
        return None if k else (*_renumbered(data.labels), "true")
    if kind != "classes":
        return _output_groups(model, data, kind, batch_size)
    return None


def collect_partial(model: onnx.ModelProto, data: Dataset, requests: list[Request], *, batch_size: int = 256,
                    labels: str = "auto", optimize: str = DEFAULT_OPTIMIZE, progress: str = "statistics",
                    pipeline: bool = False, groups: tuple[np.ndarray, int, str] | None = None,
                    threads: int | None = None, probe: dict[str, np.ndarray] | None = None) -> Partial:
    """`collect` without the final step: the pass's accumulators, mergeable with another shard's (`Partial.merge`).

    groups: (labels for these samples, K, label mode) from `class_groups` over the whole data set, for a shard of it.
    threads: onnxruntime's intra-op threads (None: its default; a Ray task uses the CPUs it reserved).
    probe: the feed whose first sample fixes the class sums' shift (`_shifts`): a shard gets the whole data's, so
    every shard's float32 in-graph sums are taken about the same point as one pass's (merging re-bases exactly in
    float64 anyway, but float32 rounding about another shift would differ by ~1e-8).
    """
    if batch_size < 1:
        raise OnnxPruneError(f"batch size must be >= 1, got {batch_size}")
    if not requests:
        raise OnnxPruneError("no statistics requested")
    mode = _label_mode(labels, data)
    infos = _infos(model, data, [r.tensor for r in requests])
    first_out = model.graph.output[0].name
    wants_classes = any("class_moments" in r.stats for r in requests)
    kind, k = output_kind(model, data_shapes(data)) if wants_classes else ("classes", None)
    group_labels = None
    if groups is not None and wants_classes:
        group_labels, n_classes, mode = groups
    elif mode == "true":
        # K from the model's output (io.data checked every label against it); a non-classifier's labels are only
        # groups: renumbered 0..G-1, so memory follows the number of distinct labels, never a label's value
        group_labels, n_classes = (data.labels, k) if k else _renumbered(data.labels)
    elif wants_classes and kind != "classes":
        group_labels, n_classes, mode = _output_groups(model, data, kind, batch_size)
    else:
        shp = infos.get(first_out).shape if first_out in infos else ()
        n_classes = shp[-1] if shp and isinstance(shp[-1], int) else 0
    plan = _plan(model, requests, infos, n_classes)
    classes = Classes(n_classes, None if group_labels is not None else first_out) if plan.shifts else None
    fed_labels = check_labels(group_labels, len(data), data.source or "data", n_classes) \
        if plan.shifts and group_labels is not None else None
    graph_inputs = {i.name for i in model.graph.input}
    from_feed = [t.output for t in plan.taps if t.what == "raw" and t.tensor in graph_inputs]
    taps = [t for t in plan.taps if t.output not in from_feed] + list(plan.shifts.values())
    inst = instrument(model, taps, infos, classes=classes)
    sess = make_session(inst, optimize=optimize, threads=threads)
    fetch = list(dict.fromkeys(t.output for t in plan.taps if t.output not in from_feed))
    if plan.shifts:
        fetch.append(CLASS_COUNT)
    produced = {o.name for o in sess.get_outputs()}
    missing = [f for f in fetch + [t.output for t in plan.shifts.values()] if f not in produced]
    if missing:  # pragma: no cover - onnxruntime keeps graph outputs; this guards against a future change
        raise OnnxPruneError(f"onnxruntime did not expose requested tensors: {', '.join(missing[:5])}")
    batched = list(dict.fromkeys(t.output for t in plan.taps if t.per_sample))
    batch_size = data.batch_size(batch_size)
    total = math.ceil(len(data) / batch_size)
    with single_threaded_blas():
        shifts = _shifts(sess, model, data, plan, infos, fed_labels, probe) if plan.shifts and len(data) else {}
        n = _run(sess, data, plan, fetch, from_feed, batched, fed_labels, shifts, batch_size, progress, total,
                 pipeline)
    meta = {"n_classes": n_classes, "batch_size": batch_size, "optimize": optimize,
            "contrib_inputs": plan.contrib_inputs,
            "requests": [{"tensor": r.tensor, "kind": r.kind, "stats": sorted(r.stats), "layer": r.layer}
                         for r in requests]}
    return Partial([(bd.tensor, bd.acc) for bd in plan.bindings], n, mode, meta, model_hash(model))


def stream(model: onnx.ModelProto, data: Dataset, tensors: list[str], *, batch_size: int = 256,
           optimize: str = DEFAULT_OPTIMIZE) -> Iterator[dict[str, np.ndarray]]:
    """Yield {tensor: raw value} per batch (full maps, unreduced) for the given tensors, in data order.

    Tensors that are graph inputs are passed through from the feed. Requested intermediates become graph outputs,
    which onnxruntime never fuses away, of a model cut to the nodes they depend on (`graph.subgraph.upstream`):
    onnxruntime runs every node of a session whatever is fetched, and layer-by-layer callers fetch early tensors.
    """
    if not tensors:
        raise OnnxPruneError("stream: no tensors requested")
    inputs = {i.name for i in model.graph.input}
    inner = [t for t in dict.fromkeys(tensors) if t not in inputs]
    infos = _infos(model, data, inner)
    for t in inner:
        if t not in infos:
            raise OnnxPruneError(f"stream: no tensor '{t}' in the model (or its type is unknown)")
    sess = None
    if inner:
        inst = instrument(upstream(model, inner), [Tap(t, "raw") for t in inner], infos, keep_outputs=False)
        sess = make_session(inst, optimize=optimize)
    for feed in data.batches(batch_size):
        outs = next(run_batches(sess, iter([feed]), inner)) if inner else []
        got = dict(zip(inner, outs))
        yield {t: (feed[t] if t in inputs else got[t]) for t in tensors}
