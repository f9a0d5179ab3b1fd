"""Block-by-block forward for the re-fit: each fitted layer's input carried over from the previous step.

A layer-by-layer re-fit needs every layer's input as the model *re-fitted so far* computes it. Running the model
from the data up to each layer costs one partial pass per layer (depth × data). Here the graph is cut into pieces at
the requested tensors, in order (as SparseGPT / OBC pipelines run block by block): each piece runs once over the
samples, starting from the tensors earlier pieces left behind (the "carried" tensors, held for every sample), with
the weights as they are when the piece starts. Total work: one pass of the model plus one small session per piece.
Memory: the carried tensors of every sample (`bytes_per_sample` lets the caller size the sample count) plus a batch.

Shape-like nodes (Shape, Size and what is computed from them and constants only) are re-run by every piece that needs
them rather than carried: their values depend on the batch, not on the samples. A carried tensor must have the
sample axis first; one that does not (a [T, B, D] attention export) is found before anything is yielded, and from
then on each request is a pass from the data (the old cost, the same values).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx

from ..io.data import Dataset
from ..io.runtime import make_session, run_batches
from ..io.shapes import data_shapes, tensor_shapes
from ..io.subgraph import between, piece, reads
from ..progress import say
from ..stats.collect import DEFAULT_OPTIMIZE, stream
from ..stats.instrument import mask_inputs, tensor_infos

SHAPE_OPS = {"Shape", "Size"}
CARRY_BYTES = 768 << 20  # the carried tensors of all re-fit samples: the sample count is cut to fit (and said)
MIN_SAMPLES = 64  # ... but never below this many samples


def affordable(forwards: list[tuple[BlockForward, onnx.ModelProto]], data: Dataset, wanted: int) -> int:
    """How many of `data`'s samples (at most `wanted`) the forwards can carry within CARRY_BYTES — at least
    MIN_SAMPLES; a cut is said. ResNet-50 at 224², half its channels pruned: 3.6 MB a sample, so 211 samples."""
    per = sum(f.bytes_per_sample(tensor_shapes(m, data_shapes(data))) for f, m in forwards)
    want = min(wanted, len(data))
    count = min(want, max(MIN_SAMPLES, CARRY_BYTES // max(per, 1)))
    if count < want:
        say(f"note: the re-fit uses {count} of {len(data)} calibration samples: carrying the layer inputs of more "
            f"({per / 2**20:.1f} MB per sample) would exceed {CARRY_BYTES / 2**30:.2f} GB")
    return count


def real_tokens(model: onnx.ModelProto, data: Dataset) -> np.ndarray | None:
    """(N, T) bool: which tokens of `data` are real (not padding) under the model's attention mask input (a graph
    input named `*mask*` of rank 2, as the statistics read it: `stats.instrument.mask_inputs`), when it has exactly
    one; else None. A re-fit on token rows drops the padded ones: padding is no input the model is fitted for."""
    names = mask_inputs(model.graph)
    if len(names) != 1 or names[0] not in data.inputs or np.ndim(data.inputs[names[0]]) != 2:
        return None
    return np.asarray(data.inputs[names[0]]) != 0


def real_rows(tokens: np.ndarray | None, i: int, j: int, rows: int) -> np.ndarray | None:
    """Which of the `rows` rows of samples i..j to keep: their real tokens when the rows are those samples' tokens
    in sample-major order ([B, T, F] or [B·T, F] features last: rows = (j − i)·T); None (keep all) otherwise."""
    if tokens is None or rows != (j - i) * tokens.shape[1]:
        return None
    return tokens[i:j].reshape(-1)


@dataclass(frozen=True)
class _Piece:
    tensor: str  # the requested tensor
    inputs: tuple[str, ...]  # carried tensors and graph inputs the piece reads
    outputs: tuple[str, ...]  # what it computes that later pieces read (and the requested tensor)
    carried: tuple[str, ...]  # tensors held for every sample after this piece


class _NotSampleLeading(Exception):
    pass


class BlockForward:
    """The requested tensors of `model`, in order, each computed once over the data from what the step before left.

    Planned from the graph alone (`model` is read for its structure and types); `run` takes the model whose weights
    change between steps."""

    def __init__(self, model: onnx.ModelProto, requests: list[str]) -> None:
        g = model.graph
        nodes = list(g.node)
        inits = {t.name for t in g.initializer}
        self.graph_inputs = {i.name for i in g.input} - inits
        producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
        data_reads = [[x for x in reads(n) if x in producer or x in self.graph_inputs] for n in nodes]
        shape_like: set[int] = set()
        for i, n in enumerate(nodes):  # graph order is topological
            if n.op_type in SHAPE_OPS or all(producer.get(x) in shape_like for x in data_reads[i]):
                shape_like.add(i)
        self._types = {k: v.elem_type for k, v in tensor_infos(model).items()}

        def upward(start: list[str], stop) -> set[int]:
            found: set[int] = set()
            stack = list(start)
            while stack:
                i = producer.get(stack.pop())
                if i is None or i in found or stop(i):
                    continue
                found.add(i)
                stack.extend(data_reads[i])
            return found

        needed = upward(list(requests), lambda i: False) - shape_like
        done: set[int] = set()
        self.pieces: list[_Piece] = []
        for k, t in enumerate(requests):
            seg = upward([t], lambda i: i in done)  # carried tensors come from done nodes: the walk stops there
            done |= seg - shape_like
            rest = needed - done
            rest |= upward([x for i in rest for x in data_reads[i]], lambda i: i not in shape_like)
            # a tensor is live while a node still to run reads it, or a later request is it: the layer fitted on a
            # request need not lead to any later one (LR-ASPP's head reads an early feature map after the backbone)
            live = {x for i in rest for x in data_reads[i] if producer.get(x) in done}
            live |= {x for x in requests[k + 1:] if producer.get(x) in done}
            made = [o for i in sorted(seg) for o in nodes[i].output if o]
            inputs = sorted({x for i in seg for x in data_reads[i]} - set(made))
            outputs = [o for o in made if o in live or o == t]
            self.pieces.append(_Piece(t, tuple(inputs), tuple(outputs), tuple(sorted(live))))

    def bytes_per_sample(self, shapes: dict[str, tuple]) -> int:
        """The most bytes per sample held at once: what is carried into a piece plus what it computes."""
        def size(t: str) -> int:
            dims = shapes.get(t) or ()
            per = int(np.prod([d if isinstance(d, int) and d > 0 else 1 for d in dims[1:]], dtype=np.int64))
            return per * onnx.helper.tensor_dtype_to_np_dtype(self._types.get(t, onnx.TensorProto.FLOAT)).itemsize
        before: tuple[str, ...] = ()
        peak = 0
        for p in self.pieces:
            peak = max(peak, sum(size(t) for t in set(before) | set(p.outputs)))
            before = p.carried
        return peak

    def run(self, model: onnx.ModelProto, data: Dataset, batch: int,
            optimize: str = DEFAULT_OPTIMIZE) -> Iterator[Iterator[np.ndarray]]:
        """Per request, in order: its values batch by batch (the batches of `data.batches(batch)`).

        Each step is built when the caller advances to it, from `model` as it is then — the caller re-fits a layer
        in place between steps; a step's chunks must be consumed before the next step starts."""
        size = data.batch_size(batch)
        n = len(data) - (len(data) % data.fixed_batch if data.fixed_batch else 0)
        bounds = [(i, min(i + size, n)) for i in range(0, n, size)]
        store: dict[str, np.ndarray] = {}
        from_data = False
        for p in self.pieces:
            if not from_data:
                try:
                    store = {**store, **self._run_piece(p, model, data, batch, bounds, store)}
                except _NotSampleLeading:
                    from_data, store = True, {}
            if from_data:
                yield (b[p.tensor] for b in stream(model, data, [p.tensor], batch_size=batch, optimize=optimize))
                continue
            if p.tensor in store:
                value = store[p.tensor]
                yield (value[i:j] for i, j in bounds)
            else:  # a graph input
                yield (feed[p.tensor] for feed in data.batches(batch))
            store = {k: v for k, v in store.items() if k in p.carried}

    def _run_piece(self, p: _Piece, model: onnx.ModelProto, data: Dataset, batch: int,
                   bounds: list[tuple[int, int]], store: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not p.outputs:
            return {}
        # the nodes are taken from the model as it is now: a re-fit may have added a bias Add after a MatMul
        nodes = between(model, set(p.inputs), list(p.outputs))
        typed = [(x, self._types.get(x, onnx.TensorProto.FLOAT)) for x in p.inputs]
        proto = piece(model, nodes, typed, [(x, self._types.get(x, onnx.TensorProto.FLOAT)) for x in p.outputs])
        sess = make_session(proto, optimize=DEFAULT_OPTIMIZE)
        n = bounds[-1][1] if bounds else 0
        out: dict[str, np.ndarray] = {}

        def feeds():  # the data is read only by pieces that take a graph input
            source = data.batches(batch) if set(p.inputs) & self.graph_inputs else itertools.repeat({})
            for (i, j), feed in zip(bounds, source):
                yield {x: feed[x] if x in self.graph_inputs else store[x][i:j] for x in p.inputs}
        for (i, j), values in zip(bounds, run_batches(sess, feeds(), list(p.outputs))):
            for name, v in zip(p.outputs, values):
                if v.ndim == 0 or len(v) != j - i:
                    raise _NotSampleLeading(name)
                if name not in out:
                    out[name] = np.empty((n, *v.shape[1:]), v.dtype)
                elif out[name].shape[1:] != v.shape[1:]:
                    raise _NotSampleLeading(name)
                out[name][i:j] = v
        return out
