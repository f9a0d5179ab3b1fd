"""The statistics pass split over sample ranges (shards) — in this process, or as Ray tasks on a cluster.

The data's samples are cut into contiguous ranges at multiples of the batch size the pass feeds, so every shard
sees exactly the batches a single-process pass would; each shard runs `collect_partial` (its own onnxruntime
session on its range) and the driver merges the accumulators in sample order (`Partial.merge`: counts add exactly,
shifted sums are re-based exactly, so float statistics equal the single-process run to rounding, ~1e-12 relative).
A class grouping that needs all samples (true labels of a non-classifier, label-free groups of a non-classifier) is
computed once on the driver and sliced per shard (`collect.class_groups`).

Nothing is dropped silently: every planned shard must come back with exactly the number of samples its range
holds, and the total must equal what one pass would count; anything else is an error naming the shard.

Ray is optional (`pip install 'onnxprune[ray]'`) and imported only when `--ray` is given. A task that fails (an
exception, or its worker process dies) is retried up to `retries` times by Ray (`max_retries`,
`retry_exceptions`); a data error (`OnnxPruneError`) is returned as a value, not retried, and re-raised as is.
Each task loads the model from the object store and opens its range of the data: an in-memory `.npz` ships the
range's samples, folder data (`io/shards.py`) ships only file names and indices — on a cluster the folder must
be on storage every node sees at the same path.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

from ..errors import OnnxPruneError
from ..io.data import Dataset
from .collect import DEFAULT_OPTIMIZE, Partial, Request, class_groups, collect_partial
from .store import Stats

RAY_HINT = "pip install 'onnxprune[ray]' (or pip install 'ray>=2.9')"


@dataclass(frozen=True)
class Shard:
    index: int
    start: int
    stop: int
    expected: int  # samples the pass must count in this range (a model's fixed batch drops a remainder)


def plan_shards(n: int, batch: int, fixed: int | None, shards: int) -> list[Shard]:
    """Contiguous ranges of whole batches (the last one may be short), at most `shards` of them."""
    if n <= 0:
        raise OnnxPruneError("no samples to collect statistics on")
    batches = -(-n // batch)
    k = max(1, min(int(shards), batches))
    cuts = [round(i * batches / k) * batch for i in range(k + 1)]
    cuts[-1] = n
    if fixed and len(cuts) > 2 and (n - cuts[-2]) < fixed:  # a tail the pass would drop: fold it into the shard before
        del cuts[-2]
    out = []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        m = b - a
        out.append(Shard(i, a, b, m - (m % fixed if fixed else 0)))
    return out


def _task(model: onnx.ModelProto | bytes, data: Dataset, requests: list[Request], shard: Shard, labels: str,
          batch_size: int, optimize: str, groups, probe, threads: int | None, fault: str | None):
    """One shard → (shard index, Partial) or (shard index, error message) for a data error."""
    if fault:
        inject_fault(fault, shard)
    m = onnx.load_from_string(model) if isinstance(model, bytes) else model
    if groups is not None:
        groups = (groups[0][shard.start:shard.stop], groups[1], groups[2])
    try:
        part = collect_partial(m, data.range(shard.start, shard.stop), requests, batch_size=batch_size,
                               labels=labels, optimize=optimize, progress=f"statistics shard {shard.index}",
                               groups=groups, threads=threads, probe=probe)
    except OnnxPruneError as e:
        return shard.index, str(e)
    return shard.index, part


def inject_fault(fault: str, shard: Shard) -> None:
    """Test hook: the first attempt of shard 0 loses its worker process, the first of shard 1 raises."""
    marker = Path(fault) / f"shard-{shard.index}"
    if shard.index > 1 or marker.exists():
        return
    marker.touch()
    if shard.index == 0:
        os._exit(1)
    raise RuntimeError(f"injected failure in shard {shard.index}")


def gather(shards: list[Shard], results: list[tuple[int, object]], what: str, count) -> dict[int, object]:
    """{shard index: result} after checking that every planned shard came back once, without an error message,
    having counted exactly its samples (`count(result)`): a lost or short shard is an error, never dropped."""
    got: dict[int, object] = {}
    for index, part in results:
        if isinstance(part, str):
            raise OnnxPruneError(part)
        if index in got:
            raise OnnxPruneError(f"{what} shard {index} came back twice")
        got[index] = part
    lost = [s for s in shards if s.index not in got]
    if lost:
        raise OnnxPruneError(f"{what}: {len(lost)} shard(s) did not come back (samples "
                             f"{', '.join(f'{s.start}..{s.stop - 1}' for s in lost[:5])}); nothing was merged")
    for s in shards:
        if count(got[s.index]) != s.expected:
            raise OnnxPruneError(f"{what} shard {s.index} (samples {s.start}..{s.stop - 1}) counted "
                                 f"{count(got[s.index])} samples, expected {s.expected}")
    return got


def merge_shards(shards: list[Shard], results: list[tuple[int, Partial | str]], total: int) -> Partial:
    """Merge in shard order after checking that every shard came back once with exactly its samples."""
    got = gather(shards, results, "statistics", lambda part: part.n)
    merged = copy.deepcopy(got[shards[0].index])  # writable: Ray hands back read-only (zero-copy) arrays
    for s in shards[1:]:
        merged.merge(got[s.index])
    if merged.n != total:  # pragma: no cover - implied by the per-shard checks; kept as the final proof
        raise OnnxPruneError(f"statistics: merged {merged.n} samples, the data has {total}")
    merged.meta["shards"] = len(shards)
    return merged


Runner = Callable[[list[tuple]], list[tuple[int, Partial | str]]]


def local_runner(calls: list[tuple]) -> list[tuple[int, Partial | str]]:
    """Run the shard tasks one after another in this process (the reference for the Ray runner)."""
    return [_task(*c) for c in calls]


def collect_sharded(model: onnx.ModelProto, data: Dataset, requests: list[Request], *, shards: int,
                    batch_size: int = 256, labels: str = "auto", optimize: str = DEFAULT_OPTIMIZE,
                    runner: Runner = local_runner, threads: int | None = None, fault: str | None = None) -> Stats:
    """`collect` over `shards` sample ranges, each a separate `collect_partial`, merged: equal to `collect`."""
    if batch_size < 1:
        raise OnnxPruneError(f"batch size must be >= 1, got {batch_size}")
    if not requests:
        raise OnnxPruneError("no statistics requested")
    batch = data.batch_size(batch_size)
    fixed = data.fixed_batch
    plan = plan_shards(len(data), batch, fixed, shards)
    total = len(data) - (len(data) % fixed if fixed else 0)
    groups = class_groups(model, data, requests, labels, batch_size)
    probe = next(data.batches(1))  # the first sample (batch): every shard's class sums about the same shift
    calls = [(model, data, requests, s, labels, batch_size, optimize, groups, probe, threads, fault) for s in plan]
    return merge_shards(plan, runner(calls), total).finalize()


# Ray

def ray_module():
    try:
        import ray
    except ImportError:
        raise OnnxPruneError(f"--ray needs Ray, which is not installed: {RAY_HINT}") from None
    return ray


def ray_connect(address: str, num_cpus: int | None = None):
    """Connect to Ray: "auto" joins the running cluster (RAY_ADDRESS, or one started with `ray start` on this
    machine) or else starts a local one; "local" always starts a local one; anything else is a cluster address
    (`ray://head:10001`, `head:6379`)."""
    ray = ray_module()
    if not ray.is_initialized():
        kw = {"num_cpus": num_cpus} if num_cpus and address in ("auto", "local") else {}
        try:
            ray.init(address=None if address == "auto" else address, log_to_driver=False,
                     include_dashboard=False, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise OnnxPruneError(f"--ray {address}: cannot connect to Ray ({str(e).splitlines()[0][:200]})") from None
    return ray


def ray_runner(address: str = "auto", *, retries: int = 3, cpus_per_task: int = 1,
               num_cpus: int | None = None) -> Runner:
    """A runner that submits every shard as a Ray task (retried on failure) and waits for all of them."""
    def run(calls: list[tuple]) -> list[tuple[int, Partial | str]]:
        ray = ray_connect(address, num_cpus)
        task = ray.remote(num_cpus=cpus_per_task, max_retries=retries, retry_exceptions=True)(_task)
        model_ref = ray.put(calls[0][0].SerializeToString())
        reqs_ref = ray.put(calls[0][2])
        refs = []
        for (_, data, _, shard, labels, batch_size, optimize, groups, probe, _, fault) in calls:
            # only the shard's samples (and labels / groups) travel; the task sees them as samples 0..m-1
            local = Shard(shard.index, 0, shard.stop - shard.start, shard.expected)
            g = None if groups is None else (groups[0][shard.start:shard.stop], groups[1], groups[2])
            refs.append(task.remote(model_ref, data.range(shard.start, shard.stop), reqs_ref, local, labels,
                                    batch_size, optimize, g, probe, cpus_per_task, fault))
        return _wait(ray, refs, retries, "statistics")
    return run


def _wait(ray, refs: list, retries: int, what: str) -> list:
    try:
        return ray.get(refs)
    except Exception as e:  # noqa: BLE001 - a task that failed beyond its retries
        cause = getattr(e, "cause", None) or e
        raise OnnxPruneError(f"--ray: a {what} shard failed after {retries} retries: "
                             f"{type(cause).__name__}: {str(cause).splitlines()[0][:300] if str(cause) else ''}"
                             ) from None


def map_shards(fn: Callable, shared: object, data: Dataset, shards: list[Shard], address: str | None = None, *,
               what: str, retries: int = 3, fault: str | None = None) -> list[tuple[int, object]]:
    """`fn(shared, samples, shard, fault)` → (shard index, result or error message) for every shard: in this process
    (address None), or as Ray tasks (one CPU each, retried on failure or a lost worker) to which only the shard's
    samples and one object-store copy of `shared` travel. Check the results with `gather`."""
    if address is None:
        return [fn(shared, data.range(s.start, s.stop), s, fault) for s in shards]
    ray = ray_connect(address)
    task = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=True)(fn)
    ref = ray.put(shared)
    return _wait(ray, [task.remote(ref, data.range(s.start, s.stop), s, fault) for s in shards], retries, what)


def default_shards(address: str) -> int:
    ray = ray_connect(address)
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
