"""Least-squares re-fit after channel removal: every layer that lost input channels, against the dense model.

Constants here are measured choices (docs/BENCHMARKS.md): more images help up to ~2k, conv layers are fitted on a
seeded sample of output positions, and the dense pass holds every target layer's output for one batch.
"""
from __future__ import annotations

import numpy as np
import onnx

from ..io.data import Dataset
from ..io.graph import attr, constant, copy_model, initializer_map, node_by_name, set_initializer
from ..io.model import validate
from ..io.shapes import data_shapes, tensor_shapes
from ..select.plan import Plan, PruneSettings
from ..stats import stream
from ..units.groups import ChannelGroup, analyse
from .blocks import BlockForward, affordable, real_rows, real_tokens
from .least_squares import ridge_refit_all

RECON_SAMPLES = 2048  # calibration images for the re-fit; ResNet-20, BN-γ at 50 %: 512 → 53 %, 2048 → 57 %, 5000 → 58 %
RECON_ROWS_PER_UNKNOWN = 8  # conv layers: sample about this many patch rows per fitted weight of a filter
RECON_POSITIONS = (4, 32)  # ... using between 4 and 32 output positions per image
RECON_BATCH = 64  # samples per Gram update (and at most per dense batch)
RECON_DENSE_BYTES = 256 << 20  # the dense pass holds every target layer's full output for one batch: at most this


def refit_channels(dense: onnx.ModelProto, pruned: onnx.ModelProto, plan: Plan, data: Dataset,
                   settings: PruneSettings) -> onnx.ModelProto:
    """Ridge re-fit of every layer that lost input channels, in graph order, against the dense layer's outputs.

    Layer by layer, the pruned model (already re-fitted upstream) supplies the inputs X̃ and the dense model the
    targets T (the layer's full output, bias included); the kept weights and a bias solve
    (X̃ᵀX̃ + λI) W = X̃ᵀT (`least_squares.ridge_refit_all`). Conv inputs are unfolded into patches (im2col) at a seeded
    sample of output positions (any number of spatial axes: Conv1d, 2d, 3d). Grouped convs, ConvTranspose and auto_pad
    convs are left as they are.

    Linear in depth: one dense pass collects every layer's targets (at the sampled positions only), and the pruned
    model runs block by block (`blocks.BlockForward`), each layer's input carried over from the step before, so the
    pruned model makes one pass in all rather than one per layer. Memory: the carried tensors of the re-fit samples
    (their number is cut to fit `blocks.CARRY_BYTES`, and said), the targets, one batch.
    """
    dropped = set(plan.channels)
    groups = {g.id: g for g in analyse(dense)}
    targets = {m.node for gid in dropped for m in groups[gid].members if m.role == "consumer"}
    model = copy_model(pruned)
    order = [n.name for n in dense.graph.node if n.name in targets and _refittable(n)]
    if not order:
        return validate(model)
    blocks = BlockForward(model, [node_by_name(model, name).input[0] for name in order])
    count = affordable([(blocks, model)], data, RECON_SAMPLES)
    sub = data.subset(np.unique(np.linspace(0, len(data) - 1, count).astype(int)))
    rng = np.random.default_rng(settings.seed)
    nodes_d = {name: node_by_name(dense, name) for name in order}
    batch = min(RECON_BATCH, settings.batch_size)
    # one dense pass: every layer's targets at its sampled output positions (kept output channels only)
    positions: dict[str, np.ndarray | None] = {}
    wanted: dict[str, np.ndarray] = {}
    outs = [nodes_d[name].output[0] for name in order]
    inits = initializer_map(model)
    unknowns = {name: int(np.prod(inits[node_by_name(model, name).input[1]].shape[1:])) + 1 for name in order}
    done, dense_batch = 0, sub.batch_size(_dense_batch(dense, sub, outs, batch))
    for yb in stream(dense, sub, outs, batch_size=dense_batch):
        nb = min(dense_batch, len(sub) - done)  # samples in this batch (a [B·T, F] output has B·T rows, not B)
        for name in order:
            y = yb[nodes_d[name].output[0]]
            conv = nodes_d[name].op_type == "Conv"
            out_keep = _kept_outputs(groups, plan, name)
            if out_keep is not None:  # this layer's own output channels were pruned too: fit only the kept ones
                y = np.take(y, out_keep, axis=1 if conv else -1)
            if name not in positions:
                positions[name] = _sample_positions(y, rng, unknowns[name], len(sub)) if conv else None
            rows = _rows(y, positions[name])
            if name not in wanted:
                wanted[name] = np.empty((len(sub) * len(rows) // nb, rows.shape[1]), np.float32)
            per = len(wanted[name]) // len(sub)
            wanted[name][done * per:(done + nb) * per] = rows
        done += nb
    # layer by layer, inputs from the pruned model as re-fitted so far, carried block to block; token rows of
    # padding (attention mask 0) are left out of the sums
    tokens, size = real_tokens(model, sub), sub.batch_size(batch)
    for name, chunks in zip(order, blocks.run(model, sub, batch)):
        node_p = node_by_name(model, name)
        w = constant(model, node_p.input[1])  # this layer's weight only (all of them, every layer: depth²)
        h = c = None
        tt = 0.0
        start = 0  # in rows: the targets were stored in the same sample order, `per` rows a sample
        for k, xin in enumerate(chunks):
            x = _design(node_p, w, xin, positions[name])
            t = wanted[name][start:start + len(x)]
            start += len(x)
            i = k * size
            real = real_rows(tokens, i, min(i + size, len(sub)), len(x)) if positions[name] is None else None
            if real is not None:
                x, t = x[real], t[real]
            x = np.hstack([x, np.ones((len(x), 1), np.float32)])
            if h is None:
                h, c = np.zeros((x.shape[1], x.shape[1])), np.zeros((x.shape[1], t.shape[1]))
            # float32 BLAS, float64 sums, in place: a wide layer's Gram (4,177 unknowns: 0.13 GB in float64) is
            # held once, next to one float32 batch product, instead of old sum + batch + new sum
            h += x.T @ x
            c += x.T @ t
            tt = tt + np.square(t, dtype=np.float64).sum(0)
            del x, t
        del wanted[name]
        wb = ridge_refit_all(h, c, settings.ridge)  # every input kept; H factored in place and restored
        wb = _repair_variance(wb, h, c, tt)
        del h, c
        _write_back(model, node_p, w, wb)
    return validate(model)


def _dense_batch(dense: onnx.ModelProto, data: Dataset, outs: list[str], batch: int) -> int:
    """The dense pass's batch: at most `batch`, and every target layer's full output for it within
    RECON_DENSE_BYTES."""
    shapes = tensor_shapes(dense, data_shapes(data))
    per = sum(int(np.prod([d if isinstance(d, int) and d > 0 else 1 for d in (shapes.get(t) or ())[1:]],
                          dtype=np.int64)) * 4 for t in outs)
    return int(max(1, min(batch, RECON_DENSE_BYTES // max(per, 1))))


def _repair_variance(wb: np.ndarray, h: np.ndarray, c: np.ndarray, tt: np.ndarray) -> np.ndarray:
    """Rescale each fitted output so its variance over the fit rows equals the dense target's (mean kept).

    Least squares shrinks: the fitted outputs have variance R²·var(target). Downstream BN and activations expect
    the dense spread, so each output channel j is scaled by std(t_j)/std(ŷ_j) about its mean (REPAIR-style
    statistic repair). All moments come from the accumulated sums: Σ[x 1] is h's last row, Σt is c's last row."""
    n = h[-1, -1]
    mean_p = (wb @ h[-1]) / n
    var_p = ((wb @ h) * wb).sum(1) / n - mean_p ** 2  # diag(W H Wᵀ) through one GEMM (einsum looped: 0.5 s a layer)
    mean_t = c[-1] / n
    var_t = tt / n - mean_t ** 2
    ok = (var_p > 0) & (var_t > 0)
    scale = np.where(ok, np.sqrt(np.where(ok, var_t, 1.0) / np.where(ok, var_p, 1.0)), 1.0)
    out = wb * scale[:, None]
    out[:, -1] = mean_t - scale * (mean_p - wb[:, -1])
    return out


def _sample_positions(y: np.ndarray, rng: np.random.Generator, unknowns: int, n: int) -> np.ndarray:
    """Flat output positions (over the spatial axes of any rank: Conv1d / 2d / 3d) sampled once per conv layer.

    Enough rows for a well-posed fit (about RECON_ROWS_PER_UNKNOWN per unknown) without paying for more."""
    hw = int(np.prod(y.shape[2:], dtype=np.int64))
    lo, hi = RECON_POSITIONS
    p = int(np.clip(np.ceil(RECON_ROWS_PER_UNKNOWN * unknowns / n), lo, hi))
    return np.sort(rng.choice(hw, size=min(p, hw), replace=False))


def _rows(y: np.ndarray, pos: np.ndarray | None) -> np.ndarray:
    """Targets as rows: (N·P, C) at the sampled positions for conv maps, (N, F) otherwise."""
    if pos is None:
        return y.reshape(-1, y.shape[-1]).astype(np.float32)
    n, c = y.shape[:2]
    return y.reshape(n, c, -1)[:, :, pos].transpose(0, 2, 1).reshape(-1, c).astype(np.float32)


def _kept_outputs(groups: dict[str, ChannelGroup], plan: Plan, node: str) -> np.ndarray | None:
    """Dense indices of the output channels `node` keeps, or None when its outputs were not pruned. Over every
    producer member of the node: a branch tied by a channel shuffle makes channels of several units (and groups)."""
    out, pruned = [], False
    for g in groups.values():
        kept = plan.channels.get(g.id)
        for m in g.members:
            if m.role == "producer" and m.node == node:  # via the member: offsets and conv-group tiles applied
                pruned = pruned or kept is not None
                out.append(m.indices(np.asarray(kept if kept is not None else range(g.size))))
    return np.unique(np.concatenate(out)) if pruned else None


def _refittable(node: onnx.NodeProto) -> bool:
    if node.op_type == "Conv":
        return attr(node, "group", 1) == 1 and attr(node, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
    if node.op_type == "Gemm":
        return attr(node, "alpha", 1.0) == 1.0 and attr(node, "beta", 1.0) == 1.0 and not attr(node, "transA", 0)
    return node.op_type == "MatMul"


def _design(node: onnx.NodeProto, w: np.ndarray, x: np.ndarray, pos: np.ndarray | None) -> np.ndarray:
    """Input rows matching `_rows`: im2col patches at the sampled positions for Conv (any number of spatial axes),
    feature rows otherwise."""
    if node.op_type != "Conv":
        return x.reshape(-1, x.shape[-1]).astype(np.float32)
    k = w.shape[2:]
    nd = len(k)
    strides = attr(node, "strides", [1] * nd)
    dil = attr(node, "dilations", [1] * nd)
    pads = attr(node, "pads", [0] * (2 * nd))
    xp = np.pad(x, ((0, 0), (0, 0), *((pads[i], pads[i + nd]) for i in range(nd))))
    win = np.lib.stride_tricks.sliding_window_view(xp, tuple((k[i] - 1) * dil[i] + 1 for i in range(nd)),
                                                   axis=tuple(range(2, 2 + nd)))
    win = win[(slice(None), slice(None), *(slice(None, None, s) for s in strides),
               *(slice(None, None, d) for d in dil))]  # (N, C, out..., k...)
    coords = np.unravel_index(pos, win.shape[2:2 + nd])
    patches = win[(slice(None), slice(None), *coords)]  # (N, C, P, k...)
    return patches.transpose(0, 2, 1, *range(3, 3 + nd)).reshape(len(x) * len(pos), -1).astype(np.float32)


def _write_back(model: onnx.ModelProto, node: onnx.NodeProto, w: np.ndarray, wb: np.ndarray) -> None:
    """Store the fitted weights in the node's layout and its bias (adding a bias input to a bias-free Conv)."""
    weights, bias = wb[:, :-1], wb[:, -1]
    if node.op_type == "Conv":
        new_w = weights.reshape(w.shape)
    elif node.op_type == "Gemm" and attr(node, "transB", 0):
        new_w = weights
    else:  # Gemm without transB and MatMul keep W as (in, out)
        new_w = weights.T
    set_initializer(model, node.input[1], new_w.astype(w.dtype))
    if node.op_type == "MatMul":
        _add_after_matmul(model, node, bias.astype(w.dtype))
        return
    if len(node.input) < 3 or not node.input[2]:
        name = f"{node.name}.reconstructed_bias"
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = name
    set_initializer(model, node.input[2], bias.astype(w.dtype).reshape(-1))


def _add_after_matmul(model: onnx.ModelProto, node: onnx.NodeProto, bias: np.ndarray) -> None:
    """MatMul has no bias input: the fitted bias goes into an Add right after it."""
    if np.allclose(bias, 0):
        return
    out = node.output[0]
    node.output[0] = f"{out}.pre_bias"
    bname = f"{node.name}.reconstructed_bias"
    set_initializer(model, bname, bias)
    idx = list(model.graph.node).index(node)
    model.graph.node.insert(idx + 1, onnx.helper.make_node("Add", [node.output[0], bname], [out],
                                                            name=f"{node.name}.bias_add"))
