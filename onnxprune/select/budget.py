"""Budgets users think in: "half the MACs", "twice as fast". The ratio that meets a budget is found by bisection.

What a ratio costs (MACs of the rewritten model, or a measured speed-up) is computed by the caller; the cost must
be monotone in the ratio (more pruning never costs more), which holds for MACs exactly and for latency up to noise.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import OnnxPruneError

MAX_RATIO = 0.99


@dataclass
class Search:
    """The ratio found and every (ratio, value) tried, in order, for the report."""

    ratio: float
    value: float
    tried: list[tuple[float, float]] = field(default_factory=list)


def ratio_for(target: float, value_at: Callable[[float], float], *, decreasing: bool, what: str,
              tol: float = 0.005, steps: int = 12) -> Search:
    """The ratio in [0, MAX_RATIO] whose value lands closest to `target` (value falls with the ratio when
    `decreasing`, e.g. the MAC fraction; rises otherwise, e.g. the speed-up): bisection for where the target is
    first reached, to within `tol` in ratio, then the closest of the values tried (rounding channel counts to fast
    multiples makes the value move in steps, so the first ratio that reaches it may overshoot)."""
    reached = (lambda v: v <= target) if decreasing else (lambda v: v >= target)
    tried: list[tuple[float, float]] = []

    def at(r: float) -> float:
        v = value_at(r)
        tried.append((r, v))
        return v

    top = at(MAX_RATIO)
    if not reached(top):
        raise OnnxPruneError(f"{what} {target:g} cannot be reached: removing {MAX_RATIO:.0%} of what can be pruned "
                             f"gives {top:.4g} (some layers are left alone — see the report's 'left alone' list)")
    lo, hi = 0.0, MAX_RATIO
    for _ in range(steps):
        if hi - lo <= tol:
            break
        mid = round((lo + hi) / 2, 4)
        if reached(at(mid)):
            hi = mid
        else:
            lo = mid
    best = min(tried, key=lambda rv: (abs(rv[1] - target), not reached(rv[1]), rv[0]))
    return Search(best[0], best[1], tried)
