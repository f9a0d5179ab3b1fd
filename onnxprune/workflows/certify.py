"""Learn-then-Test on ONNX models: build a candidate per grid ratio, measure per-sample losses, certify.

Validity is enforced here, not just documented: the grid is fixed before any data is seen, and the statistics
that rank weights/channels (and the re-fit) come from a split of the calibration data disjoint from the split the
losses are measured on (seeded) — or from a separate certification file, which is refused if it shares a sample
with the calibration file. The run returns the certified candidate itself, so what a caller writes is exactly
what was certified.

Candidates are built lazily in ascending ratio. Fixed-sequence testing stops at the first ratio whose p-value
exceeds δ: the later ratios could never be certified, so they are not built ("not tested" in the table).
Bonferroni tests every ratio. Only the best certified candidate so far is kept in memory.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..certify import (Certification, binomial_pvalue, certify, disagreement_loss, hoeffding_bentkus_pvalue,
                       min_samples, new_error_loss, split_indices, wsr_pvalue)
from ..errors import OnnxPruneError
from ..io.data import Dataset
from ..io.shapes import data_shapes, output_kind
from ..measure.evaluate import predict
from ..progress import track
from ..select.plan import PruneSettings
from .prune import Candidate, Prepared, prepare

CONTROLS = ("fixed_sequence", "bonferroni")
PVALUES = ("binomial", "hb", "wsr")


@dataclass
class CertifyRun:
    """The LTT table over the tested ratios, and the candidate at the certified ratio (None if none)."""

    certification: Certification  # on the tested ratios: all (Bonferroni) or up to the first failure (fixed-seq.)
    grid: np.ndarray  # every ratio asked for
    candidate: Candidate | None  # built on the build split: the model a caller writes
    prepared: Prepared
    build: Dataset  # the samples the candidates were scored and re-fitted on
    cert_n: int
    loss: str  # "new_error" (labelled) or "disagreement" (label-free)

    @property
    def build_n(self) -> int:
        return len(self.build)

    @property
    def untested(self) -> np.ndarray:
        return self.grid[len(self.certification.grid):]

    @property
    def message(self) -> str:
        """The LTT conclusion, and which ratios fixed-sequence testing never reached."""
        m = self.certification.message
        u = self.untested
        if len(u):
            which = f"ratio {u[0]:g}" if len(u) == 1 else f"ratios {u[0]:g}–{u[-1]:g}"
            m += f"; {which} not tested (fixed-sequence testing stops at the first ratio that fails)"
        return m

    def to_dict(self) -> dict:
        """The certification summary over the whole grid (None where a ratio was not tested), JSON-safe."""
        c, pad = self.certification.to_dict(), len(self.untested)
        return {**c, "grid": [float(r) for r in self.grid], "empirical_risk": c["empirical_risk"] + [None] * pad,
                "pvalues": c["pvalues"] + [None] * pad, "certified": c["certified"] + [False] * pad,
                "tested": [True] * len(c["grid"]) + [False] * pad, "message": self.message,
                "build_samples": self.build_n, "certification_samples": self.cert_n, "loss": self.loss}

    def summary(self) -> str:
        """The conclusion and the tested ratios, one line each."""
        d = self.to_dict()
        rows = [f"  {g:g}: risk {r:.4f}, p-value {p:.3g}" + (" certified" if c else "")
                for g, r, p, c, t in zip(d["grid"], d["empirical_risk"], d["pvalues"], d["certified"], d["tested"]) if t]
        return "\n".join([self.message, *rows])

    @property
    def prunes(self) -> bool:
        """Whether a ratio above 0 was certified (ratio 0 is the dense model: nothing worth writing)."""
        return self.candidate is not None and (self.certification.certified_ratio or 0.0) > 0

    def nothing_certified(self) -> str:
        """Why no pruning ratio was certified and what to try, naming the smallest ratio that failed."""
        c = self.certification
        i = int(np.argmin(c.certified))  # the first failure
        level = c.delta / len(c.grid) if c.control == "bonferroni" else c.delta
        which = "no pruning ratio" if c.certified.any() else "no ratio"
        return (f"{which} certified at tolerance {c.eps:g}, δ={c.delta:g}: the smallest failing ratio "
                f"{c.grid[i]:g} has risk {c.empirical_risk[i]:.4g} on {c.n} certification samples "
                f"(p-value {c.pvalues[i]:.3g} > {level:.3g}) — try a larger --tolerance, --recover (every candidate "
                f"is recovered before it is tested), more certification data, or a smaller grid step")


def run(model: onnx.ModelProto, data: Dataset, settings: PruneSettings, grid: np.ndarray, tolerance: float,
        delta: float, *, cert_data: Dataset | None = None, cert_fraction: float = 0.5, pvalue: str = "binomial",
        control: str = "fixed_sequence", recover_data: Dataset | None = None) -> CertifyRun:
    """Score on the build split, test each grid ratio on the certification split, keep the certified candidate.

    With recovery in the settings, every candidate is recovered before it is tested — on `recover_data` (which
    must share no sample with the certification split) or on the build split — so the certificate covers exactly
    the recovered model that is written."""
    grid = _checked_grid(grid)
    _check_names(pvalue, control)
    kind, _ = output_kind(model, data_shapes(data))
    if kind != "classes":  # the 0/1 per-sample losses need one class per sample
        raise OnnxPruneError("certification needs a classifier output (N, K); this model's output is "
                             f"{'a per-position score map' if kind == 'dense' else 'not a class score'} — "
                             "use `compress --ratio` and `check` (per-position agreement / relative error) instead")
    build, cert = split(data, cert_data, cert_fraction, settings.seed)
    _check_enough(len(cert), tolerance, delta)
    if recover_data is not None and settings.recovers:
        refuse_shared(recover_data, cert, what="--recover-data")
    prepared = prepare(model, build, settings)
    dense = predict(model, cert, settings.batch_size, "dense predictions")
    losses, best = _test_grid(prepared, build, cert, dense, grid, tolerance, delta, pvalue, control,
                              recover_data if recover_data is not None else build)
    result = certify(grid[:len(losses)], losses, tolerance, delta, pvalue=pvalue, control=control)
    if result.certified_ratio != (None if best is None else best[0]):
        raise RuntimeError("internal: the per-ratio tests disagree with certify.certify")  # a bug, not user error
    return CertifyRun(result, grid, None if best is None else best[1], prepared, build, len(cert),
                      "new_error" if cert.labelled else "disagreement")


def _test_grid(prepared: Prepared, build: Dataset, cert: Dataset, dense: np.ndarray, grid: np.ndarray,
               tolerance: float, delta: float, pvalue: str, control: str, recover: Dataset
               ) -> tuple[np.ndarray, tuple[float, Candidate] | None]:
    """Losses of the tested ratios (ascending) and the largest certified (ratio, candidate); stops early with
    fixed-sequence testing."""
    level = delta / len(grid) if control == "bonferroni" else delta  # what each p-value is compared with
    rows, best = [], None
    for ratio in track(grid, "certifying grid", total=len(grid)):
        cand = prepared.build(float(ratio), build, reconstruct=prepared.settings.reconstruct,
                              recover=recover)
        pred = predict(cand.model, cert, prepared.settings.batch_size, f"ratio {ratio:.2f}")
        rows.append(new_error_loss(pred, dense, cert.labels) if cert.labelled else disagreement_loss(pred, dense))
        if row_pvalue(rows[-1], tolerance, level, pvalue) <= level:
            best = (float(ratio), cand)  # ascending grid: a later certified ratio replaces an earlier one
        elif control == "fixed_sequence":
            break  # no later ratio can be certified: do not build it
    return np.array(rows), best


def row_pvalue(losses: np.ndarray, tolerance: float, level: float, method: str) -> float:
    """The p-value of one ratio's losses, as `certify.certify` computes it row by row (`level` tunes WSR's bets)."""
    n = len(losses)
    if method == "binomial":
        return float(binomial_pvalue(int(round(losses.sum())), n, tolerance))
    if method == "hb":
        return float(hoeffding_bentkus_pvalue(losses.mean(), n, tolerance))
    return float(wsr_pvalue(losses, tolerance, delta=level))


def split(data: Dataset, cert_data: Dataset | None, cert_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(build, certification): a seeded disjoint split of `data`, or `data` and a separate file sharing nothing."""
    if cert_data is None:
        build_idx, cert_idx = split_indices(len(data), cert_fraction, seed)
        return data.subset(build_idx), data.subset(cert_idx)
    refuse_shared(data, cert_data)
    return data, cert_data


def refuse_shared(fit: Dataset, cert: Dataset, what: str = "--cert-data") -> None:
    """A certification sample that also built (or trained) the candidates voids the guarantee: refuse the same file
    or any shared sample (compared by the bytes of its inputs). `what` names the option at fault."""
    other = "--calib" if what == "--cert-data" else "the certification split of --calib"
    if fit.source and cert.source and Path(fit.source).resolve() == Path(cert.source).resolve():
        raise OnnxPruneError(f"{what} {fit.source if what != '--cert-data' else cert.source} is the --calib file: "
                             f"certification samples must be disjoint from the data that builds the candidates"
                             + (" (omit --cert-data to split --calib)" if what == "--cert-data" else ""))
    seen = set(sample_hashes(fit))
    shared = sum(h in seen for h in sample_hashes(cert))
    if shared:
        raise OnnxPruneError(f"{what} and {other} share {shared} of {len(cert)} certification samples "
                             f"({fit.source or '<dataset>'} / {cert.source or '<dataset>'}): certification samples "
                             f"must be disjoint from the data that builds the candidates")


def sample_hashes(data: Dataset) -> list[bytes]:
    """One digest per sample over the bytes of all its inputs (in name order)."""
    from ..io.data import chunk_rows

    names = sorted(data.inputs)
    step = min(chunk_rows(data.inputs[k]) for k in names)  # read in bounded chunks (folder data is lazy)
    out = []
    for i in range(0, len(data), step):
        arrays = [np.ascontiguousarray(data.inputs[k][i:i + step]) for k in names]
        for r in range(len(arrays[0])):
            h = hashlib.blake2b(digest_size=16)
            for a in arrays:
                h.update(a[r].tobytes())
            out.append(h.digest())
    return out


def _checked_grid(grid: np.ndarray) -> np.ndarray:
    """Candidates are built in ascending ratio, so the grid must be ascending (as `parse_grid` makes it)."""
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim != 1 or g.size == 0 or np.any(np.diff(g) <= 0):
        raise OnnxPruneError("grid must be a non-empty, strictly ascending list of ratios")
    return g


def _check_names(pvalue: str, control: str) -> None:
    """Fail before any candidate is built rather than after the whole grid."""
    if pvalue not in PVALUES:
        raise OnnxPruneError(f"unknown p-value method {pvalue!r}; choose one of {', '.join(PVALUES)}")
    if control not in CONTROLS:
        raise OnnxPruneError(f"unknown error control {control!r}; choose one of {', '.join(CONTROLS)}")


def _check_enough(n: int, tolerance: float, delta: float) -> None:
    """Below `min_samples` not even zero errors certify: say so before building anything."""
    need = min_samples(tolerance, delta)
    if n < need:
        raise OnnxPruneError(f"too few certification samples to certify anything at tolerance {tolerance:g}, "
                             f"δ={delta:g}: need n ≥ {need}, got n={n} (use more data or a larger --tolerance)")
