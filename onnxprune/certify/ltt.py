"""Learn-then-Test: the largest pruning ratio whose risk is <= ε with probability >= 1 - δ.

The procedure (Angelopoulos et al., LTT; paper 002 for pruning):
  1. fix a grid of ratios *before* looking at the certification data;
  2. for each ratio compute per-sample losses on the certification split;
  3. turn each ratio's losses into a p-value for H: R(ratio) > ε;
  4. reject nulls with a family-wise error controlling procedure at level δ;
  5. certify the largest ratio whose null was rejected.
With probability >= 1 - δ every certified ratio has true risk <= ε. The guarantee
needs the certification samples to be i.i.d. with deployment data and independent of
everything that built the candidates (see `split_indices`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
from numpy.typing import ArrayLike

from onnxprune.certify.fwer import bonferroni, fixed_sequence
from onnxprune.certify.pvalues import binomial_pvalue, hoeffding_bentkus_pvalue, wsr_pvalue
from onnxprune.errors import OnnxPruneError

PValueMethod = Literal["binomial", "hb", "wsr"]
Control = Literal["fixed_sequence", "bonferroni"]

_MAX_GRID = 10_000
_NUMBER = r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*"


# --- inputs fixed before the data is seen -------------------------------------------------


def parse_grid(text: str) -> np.ndarray:
    """Parse "start:stop:step" (stop inclusive) or "r1,r2,..." into sorted ratios in [0, 1).

    The grid is part of the hypothesis family, so it must come from the user (or a
    default), never from the certification data.
    """
    text = text.strip()
    if re.fullmatch(f"{_NUMBER}:{_NUMBER}:{_NUMBER}", text):
        start, stop, step = (float(part) for part in text.split(":"))
        if step <= 0:
            raise OnnxPruneError(f"grid {text!r}: step must be positive")
        if stop < start:
            raise OnnxPruneError(f"grid {text!r}: stop must be >= start")
        count = math.floor((stop - start) / step + 1e-9) + 1
        if count > _MAX_GRID:
            raise OnnxPruneError(f"grid {text!r} has {count} points; at most {_MAX_GRID} are allowed")
        # Rounding removes float noise such as 0.30000000000000004 so ratios print cleanly.
        grid = np.round(start + step * np.arange(count), 12)
    elif re.fullmatch(f"{_NUMBER}(?:,{_NUMBER})*", text):
        grid = np.unique([float(part) for part in text.split(",")])
    else:
        raise OnnxPruneError(
            f"cannot parse grid {text!r}: expected 'start:stop:step' (e.g. 0:0.95:0.05) or 'r1,r2,...'"
        )
    if grid[0] < 0 or grid[-1] >= 1:
        raise OnnxPruneError(f"grid {text!r}: ratios must lie in [0, 1)")
    return grid


def min_samples(eps: float, delta: float) -> int:
    """Smallest n with (1 - ε)^n <= δ: below it not even zero errors can be certified.

    (1 - ε)^n is the chance of seeing zero errors when R = ε exactly, so no valid
    p-value (binomial, HB or WSR) can fall below it; fewer samples cannot certify anything.
    """
    _check_level("ε", eps)
    _check_level("δ", delta)
    n = max(1, math.ceil(math.log(delta) / math.log1p(-eps)))
    while (1.0 - eps) ** n > delta:  # guard against rounding in the logs
        n += 1
    while n > 1 and (1.0 - eps) ** (n - 1) <= delta:
        n -= 1
    return n


def split_indices(n: int, cert_fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, disjoint, sorted (build_idx, cert_idx) partition of range(n).

    Statistics that *build* candidates (scores, masks, reconstruction) must use build_idx
    only. If certification samples also shaped the pruned models, their losses would be
    optimistically biased (the models were fitted to them) and the p-values would no
    longer be valid: LTT's guarantee would be void.
    """
    if int(n) != n or n < 2:
        raise OnnxPruneError(f"need at least 2 samples to split into build and certification sets, got {n}")
    if not 0.0 < cert_fraction < 1.0:
        raise OnnxPruneError(f"cert_fraction must be in (0, 1), got {cert_fraction}")
    n = int(n)
    n_cert = min(max(round(n * cert_fraction), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_cert:]), np.sort(order[:n_cert])


# --- result -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Certification:
    """The full per-ratio table of an LTT run and its conclusion (arrays are read-only)."""

    grid: np.ndarray
    empirical_risk: np.ndarray
    pvalues: np.ndarray
    certified: np.ndarray
    certified_ratio: float | None
    eps: float
    delta: float
    n: int
    pvalue_method: str
    control: str
    message: str

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per grid ratio, for tables and reports."""
        return [
            {"ratio": float(r), "risk": float(k), "p_value": float(p), "certified": bool(c)}
            for r, k, p, c in zip(self.grid, self.empirical_risk, self.pvalues, self.certified)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary: plain floats, lists and None only."""
        return {
            "grid": [float(r) for r in self.grid],
            "empirical_risk": [float(k) for k in self.empirical_risk],
            "pvalues": [float(p) for p in self.pvalues],
            "certified": [bool(c) for c in self.certified],
            "certified_ratio": self.certified_ratio,
            "eps": self.eps,
            "delta": self.delta,
            "n": self.n,
            "pvalue_method": self.pvalue_method,
            "control": self.control,
            "message": self.message,
        }


# --- the procedure ------------------------------------------------------------------------


def _pvalues_binomial(losses: np.ndarray, eps: float, delta: float) -> np.ndarray:
    if np.any((losses != 0) & (losses != 1)):
        raise OnnxPruneError("the binomial p-value needs 0/1 losses; use pvalue='hb' or 'wsr' for losses in [0, 1]")
    return binomial_pvalue(losses.sum(axis=1).round().astype(np.int64), losses.shape[1], eps)


def _pvalues_hb(losses: np.ndarray, eps: float, delta: float) -> np.ndarray:
    return hoeffding_bentkus_pvalue(losses.mean(axis=1), losses.shape[1], eps)


def _pvalues_wsr(losses: np.ndarray, eps: float, delta: float) -> np.ndarray:
    return wsr_pvalue(losses, eps, delta=delta)


_PVALUES: dict[str, Callable[[np.ndarray, float, float], np.ndarray]] = {
    "binomial": _pvalues_binomial,
    "hb": _pvalues_hb,
    "wsr": _pvalues_wsr,
}
_CONTROLS: dict[str, Callable[[ArrayLike, float], np.ndarray]] = {
    "fixed_sequence": fixed_sequence,
    "bonferroni": bonferroni,
}


def certify(
    grid: ArrayLike,
    losses: ArrayLike,
    eps: float,
    delta: float,
    *,
    pvalue: PValueMethod = "binomial",
    control: Control = "fixed_sequence",
) -> Certification:
    """Certify the largest grid ratio with risk <= ε at confidence 1 - δ.

    `losses[j, i]` is the loss of the model pruned at `grid[j]` on certification sample i
    (same samples for every ratio). `grid` must be strictly ascending: fixed-sequence
    testing relies on risk growing with the ratio, so it tests the smallest ratio first.
    """
    if pvalue not in _PVALUES:
        raise OnnxPruneError(f"unknown p-value method {pvalue!r}; choose one of {', '.join(_PVALUES)}")
    if control not in _CONTROLS:
        raise OnnxPruneError(f"unknown error control {control!r}; choose one of {', '.join(_CONTROLS)}")
    eps, delta = _check_level("ε", eps), _check_level("δ", delta)
    ratios = _check_grid(grid)
    table = _check_losses(losses, len(ratios))
    n = table.shape[1]
    need = min_samples(eps, delta)
    if n < need:
        raise OnnxPruneError(
            f"too few samples to certify anything at ε={eps:g}, δ={delta:g}: need n ≥ {need}, got n={n}"
        )

    # Bonferroni tests each ratio at δ/m, so WSR's bets are tuned for that level.
    level = delta / len(ratios) if control == "bonferroni" else delta
    pvals = np.asarray(_PVALUES[pvalue](table, eps, level), dtype=np.float64)
    certified = _CONTROLS[control](pvals, delta)
    risk = table.mean(axis=1)
    ratio = float(ratios[certified].max()) if certified.any() else None

    for array in (ratios, risk, pvals, certified):
        array.setflags(write=False)
    return Certification(
        grid=ratios,
        empirical_risk=risk,
        pvalues=pvals,
        certified=certified,
        certified_ratio=ratio,
        eps=eps,
        delta=delta,
        n=n,
        pvalue_method=pvalue,
        control=control,
        message=_message(ratio, ratios, risk, pvals, eps, delta, n, pvalue, control),
    )


def _message(
    ratio: float | None,
    grid: np.ndarray,
    risk: np.ndarray,
    pvals: np.ndarray,
    eps: float,
    delta: float,
    n: int,
    pvalue: str,
    control: str,
) -> str:
    """One line for the report; when nothing passes, name the test that stopped it."""
    how = f"n={n}, {pvalue} p-values, {control.replace('_', '-')}"
    if ratio is not None:
        return f"certified ratio {ratio:g}: risk ≤ ε={eps:g} with probability ≥ {1 - delta:g} ({how})"
    if control == "fixed_sequence":
        why = f"the first ratio {grid[0]:g} has risk {risk[0]:.4g}, p={pvals[0]:.3g} > δ"
    else:
        why = f"smallest p-value {pvals.min():.3g} > δ/m={delta / len(grid):.3g}"
    return f"no ratio certified at ε={eps:g}, δ={delta:g}: the dense model is returned ({why}; {how})"


# --- validation ---------------------------------------------------------------------------


def _check_level(name: str, value: float) -> float:
    if not 0.0 < value < 1.0:
        raise OnnxPruneError(f"{name} must be in (0, 1), got {value}")
    return float(value)


def _check_grid(grid: ArrayLike) -> np.ndarray:
    ratios = np.array(grid, dtype=np.float64)
    if ratios.ndim != 1 or ratios.size == 0:
        raise OnnxPruneError(f"grid must be a non-empty 1-D array of ratios, got shape {ratios.shape}")
    if np.any(~np.isfinite(ratios)) or ratios[0] < 0 or ratios.max() >= 1:
        raise OnnxPruneError("grid ratios must lie in [0, 1)")
    if np.any(np.diff(ratios) <= 0):
        raise OnnxPruneError("grid must be strictly ascending (fixed before seeing the data, smallest ratio first)")
    return ratios


def _check_losses(losses: ArrayLike, n_ratios: int) -> np.ndarray:
    table = np.array(losses, dtype=np.float64)
    if table.ndim != 2:
        raise OnnxPruneError(f"losses must be a 2-D array (n_ratios, n_samples), got shape {table.shape}")
    if table.shape[0] != n_ratios:
        raise OnnxPruneError(f"losses has {table.shape[0]} rows but the grid has {n_ratios} ratios")
    if np.any(~np.isfinite(table)) or np.any(table < 0) or np.any(table > 1):
        raise OnnxPruneError("losses must lie in [0, 1] (found values outside it or NaN)")
    return table
