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

from ..certify import (LOSSES, Certification, binomial_pvalue, certify, hoeffding_bentkus_pvalue, min_samples,
                       sample_losses, split_indices, wsr_pvalue)
from ..errors import OnnxPruneError
from ..io.data import Dataset
from ..io.infer import outputs
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
    loss: str  # a name in certify.LOSSES: new_error / disagreement (classifiers), positions, cosine, relative
    loss_tau: float | None = None  # the threshold τ of the cosine / relative losses

    @property
    def risk_meaning(self) -> str:
        """What the certified risk is, in words (the loss and its τ)."""
        return LOSSES[self.loss].risk.format(tau=self.loss_tau)

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
        return f"{m}; risk = {self.risk_meaning}"

    def to_dict(self) -> dict:
        """The certification summary over the whole grid (None where a ratio was not tested), JSON-safe."""
        c, pad = self.certification.to_dict(), len(self.untested)
        return {**c, "grid": [float(r) for r in self.grid], "empirical_risk": c["empirical_risk"] + [None] * pad,
                "pvalues": c["pvalues"] + [None] * pad, "certified": c["certified"] + [False] * pad,
                "tested": [True] * len(c["grid"]) + [False] * pad, "message": self.message,
                "build_samples": self.build_n, "certification_samples": self.cert_n, "loss": self.loss,
                "loss_tau": self.loss_tau, "risk": self.risk_meaning}

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
        delta: float, *, cert_data: Dataset | None = None, cert_fraction: float = 0.5, pvalue: str | None = None,
        control: str = "fixed_sequence", recover_data: Dataset | None = None, loss: str = "auto",
        loss_tau: float | None = None, ray: str | None = None) -> CertifyRun:
    """Score on the build split, test each grid ratio on the certification split, keep the certified candidate.

    `loss` (see `choose_loss`; "auto" fits the model's output) and its threshold `loss_tau` define the risk;
    `pvalue` None is the exact binomial test for 0/1 losses and Hoeffding–Bentkus for bounded ones.

    With recovery in the settings, every candidate is recovered before it is tested — on `recover_data` (which
    must share no sample with the certification split) or on the build split — so the certificate covers exactly
    the recovered model that is written. `ray` (auto / local / an address): the statistics pass and every
    model's outputs on the certification split run as Ray tasks over sample ranges (`_observe`)."""
    grid = _checked_grid(grid)
    _check_names(pvalue, control)
    kind, _ = output_kind(model, data_shapes(data))
    build, cert = split(data, cert_data, cert_fraction, settings.seed)
    loss, loss_tau, pvalue = choose_loss(kind, cert.labelled, loss, loss_tau, pvalue)
    _check_enough(len(cert), tolerance, delta)
    if recover_data is not None and settings.recovers:
        refuse_shared(recover_data, cert, what="--recover-data")
    prepared = prepare(model, build, settings, ray=ray)
    dense = _observe(model, cert, loss, settings.batch_size, "dense outputs", ray)
    losses, best = _test_grid(prepared, build, cert, dense, grid, tolerance, delta, pvalue, control,
                              recover_data if recover_data is not None else build, loss, loss_tau, ray)
    result = certify(grid[:len(losses)], losses, tolerance, delta, pvalue=pvalue, control=control)
    if result.certified_ratio != (None if best is None else best[0]):
        raise RuntimeError("internal: the per-ratio tests disagree with certify.certify")  # a bug, not user error
    return CertifyRun(result, grid, None if best is None else best[1], prepared, build, len(cert), loss, loss_tau)


_OUTPUTS = {"classes": "(N, K) class scores", "dense": "a per-position score map (N, K, …)",
            "values": "a regression or embedding output (not class scores)"}
_FITS = {"new_error": ("classes",), "disagreement": ("classes",), "positions": ("dense",),
         "cosine": ("classes", "values"), "relative": ("classes", "values")}


def choose_loss(kind: str, labelled: bool, loss: str = "auto", tau: float | None = None,
                pvalue: str | None = None) -> tuple[str, float | None, str]:
    """(loss, τ, p-value method) for a model whose first output is of `kind` (`io.shapes.output_kind`).

    auto: new_error with labels / disagreement without (classifiers); positions (score maps: labels per sample
    cannot score positions); relative error with τ = 0.1 for any other output (for L2-normalised embeddings
    ‖p − d‖ is a chord, so it also bounds the angle). τ defaults per loss (`certify.LOSSES`); the p-value is the
    exact binomial for 0/1 losses and Hoeffding–Bentkus for bounded ones. Every contradiction is refused here,
    before any candidate is built."""
    if loss == "auto":
        loss = {"classes": "new_error" if labelled else "disagreement", "dense": "positions"}.get(kind, "relative")
    if loss not in LOSSES:
        raise OnnxPruneError(f"unknown loss {loss!r}; choose one of auto, {', '.join(LOSSES)}")
    spec = LOSSES[loss]
    if kind not in _FITS[loss]:
        fit = " or ".join(_OUTPUTS[k] for k in _FITS[loss])
        hint = ("--loss positions" if kind == "dense" else "--loss relative or --loss cosine (with --loss-tau)")
        raise OnnxPruneError(f"--loss {loss} needs {fit}; this model's output is {_OUTPUTS[kind]} — use {hint}")
    if loss == "new_error" and not labelled:
        raise OnnxPruneError("--loss new_error needs labels (y) in the certification data; without them use "
                             "--loss disagreement")
    if spec.tau is None and tau is not None:
        raise OnnxPruneError(f"--loss-tau is the threshold of the cosine and relative losses; --loss {loss} has none")
    tau = spec.tau if tau is None else float(tau)
    if tau is not None and not (0 < tau <= (2 if loss == "cosine" else np.inf)):
        raise OnnxPruneError(f"--loss-tau must be in {'(0, 2]' if loss == 'cosine' else '(0, ∞)'} for the "
                             f"{loss} loss, got {tau:g}")
    if pvalue is None:
        pvalue = "binomial" if spec.binary else "hb"
    elif pvalue == "binomial" and not spec.binary:
        raise OnnxPruneError(f"the binomial p-value needs 0/1 losses and the {loss} loss takes values in [0, 1]: "
                             "use --pvalue hb or --pvalue wsr")
    return loss, tau, pvalue


def _observe(model: onnx.ModelProto, data: Dataset, loss: str, batch_size: int, desc: str,
             ray: str | None = None, shards: int | None = None, fault: str | None = None) -> np.ndarray:
    """What the loss compares: top-1 classes (per sample, or per position for score maps) or the raw outputs.

    With `ray` (or `shards` in this process), one task per range of whole batches (`stats.distributed.map_shards`:
    a Ray task is retried when it fails or its worker is lost), concatenated in sample order after every range is
    checked to have returned exactly its samples — so the losses, and the certificate, equal the single-process
    run's."""
    top1 = LOSSES[loss].reads == "top1"
    if ray is None and shards is None:
        return predict(model, data, batch_size, desc) if top1 else outputs(model, data, batch_size, desc)
    from ..io.model import serialize
    from ..stats.distributed import default_shards, gather, map_shards, plan_shards

    plan = plan_shards(len(data), data.batch_size(batch_size), data.fixed_batch,
                       shards or default_shards(ray))  # type: ignore[arg-type]
    results = map_shards(_observe_shard, (serialize(model), top1, batch_size), data, plan, ray,
                         what=f"certification ({desc})", fault=fault)
    got = gather(plan, results, f"certification ({desc})", len)
    return np.concatenate([got[s.index] for s in plan])


def _observe_shard(shared: tuple[bytes, bool, int], data: Dataset, shard, fault: str | None):
    """One range of `_observe` (a Ray task): (shard index, observations) or (index, the data error's message)."""
    from ..stats.distributed import inject_fault

    if fault:
        inject_fault(fault, shard)
    model, top1, batch_size = onnx.load_from_string(shared[0]), shared[1], shared[2]
    try:
        obs = predict(model, data, batch_size, threads=1) if top1 else outputs(model, data, batch_size, threads=1)
    except OnnxPruneError as e:
        return shard.index, str(e)
    return shard.index, obs


def _test_grid(prepared: Prepared, build: Dataset, cert: Dataset, dense: np.ndarray, grid: np.ndarray,
               tolerance: float, delta: float, pvalue: str, control: str, recover: Dataset, loss: str,
               loss_tau: float | None, ray: str | None = None) -> tuple[np.ndarray, tuple[float, Candidate] | None]:
    """Losses of the tested ratios (ascending) and the largest certified (ratio, candidate); stops early with
    fixed-sequence testing."""
    level = delta / len(grid) if control == "bonferroni" else delta  # what each p-value is compared with
    rows, best = [], None
    for ratio in track(grid, "certifying grid", total=len(grid)):
        cand = prepared.build(float(ratio), build, reconstruct=prepared.settings.reconstruct,
                              recover=recover)
        pred = _observe(cand.model, cert, loss, prepared.settings.batch_size, f"ratio {ratio:.2f}", ray)
        rows.append(sample_losses(loss, pred, dense, cert.labels if cert.labelled else None, loss_tau))
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
    if pvalue is not None and pvalue not in PVALUES:
        raise OnnxPruneError(f"unknown p-value method {pvalue!r}; choose one of {', '.join(PVALUES)}")
    if control not in CONTROLS:
        raise OnnxPruneError(f"unknown error control {control!r}; choose one of {', '.join(CONTROLS)}")


def _check_enough(n: int, tolerance: float, delta: float) -> None:
    """Below `min_samples` not even zero errors certify: say so before building anything."""
    need = min_samples(tolerance, delta)
    if n < need:
        raise OnnxPruneError(f"too few certification samples to certify anything at tolerance {tolerance:g}, "
                             f"δ={delta:g}: need n ≥ {need}, got n={n} (use more data or a larger --tolerance)")
