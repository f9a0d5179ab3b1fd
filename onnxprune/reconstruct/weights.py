"""Least-squares re-fit after weight masking (unstructured): OBS / SparseGPT-style, one layer at a time, the models
run block by block (`blocks.BlockForward`) so the cost is one pass of each, not one per layer."""
from __future__ import annotations

import numpy as np
import onnx

from ..io.data import Dataset
from ..io.graph import copy_model, initializer_map, set_initializer
from ..io.model import validate
from ..rewrite.dead_neurons import remove as remove_dead_neurons
from ..rewrite.masks import masked
from ..select.plan import Plan, PruneSettings
from ..units.weights import linear_form, weight_layers
from .blocks import BlockForward, affordable, real_rows, real_tokens
from .least_squares import PairedGram, refit_linear


def refit_weights(dense: onnx.ModelProto, pruned: onnx.ModelProto, plan: Plan, data: Dataset,
                  settings: PruneSettings) -> onnx.ModelProto:
    """Re-fit the kept weights (and bias) of every pruned FC layer, in graph order, so each layer is fitted to the
    dense layer's outputs on the inputs the already re-fitted upstream now produces. Protected layers (not in the
    plan) stay untouched, and Conv layers keep their masked weights (noted in the report)."""
    layers = weight_layers(dense)
    maps, _ = remove_dead_neurons(masked(dense, plan), layers)  # the neuron removal `apply` did → index maps
    work = copy_model(pruned)
    wd = initializer_map(dense)
    order = [L for L in layers if L.weight in plan.masks and L.op != "Conv"]
    if not order:
        validate(work)
        return work
    # both models block by block (linear in depth): the dense inputs never change, the pruned ones are computed
    # with the layers re-fitted so far (each step is built after the write-back of the step before)
    wanted = [L.input for L in order]
    fwd_dense, fwd_work = BlockForward(dense, wanted), BlockForward(work, wanted)
    count = affordable([(fwd_dense, dense), (fwd_work, work)], data, len(data))
    if count < len(data):
        data = data.subset(np.unique(np.linspace(0, len(data) - 1, count).astype(int)))
    batch = settings.batch_size
    steps = zip(fwd_dense.run(dense, data, batch), fwd_work.run(work, data, batch))
    tokens, size = real_tokens(dense, data), data.batch_size(batch)  # padded token rows are left out of the sums
    for L, (dense_in, pruned_in) in zip(order, steps):
        lin = linear_form(dense, L)
        rows = maps.get(L.weight, {}).get("out", np.arange(L.shape[L.out_axis]))
        cols = maps.get(L.weight, {}).get("in", np.arange(L.shape[L.in_axis]))
        keep = L.rows(plan.masks.get(L.weight, np.ones(L.shape, bool)))[np.ix_(rows, cols)]
        w_eff = lin.alpha * L.rows(wd[L.weight].astype(np.float64))[rows]
        b_eff = None if lin.bias is None else \
            lin.beta * np.broadcast_to(wd[lin.bias].astype(np.float64).reshape(-1), (L.shape[L.out_axis],))[rows]
        gram = PairedGram()
        for k, (xd, xp) in enumerate(zip(dense_in, pruned_in)):
            i = k * size
            gram.update(xp, xd, real_rows(tokens, i, min(i + size, len(data)), xp.size // max(xp.shape[-1], 1)))
        fit_bias = lin.in_node and lin.bias is not None and wd[lin.bias].size == L.shape[L.out_axis]
        w_new, b_new = refit_linear(gram, w_eff, b_eff, keep, settings.ridge, fit_bias)
        cur = next(x for x in weight_layers(work) if x.weight == L.weight)
        set_initializer(work, L.weight, cur.from_rows(w_new / lin.alpha).astype(wd[L.weight].dtype))
        if b_new is not None:  # fitted, or reset to the dense bias (undoing constants folded by neuron removal)
            shape = next(tuple(t.dims) for t in work.graph.initializer if t.name == lin.bias)
            v = b_new / lin.beta
            v = v[:1] if int(np.prod(shape)) == 1 else v
            set_initializer(work, lin.bias, v.reshape(shape).astype(wd[lin.bias].dtype))
    validate(work)
    return work
