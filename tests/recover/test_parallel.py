"""Data-parallel recovery: N processes through torch.distributed (DDP, gloo) train what one process trains."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from recover_builders import conv_chain, tiny_data  # noqa: E402

from onnxprune.cli import main  # noqa: E402
from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.recover.distill import recover  # noqa: E402
from onnxprune.recover.launch import check_workers, recover_on_workers  # noqa: E402
from onnxprune.recover.parallel import current, share, sync_batch_norm  # noqa: E402


def _perturbed(dense: onnx.ModelProto, scale: float = 0.3) -> onnx.ModelProto:
    """`dense` with seeded noise on its conv / linear weights: a student with something to learn."""
    out = onnx.ModelProto()
    out.CopyFrom(dense)
    for k, t in enumerate(out.graph.initializer):
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32 and a.ndim >= 2:
            noise = np.random.default_rng(k).normal(size=a.shape) * scale * np.abs(a).mean()
            out.graph.initializer[k].CopyFrom(numpy_helper.from_array((a + noise).astype(np.float32), t.name))
    return out


def _floats(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer
            if numpy_helper.to_array(t).dtype.kind == "f"}


def test_shares_are_contiguous_and_differ_by_at_most_one_row() -> None:
    for n, world in [(16, 2), (15, 2), (10, 3), (7, 7), (64, 5)]:
        bounds = [share(n, r, world) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        sizes = [hi - lo for lo, hi in bounds]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_single_process_is_not_data_parallel() -> None:
    assert current() is None


def test_synchronised_batch_norm_on_one_rank_is_torch_batch_norm(tmp_path: Path) -> None:
    """The all-reduced statistics, their gradients and the running-statistics update are F.batch_norm's."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdzv'}", rank=0, world_size=1)
    try:
        g = torch.Generator().manual_seed(0)
        x = (torch.randn(6, 4, 5, 5, generator=g) * 3 + 1).requires_grad_()
        w = (torch.rand(4, generator=g) + 0.5).requires_grad_()
        b = torch.randn(4, generator=g).requires_grad_()
        up = torch.randn(6, 4, 5, 5, generator=g)
        outs = []
        for fn in (sync_batch_norm, None):
            rm, rv = torch.zeros(4), torch.ones(4)
            for p in (x, w, b):
                p.grad = None
            y = sync_batch_norm(x, w, b, rm, rv, 0.1, 1e-5) if fn else \
                F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)
            (y * up).sum().backward()
            outs.append([y.detach(), x.grad.clone(), w.grad.clone(), b.grad.clone(), rm, rv])
        for got, want in zip(*outs):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        # under bfloat16 autocast (`precision`) the statistics stay float32 and the output keeps the input's dtype
        xb = x.detach().bfloat16()
        y = sync_batch_norm(xb, w.detach(), b.detach(), torch.zeros(4), torch.ones(4), 0.1, 1e-5)
        want = F.batch_norm(xb.float(), None, None, w.detach(), b.detach(), training=True, eps=1e-5)
        assert y.dtype == torch.bfloat16
        torch.testing.assert_close(y.float(), want, rtol=1e-2, atol=1e-2)
    finally:
        dist.destroy_process_group()


def test_bad_worker_counts_are_one_error_line(tmp_path: Path) -> None:
    dense = conv_chain()
    onnx.save(dense, tmp_path / "d.onnx")
    data = tiny_data(dense, 20)
    np.savez(tmp_path / "x.npz", x=data.inputs["input"])
    base = ["recover", tmp_path / "d.onnx", "--reference", tmp_path / "d.onnx", "--data", tmp_path / "x.npz",
            "-o", tmp_path / "o.onnx", "--epochs", "1"]
    for extra, says in [(["--workers", "0"], "--workers"), (["--workers", "two"], "--workers"),
                        (["--workers", "3", "--batch-size", "2"], "more than --batch-size"),
                        (["--workers", "2", "--time", "5"], "--time")]:
        r = CliRunner().invoke(main, [str(a) for a in base + extra])
        assert r.exit_code == 2, r.output
        assert r.output.startswith("error: ") and r.output.count("\n") == 1 and says in r.output, r.output
    assert not (tmp_path / "o.onnx").exists()
    with pytest.raises(OnnxPruneError, match="integer >= 1"):
        check_workers(1.5, 64)


@pytest.mark.slow  # two spawned processes: ~20 s of start-up (torch import, DDP) on a loaded 2-core machine
def test_two_processes_train_what_one_process_trains() -> None:
    """Same seed, same global batch: DDP's averaged gradients, global-batch BN statistics and share-weighted losses
    give the single-process weights to float precision — with crop + flip, mixup, labels, an activation penalty
    (a loss term on intermediate tensors) and an unequal last batch (63 training rows in batches of 16: the last
    one splits 8 / 7)."""
    dense = conv_chain()
    pruned = _perturbed(dense)
    data = tiny_data(dense, 66)
    kw = dict(epochs=3, batch_size=16, seed=3, augment=True, lr=0.05, labels=True, mix="mixup",
              activation_l1=0.05, progress=False)
    one, r1 = recover(pruned, dense, data, **kw)
    two, r2 = recover_on_workers(pruned, dense, data, 2, **kw)
    a, b, start = _floats(one), _floats(two), _floats(pruned)
    moved = 0.0
    for name in a:
        ref = np.abs(a[name]).max() + 1e-12
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-4 * ref, err_msg=name)
        moved = max(moved, float(np.abs(a[name] - start[name]).max() / ref))
    assert moved > 1e-2  # training changed the weights far beyond the tolerance: the comparison means something
    np.testing.assert_allclose([h.loss for h in r2.history], [h.loss for h in r1.history], rtol=1e-4)
    assert r2.settings["workers"] == 2 and r2.steps == r1.steps and r2.cpu_s > 0
    onnx.checker.check_model(two, full_check=True)
