"""`--workers N`: one data-parallel recovery (`recover/parallel.py`) on N local processes.

`torch.multiprocessing.spawn` starts N fresh interpreters; they form a gloo process group through a rendezvous
file in a private temporary folder (no port to pick or collide on), each runs the ordinary `recover` (which
trains data-parallel inside `parallel.joined()`), and rank 0 hands the trained model and report back through the
same folder. The parent writes nothing itself; its caller validates and saves. When any rank fails, spawn stops
the others and the first rank's error comes back as one `OnnxPruneError`.

For several machines use torchrun or Ray Train instead (docs/ARCHITECTURE.md, "Recovery on several processes"):
they start the processes and the group; `parallel.joined()` picks the group up.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import OnnxPruneError
from .distill import RecoveryReport, recover
from .parallel import group_size, joined, launched_by_torchrun

_NO_BUDGET = ("--time cannot be combined with data-parallel recovery: a wall-clock budget would stop the processes at "
              "different epochs (give --epochs)")
TIMEOUT_S = 900  # a rank waiting this long for the others in a collective gives up (instead of hanging forever)


class _Arrays:
    """The recovery data as plain arrays: what crosses the process boundary (any dataset duck type in, this out)."""

    def __init__(self, inputs: dict[str, np.ndarray], labels: np.ndarray | None):
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))


def check_workers(workers: Any, batch_size: int) -> int:
    """`workers` as a count of processes: an integer ≥ 1 and at most the batch size (every rank needs rows)."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise OnnxPruneError(f"--workers {workers}: must be an integer >= 1")
    if workers > batch_size:
        raise OnnxPruneError(f"--workers {workers} is more than --batch-size {batch_size}: every process needs "
                             f"at least one sample of each batch")
    return int(workers)


def recover_workers(pruned: onnx.ModelProto, dense: onnx.ModelProto, data: Any, workers: int = 1,
                    group: bool = False, **kwargs: Any) -> tuple[onnx.ModelProto, RecoveryReport]:
    """`recover(pruned, dense, data, **kwargs)` on `workers` local processes (> 1), or in this process — which,
    with `group`, trains data-parallel when it is one rank of a process group (torchrun, Ray Train;
    `parallel.joined`). In a data-parallel run the report's `settings` say `workers` and this process's `rank`
    (only rank 0 should write)."""
    check_workers(workers, int(kwargs.get("batch_size", 64)))
    if workers > 1:
        if group_size() > 1 or launched_by_torchrun():
            raise OnnxPruneError(f"--workers {workers} inside a torchrun / Ray Train process group: the processes "
                                 f"are already there; drop --workers")
        return recover_on_workers(pruned, dense, data, workers, **kwargs)
    with joined() if group else contextlib.nullcontext() as dp:
        if dp is None:
            return recover(pruned, dense, data, **kwargs)
        if kwargs.get("time_budget_s") is not None:
            raise OnnxPruneError(_NO_BUDGET)
        progress = kwargs.pop("progress", True)
        model, report = recover(pruned, dense, data, progress=progress if dp.rank == 0 else False, **kwargs)
        report.settings = dict(report.settings, workers=dp.world, rank=dp.rank)
        report.cpu_s = float(dp.total(np.array([report.cpu_s]))[0])  # every rank's, as with --workers
        return model, report


def recover_on_workers(pruned: onnx.ModelProto, dense: onnx.ModelProto, data: Any, workers: int,
                       **kwargs: Any) -> tuple[onnx.ModelProto, RecoveryReport]:
    """`recover(pruned, dense, data, **kwargs)` data-parallel on `workers` local processes; (model, report) from
    rank 0, the report's `cpu_s` summed over all ranks and `wall_s` the whole launch's, `settings["workers"]` set."""
    import torch.multiprocessing as mp

    if kwargs.get("time_budget_s") is not None:
        raise OnnxPruneError(_NO_BUDGET)
    check_workers(workers, int(kwargs.get("batch_size", 64)))
    inputs = {k: np.asarray(v) for k, v in data.inputs.items()}
    labels = getattr(data, "labels", None)
    arrays = _Arrays(inputs, None if labels is None else np.asarray(labels))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnxprune-workers-") as tmp:
        args = (workers, tmp, pruned.SerializeToString(), dense.SerializeToString(), arrays, kwargs)
        try:
            mp.spawn(_rank_main, args=args, nprocs=workers, join=True)
        except Exception as e:  # a rank failed; spawn stopped the others
            msgs = sorted(Path(tmp).glob("error-*.txt"))
            if msgs:
                raise OnnxPruneError(msgs[0].read_text()) from None
            first = next((ln for ln in reversed(str(e).strip().splitlines()) if ln.strip()), type(e).__name__)
            raise OnnxPruneError(f"data-parallel recovery failed in a worker process: {first}") from None
        with open(os.path.join(tmp, "result.pkl"), "rb") as f:
            model_bytes, report = pickle.load(f)
        cpu = sum(float(p.read_text()) for p in Path(tmp).glob("cpu-*.txt"))
    model = onnx.load_from_string(model_bytes)
    report.cpu_s = cpu
    report.wall_s = time.perf_counter() - t0
    report.settings = dict(report.settings, workers=workers, rank=0)
    return model, report


def _rank_main(rank: int, world: int, tmp: str, pruned: bytes, dense: bytes, data: _Arrays,
               kwargs: dict[str, Any]) -> None:
    """One spawned process: join the group, run the ordinary `recover`, rank 0 leaves the result in `tmp`."""
    import torch.distributed as dist

    t_cpu = time.process_time()
    try:
        dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 'rendezvous')}", rank=rank,
                                world_size=world, timeout=timedelta(seconds=TIMEOUT_S))
        try:
            with joined():
                model, report = recover(onnx.load_from_string(pruned), onnx.load_from_string(dense), data,
                                        **dict(kwargs, progress=kwargs.get("progress", True) and rank == 0))
        finally:
            dist.destroy_process_group()
    except OnnxPruneError as e:
        Path(tmp, f"error-{rank}.txt").write_text(str(e))
        raise
    Path(tmp, f"cpu-{rank}.txt").write_text(repr(time.process_time() - t_cpu))
    if rank == 0:
        with open(os.path.join(tmp, "result.pkl"), "wb") as f:
            pickle.dump((model.SerializeToString(), report), f)
