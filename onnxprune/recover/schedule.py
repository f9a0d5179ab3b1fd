"""Training-time pruning's two ingredients from paper 001 (§3.2, §4.1, Algorithms 1–2): the logistic annealing
schedule of the pruning ratio, and the F-statistic's sufficient statistics accumulated online from the training
forward passes. The driver that prunes with them between epochs is `workflows/iterative.py`.

Logistic annealing (001 Fig. 1, after Dawer et al.): the cumulative pruned fraction after step k of K is

    r_k = r · (σ(a·(2k/K − 1)) − σ(−a)) / (σ(a) − σ(−a)),    σ(x) = 1 / (1 + e^−x)

— slow at first (the "junk" goes while the network adapts), fast in the middle, slow again at the end, and exactly
r at k = K. `a` is the paper's decay rate (its figure shows 2, 4, 6, 8; a → 0 is the linear schedule).

Online F (001 §3.2): per feature, class counts n_c, class sums S_c and the total sum of squares — the
`stats.accumulators.ClassMoments` the onnxruntime pass uses — updated with every training batch's activations
(conv maps reduced to per-sample channel means, as the onnxruntime pass does) and finalised into the same `Stats`
the criteria read, so a step's scores come from exactly the code the one-shot path uses, on the current weights.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import OnnxPruneError
from ..stats import Request, Stats
from ..stats.accumulators import ClassMoments

ANNEAL_RATE = 4.0  # 001 Fig. 1 shows 2-8; 4 prunes ~7 % of the target in the first of 5 steps, ~30 % by the second


def annealed_ratios(ratio: float, steps: int, rate: float = ANNEAL_RATE) -> list[float]:
    """The cumulative pruning ratio after each of `steps` steps: logistic annealing, monotone, last = `ratio`."""
    if steps < 1:
        raise OnnxPruneError(f"pruning steps must be >= 1, got {steps}")
    if not 0.0 <= ratio < 1.0:
        raise OnnxPruneError(f"ratio {ratio}: must be in [0, 1)")
    t = np.arange(1, steps + 1) / steps
    if rate <= 0:
        frac = t
    else:
        sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
        frac = (sig(rate * (2 * t - 1)) - sig(-rate)) / (sig(rate) - sig(-rate))
    out = [float(ratio * f) for f in frac]
    out[-1] = float(ratio)
    return out


ONLINE_KINDS = ("channels", "features")


def online_supported(requests: Sequence[Request]) -> bool:
    """Whether every request is a class-moment statistic of a channel map or feature vector (what the training
    forward pass can feed); token / head views and other statistics use the onnxruntime pass instead."""
    return bool(requests) and all(r.kind in ONLINE_KINDS and r.stats == frozenset({"class_moments"})
                                  for r in requests)


class OnlineScreen:
    """The F-statistic's sufficient statistics of every requested tensor, accumulated batch by batch from the
    activations of training forward passes (001 §3.2)."""

    def __init__(self, requests: Sequence[Request], n_classes: int = 0):
        if not online_supported(requests):
            raise OnnxPruneError("online statistics need class moments of channel maps or features")
        self.kinds = {r.tensor: r.kind for r in requests}
        self.acc = {t: ClassMoments(n_classes) for t in self.kinds}
        self.n = 0

    @property
    def tensors(self) -> list[str]:
        return list(self.kinds)

    def update(self, fetched: dict[str, torch.Tensor], labels: np.ndarray) -> None:
        """One batch: `fetched[t]` is tensor t of the forward pass, `labels` the batch's classes."""
        for t, kind in self.kinds.items():
            v = fetched[t].detach()
            if kind == "channels" and v.dim() > 2:
                v = v.mean(dim=tuple(range(2, v.dim())))
            self.acc[t].update(v.reshape(len(v), -1).double().numpy(), labels)
        self.n += len(labels)

    def stats(self, model_hash: str, label_mode: str) -> Stats:
        """The accumulated statistics as `Stats` (F and class moments per tensor), for the criteria."""
        arrays = {}
        for t, acc in self.acc.items():
            for k, v in acc.finalize().items():
                arrays[(t, k)] = np.asarray(v, dtype=np.float64)
        return Stats(arrays, model_hash=model_hash, n=self.n, label_mode=label_mode,
                     meta={"online": True, "tensors": self.tensors})
