"""Least-squares reconstruction of pruned layers from Gram statistics (OBS / SparseGPT style, one-shot).

After masking, each output row i keeps a set K_i of inputs. With x̃ the inputs the *pruned* model feeds the layer
and t the *dense* layer's outputs on the same samples, the best kept weights solve, per row,
    min_w ‖X̃_K w − t_i‖² + λ‖w‖²   →   (H_KK + λI) w = C_K,i,    H = X̃ᵀX̃,  C = X̃ᵀT,
with a relative ridge λ = ridge · mean(diag H). T = X W_denseᵀ + b, so C = (X̃ᵀX) W_denseᵀ + (X̃ᵀ1) bᵀ needs only
the Gram of the pruned inputs and their cross term with the dense inputs, both accumulated batch by batch from
paired runs; a ones column carries the bias. The structured pipeline uses the same helpers with one mask shared
by all rows (one solve).
"""
from __future__ import annotations

import numpy as np
from scipy import linalg

# One BLAS thread: the per-batch Gram GEMMs were 3-10× and the small per-row Cholesky factorisations ~300× faster
# than threaded OpenBLAS on the shared 2-core machine (a 236² factorisation: 150 ms threaded, 0.3 ms on one thread).
from ..stats._blas import single_threaded_blas as one_blas_thread


class PairedGram:
    """Σ x̃ᵀx̃ and Σ x̃ᵀx over paired batches (x̃: pruned-model input, x: dense input), each with a ones column last.

    Per-batch products run in float32 (fast GEMM; a batch sums only a few hundred terms) and are accumulated in
    float64. When both inputs are identical (layers upstream of any change) the cross term is the Gram itself."""

    def __init__(self) -> None:
        self._xx = self._cross = None
        self._sp = self._sd = None
        self._same = True
        self.n = 0

    def update(self, x_pruned: np.ndarray, x_dense: np.ndarray, keep: np.ndarray | None = None) -> None:
        """Add a batch of paired inputs; `keep` (bool per row, optional) selects the rows to count (the real tokens
        of a padded batch)."""
        xp, xd = _rows(x_pruned), _rows(x_dense)
        if keep is not None:
            xp, xd = xp[keep], xd[keep]
        with one_blas_thread():
            self._update(xp, xd)

    def _update(self, xp: np.ndarray, xd: np.ndarray) -> None:
        if len(xp) != len(xd):
            raise ValueError(f"paired batches differ in length ({len(xp)} vs {len(xd)})")
        if self._xx is None:
            self._xx = np.zeros((xp.shape[1], xp.shape[1]))
            self._cross = np.zeros((xp.shape[1], xd.shape[1]))
            self._sp, self._sd = np.zeros(xp.shape[1]), np.zeros(xd.shape[1])
            self._same = xp.shape[1] == xd.shape[1]
        self._xx += xp.T @ xp
        same = self._same and np.array_equal(xp, xd)
        if self._same and not same:
            self._cross += self._xx - xp.T @ xp  # catch up on the batches skipped while identical
            self._same = False
        if not self._same:
            self._cross += xp.T @ xd
        self._sp += xp.sum(0, dtype=np.float64)
        self._sd += xd.sum(0, dtype=np.float64)
        self.n += len(xp)

    @property
    def h(self) -> np.ndarray:
        """[x̃ 1]ᵀ[x̃ 1]."""
        return np.block([[self._xx, self._sp[:, None]], [self._sp[None, :], np.array([[self.n]], float)]])

    @property
    def cross(self) -> np.ndarray:
        """[x̃ 1]ᵀ[x 1]."""
        xx = self._xx if self._same else self._cross
        return np.block([[xx, self._sp[:, None]], [self._sd[None, :], np.array([[self.n]], float)]])


def _rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x.reshape(-1, x.shape[-1]) if x.ndim > 2 else x.reshape(len(x), -1)  # N-D MatMul inputs: feature rows


def ridge_refit(h: np.ndarray, c: np.ndarray, keep: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """W (out, n) minimising Σ_i ‖X w_i − t_i‖² + λ‖w_i‖² with w_i zero outside keep[i]; h = XᵀX (n, n),
    c = XᵀT (n, out). Rows sharing a mask share one factorisation."""
    h = np.asarray(h, np.float64)
    c = np.asarray(c, np.float64)
    keep = np.asarray(keep, bool)
    lam = _ridge_lambda(h, ridge)
    w = np.zeros(keep.shape)
    uniq, inverse = np.unique(np.packbits(keep, axis=1), axis=0, return_inverse=True)
    with one_blas_thread():
        _solve_groups(h, c, keep, lam, uniq, inverse.ravel(), w)
    return w


def ridge_refit_all(h: np.ndarray, c: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """`ridge_refit` with every input kept (the structured re-fit), bit for bit, without a second n×n matrix.

    A wide conv's Gram is the re-fit's largest array (4,177 unknowns: 0.13 GB), so H + λI is factored in H's own
    memory and H is restored afterwards: H is exactly symmetric (x̃ᵀx̃ sums), LAPACK writes the Cholesky factor
    into one triangle and the diagonal only, so the other triangle and a saved diagonal give H back unchanged.
    An H that is not exactly symmetric, or not positive definite, goes through `ridge_refit`."""
    h = np.asarray(h, np.float64)
    c = np.asarray(c, np.float64)
    n = h.shape[0]
    if n == 0 or not h.flags.c_contiguous or not _exactly_symmetric(h):
        return ridge_refit(h, c, np.ones((c.shape[1], n), bool), ridge)
    lam = _ridge_lambda(h, ridge)
    diag = np.diag(h).copy()
    a = h.T  # Fortran-ordered view of the same memory: potrf works in place; equal to H as H is symmetric
    a.flat[::n + 1] += lam
    try:
        with one_blas_thread():
            factor = linalg.cho_factor(a, overwrite_a=True, check_finite=False)  # upper factor; other triangle kept
            sol = linalg.cho_solve(factor, c, check_finite=False)
        ok = True
    except linalg.LinAlgError:
        ok = False
    _restore_symmetric(h, diag)
    return np.ascontiguousarray(sol.T) if ok else ridge_refit(h, c, np.ones((c.shape[1], n), bool), ridge)


def _ridge_lambda(h: np.ndarray, ridge: float) -> float:
    diag = np.diag(h)
    return ridge * (float(diag.mean()) if diag.size and diag.mean() > 0 else 1.0)


def _exactly_symmetric(h: np.ndarray, block: int = 512) -> bool:
    """h == hᵀ element for element, compared a band of rows at a time (no n×n temporary)."""
    return all(np.array_equal(h[s:s + block], h[:, s:s + block].T) for s in range(0, len(h), block))


def _restore_symmetric(h: np.ndarray, diag: np.ndarray, block: int = 512) -> None:
    """Rebuild h's lower triangle from its upper one and put back its diagonal, in place, band by band (the upper
    Cholesky factor of the Fortran view hᵀ occupies h's lower triangle)."""
    n = len(h)
    for s in range(0, n, block):
        e = min(s + block, n)
        h[s:e, :s] = h[:s, s:e].T
        sq = h[s:e, s:e]
        low = np.tril_indices(e - s, -1)
        sq[low] = sq.T[low]
    h.flat[::n + 1] = diag


def _solve_groups(h, c, keep, lam, uniq, inverse, w) -> None:
    for u in range(len(uniq)):
        rows = np.flatnonzero(inverse == u)
        idx = np.flatnonzero(keep[rows[0]])
        if idx.size == 0:
            continue
        # one copy of H_KK, Fortran-ordered so LAPACK factors it in place, λ added to its diagonal in place (before:
        # a C-ordered copy, λI, their sum and LAPACK's Fortran copy of the sum, each of H's size when K is all)
        a = h.T[np.ix_(idx, idx)].T
        a.flat[::idx.size + 1] += lam
        rhs = c[np.ix_(idx, rows)]
        try:
            sol = linalg.cho_solve(linalg.cho_factor(a, overwrite_a=True, check_finite=False), rhs,
                                   check_finite=False)
        except linalg.LinAlgError:  # potrf stopped part-way through a: start again from H_KK + λI
            a = h.T[np.ix_(idx, idx)].T
            a.flat[::idx.size + 1] += lam
            sol = linalg.lstsq(a, rhs, overwrite_a=True, check_finite=False)[0]
        w[np.ix_(rows, idx)] = sol.T


def refit_linear(gram: PairedGram, w_dense: np.ndarray, b_dense: np.ndarray | None, keep: np.ndarray,
                 ridge: float = 1e-3, fit_bias: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Re-fit a layer t = x·Wᵀ + b whose pruned version sees `gram`'s inputs.

    w_dense (out, n_dense), b_dense (out,) or None: the dense layer (target). keep (out, n_pruned): the mask in the
    pruned layer's input numbering. Returns (W (out, n_pruned), b (out,) or None); with fit_bias=False the bias is
    left as the dense one and only W is fitted to the dense outputs minus that bias."""
    out = w_dense.shape[0]
    b = np.zeros(out) if b_dense is None else np.broadcast_to(np.asarray(b_dense, np.float64), (out,))
    target = np.hstack([np.asarray(w_dense, np.float64), b[:, None]])  # (out, n_dense + 1)
    c = gram.cross @ target.T  # (n_pruned + 1, out)
    if fit_bias:
        wb = ridge_refit(gram.h, c, np.hstack([keep, np.ones((out, 1), bool)]), ridge)
        return wb[:, :-1], wb[:, -1]
    # without a fitted bias the fixed dense bias is subtracted: C' = X̃ᵀ(T − 1bᵀ) = C − (X̃ᵀ1) bᵀ
    h = gram.h  # built once (each access assembles a new matrix)
    c = c[:-1] - np.outer(h[:-1, -1], b)
    return ridge_refit(h[:-1, :-1], c, keep, ridge), None if b_dense is None else b.copy()
