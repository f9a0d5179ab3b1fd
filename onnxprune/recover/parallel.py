"""Data-parallel recovery: one distillation run on N processes through torch.distributed (DDP, gloo on CPU).

This module is the rank side: what one process of a process group does differently from a single-process run.
`Distiller` (distill.py) asks `current()` once; when it gets a `DataParallel`, every training step

* forms the same global batch as a single process would (every rank builds the same Distiller: same seed → same
  split, order, augmentation and mixing draws) and keeps its contiguous share of the rows (`shard`: sizes differ
  by at most one row);
* runs the teacher and the student on that share only, the student wrapped in
  `torch.nn.parallel.DistributedDataParallel`, which averages the gradients over the ranks;
* scales the gradient of every student output by W·n_r/N (W ranks, n_r rows here, N in the global batch), so DDP's
  average is the gradient of the global-batch mean loss even when the shares are unequal;
* computes train-mode BatchNorm statistics over the global batch: every rank's per-channel (mean, variance,
  count) are exchanged by one all-reduce (torch's functional collective, differentiable: the backward pass
  all-reduces the statistics' gradients) and pooled — `torch.nn.SyncBatchNorm`'s semantics, which torch
  implements for GPUs only. Running statistics move with the global batch's mean and unbiased variance, as
  `F.batch_norm`'s do.

Everything else — held-out agreement, BN alignment and re-estimation, best-epoch choice, early stopping — runs
whole on every rank: identical weights (all-reduce results are the same on every rank) give identical decisions
without communication (the cost: those passes are not shared out). A 2-process run matches the single-process run
within float tolerance step for step (`tests/recover/test_parallel.py`; over many steps an unstable training phase
amplifies float rounding, as a mere change of memory layout does in one process: docs/ARCHITECTURE.md). Wall-clock
decisions (a time budget) would differ between ranks, so they are refused. Feature targets (`feature_weight`)
normalise by a per-rank variance and are not exact in this mode. Rank 0 writes the model; the others write nothing.

How the process group comes about is not this module's business beyond `joined()`: `--workers N` spawns N local
processes (`recover/launch.py`), `torchrun` sets the environment that `joined()` reads, Ray Train's TorchTrainer
initialises the group itself.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import OnnxPruneError

_CURRENT: "DataParallel | None" = None


def group_size() -> int:
    """World size of the active default process group (1 when there is none)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun (or anything setting its environment)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ and "MASTER_ADDR" in os.environ


def current() -> "DataParallel | None":
    """The data-parallel setting of this process inside `joined()`, else None (single-process training)."""
    return _CURRENT


@contextlib.contextmanager
def joined() -> Iterator["DataParallel | None"]:
    """Train data-parallel inside this block when this process belongs to a process group of ≥ 2 ranks: the one
    already initialised (Ray Train, the `--workers` launcher) or, under torchrun, one joined here from the
    environment (gloo, destroyed again on exit). Yields the `DataParallel` (None: single process)."""
    global _CURRENT
    import torch.distributed as dist

    created = False
    if not dist.is_initialized() and launched_by_torchrun():
        dist.init_process_group("gloo")
        created = True
    try:
        if group_size() < 2:
            yield None
            return
        old, _CURRENT = _CURRENT, DataParallel()
        try:
            yield _CURRENT
        finally:
            _CURRENT = old
    finally:
        if created:
            dist.destroy_process_group()


class DataParallel:
    """One rank's part of a data-parallel distillation (see the module docstring)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise OnnxPruneError("data-parallel recovery needs an initialised torch.distributed process group")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self._student: _Student | None = None
        self._scale = 1.0  # W·n_r/N of the current batch (`shard`)

    def shard(self, batch: dict[str, np.ndarray], rows: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """This rank's contiguous share of a global batch (and of its row indices)."""
        if len(rows) < self.world:
            raise OnnxPruneError(f"a batch of {len(rows)} samples cannot be shared by {self.world} processes: the "
                                 f"last batch of an epoch needs at least one sample per process (change --batch-size "
                                 f"or the number of processes)")
        lo, hi = share(len(rows), self.rank, self.world)
        self._scale = self.world * (hi - lo) / len(rows)
        return {k: v[lo:hi] for k, v in batch.items()}, rows[lo:hi]

    def student(self, graph: Any) -> "_Student":
        """The DDP-wrapped student for `graph` (wrapped again when `set_student` swaps in another graph)."""
        if self._student is None or self._student.graph is not graph:
            self._student = _Student(graph, self)
        return self._student

    def total(self, sums: np.ndarray) -> np.ndarray:
        """Per-rank sums (e.g. loss × rows) added over the ranks."""
        import torch.distributed as dist

        t = torch.from_numpy(np.asarray(sums, dtype=np.float64).copy())
        dist.all_reduce(t)
        return t.numpy()


def share(n: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi) of rank `rank`'s share of n rows: contiguous, np.array_split's sizes (the first n % W ranks get one
    row more)."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


class _Runner(torch.nn.Module):
    """`graph.run` as a module's forward, so DDP sees the call (its hooks arm the gradient all-reduce)."""

    def __init__(self, graph: Any):
        super().__init__()
        self.graph = graph

    def forward(self, feed: dict[str, torch.Tensor], fetch: list[str] | None = None) -> dict[str, torch.Tensor]:
        return self.graph.run(feed, fetch=fetch)


class _Student:
    """What `train_step` needs of a student (`run`, `output_names`, `tensor`), with the forward pass through DDP,
    output gradients scaled to this rank's share of the global batch, and BatchNorm statistics synchronised."""

    def __init__(self, graph: Any, dp: DataParallel):
        from torch.nn.parallel import DistributedDataParallel

        self.graph, self.dp = graph, dp
        self.output_names = graph.output_names
        self.tensor = graph.tensor
        # no buffer broadcast before each forward: BN running statistics move identically on every rank
        self.ddp = DistributedDataParallel(_Runner(graph), forward_sync_buffers=False)
        # 1×1 conv weights' gradients come channels-last from channels-last inputs: the same memory as the bucket's
        # contiguous view (size-1 dims), different strides; DDP copies them and warns once per rank
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

    def run(self, feed: dict[str, torch.Tensor], fetch: list[str] | None = None) -> dict[str, torch.Tensor]:
        scale = self.dp._scale
        self.graph.bn_train = sync_batch_norm
        try:
            out = self.ddp(feed, list(fetch) if fetch is not None else None)
        finally:
            self.graph.bn_train = None
        if scale == 1.0:
            return out
        # scaled once, where the loss reads a tensor: the graph itself keeps the unscaled ones, so a gradient that
        # reaches a fetched tensor through a later fetched one (logits → an activation) is not scaled twice
        return {k: _ScaleGrad.apply(t, scale) if t.requires_grad else t for k, t in out.items()}


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient times `scale` backward."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return t.view_as(t)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def sync_batch_norm(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                    running_var: torch.Tensor, momentum: float, eps: float) -> torch.Tensor:
    """Train-mode batch normalisation with the statistics of the global batch (all ranks' rows).

    Each rank's (mean, variance, count) — torch.var_mean, two-pass — goes into its row of a W-row table that one
    all-reduce fills for everyone (an all-gather as a sum: one collective forward, one backward); the global
    statistics are Chan's pooled combination, so no E[x²] − E[x]² cancellation anywhere. Differentiable: the
    all-reduce's backward all-reduces the table's gradient, which reaches every rank's rows."""
    import torch.distributed as dist
    import torch.distributed._functional_collectives as funcol

    rank, world = dist.get_rank(), dist.get_world_size()
    dims = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    c = x.shape[1]
    xf = x.float()  # statistics in float32 also when the step runs under bfloat16 autocast
    var_r, mean_r = torch.var_mean(xf, dims, unbiased=False)
    row = torch.cat([mean_r, var_r, xf.new_full((1,), float(x.numel() // max(1, c)))])
    table = F.pad(row.unsqueeze(0), (0, 0, rank, world - rank - 1))
    table = funcol.wait_tensor(funcol.all_reduce(table, "sum", dist.group.WORLD))
    means, variances, counts = table[:, :c], table[:, c:2 * c], table[:, 2 * c:]
    n = counts.sum()
    mean = (counts * means).sum(0) / n
    var = (counts * (variances + (means - mean) ** 2)).sum(0) / n
    with torch.no_grad():
        n_ = float(n)
        running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
        running_var.mul_(1 - momentum).add_(var.detach() * (n_ / max(n_ - 1, 1.0)), alpha=momentum)
    y = (xf - mean.reshape(shape)) * torch.rsqrt(var + eps).reshape(shape) * scale.reshape(shape) + bias.reshape(shape)
    return y.to(x.dtype)
