"""Online, mergeable accumulators of activation statistics (float64 inside).

Every accumulator has `update(values, labels)` for one batch, `merge(other)` (associative and commutative up to
float rounding: merging the accumulators of two halves equals one pass over the whole) and `finalize()` returning a
dict of float64 arrays. Memory depends on the number of features (and classes), never on the number of samples.

`values` is always a 2-D array (B, F): one row per sample. Callers reshape maps before calling (the collector
reduces conv maps to per-sample channel means inside the onnxruntime graph).

Means and second moments are sums about a per-feature shift (the first sample seen), not raw Σx² − (Σx)²/n, so
constant features give exactly zero variance and large-mean / small-variance features keep their variance; merging
re-bases one side onto the other's shift exactly. Contributions use Chan's pairwise (batched Welford) update.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import blas as _blas

from ..errors import OnnxPruneError

# A feature whose total standard deviation is below this fraction of its |mean| is treated as constant (float32
# activations cannot carry more relative resolution than ~6e-8, so anything below is rounding, not signal).
CONST_RTOL = 1e-9


def as_2d(values: np.ndarray, name: str = "values") -> np.ndarray:
    """(B, ...) → (B, F) float64, with a clear error for anything else."""
    a = np.asarray(values)
    if a.ndim == 0:
        raise OnnxPruneError(f"{name}: expected a (batch, features) array, got a scalar")
    if a.ndim == 1:
        raise OnnxPruneError(f"{name}: expected a (batch, features) array, got shape {a.shape}")
    return a.reshape(len(a), -1).astype(np.float64, copy=False)


def _as_2d_any(values, name: str = "values") -> np.ndarray:
    """(B, ...) → (B, F) in its own float dtype (float32 stays float32; the maths upcasts as it goes)."""
    a = np.asarray(values)
    if a.ndim < 2:
        raise OnnxPruneError(f"{name}: expected a (batch, features) array, got shape {a.shape}")
    a = a.reshape(len(a), -1)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


def _check_width(acc_f: int | None, values: np.ndarray, what: str) -> int:
    f = values.shape[1]
    if acc_f is not None and f != acc_f:
        raise OnnxPruneError(f"{what}: batch has {f} features, earlier batches had {acc_f}")
    return f


def check_labels(labels, b: int, what: str, k: int | None = None) -> np.ndarray:
    """(b,) integer labels as int64, or a clear error; with `k`, every label must also lie in 0..k-1."""
    if labels is None:
        raise OnnxPruneError(f"{what}: class statistics need labels (true labels or the model's predictions)")
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != b:
        raise OnnxPruneError(f"{what}: labels have shape {y.shape}, expected ({b},): one per sample")
    if not np.issubdtype(y.dtype, np.integer):
        raise OnnxPruneError(f"{what}: labels must be integers, got {y.dtype}")
    if b and k is not None and (y.min() < 0 or y.max() >= k):
        raise OnnxPruneError(f"{what}: labels must lie in 0..{k - 1}, found {y.min()}..{y.max()}")
    if b and y.min() < 0:
        raise OnnxPruneError(f"{what}: negative labels")
    return y.astype(np.int64, copy=False)


def _chan_merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Combine (count, mean, centred sum of squares) of two disjoint sample sets; counts broadcast over features."""
    n = n_a + n_b
    with np.errstate(invalid="ignore", divide="ignore"):
        wb = np.where(n > 0, n_b / np.where(n > 0, n, 1), 0.0)
    delta = mean_b - mean_a
    mean = mean_a + delta * wb
    m2 = m2_a + m2_b + delta * delta * n_a * wb
    return n, mean, m2


class _Shifted:
    """Shared maths of shifted sums: with a fixed per-feature shift K (the first sample seen), keep Σ(x−K) (overall
    or per class) and Σ(x−K)². Shifting by a data point removes the cancellation of raw Σx² − (Σx)²/n (the
    'shifted data' algorithm), makes a constant feature contribute exact zeros, and keeps each batch to one cast,
    one subtraction and one GEMM. Merging re-bases the other side's sums onto this shift exactly."""

    @staticmethod
    def rebase(n, s, ss, delta):
        """Sums about shift K_b → sums about K_a, where delta = K_b − K_a (x − K_a = (x − K_b) + delta)."""
        return s + n * delta, ss + 2.0 * delta * s + n * delta * delta


class Moments:
    """Per-feature count, mean, variance (population) and squared L2 norm Σx².

    `update(values, labels=None, sq=None)`: `sq` (B, F), when given, is what each sample adds to the squared norm
    instead of values² — the collector passes the per-sample Σ over spatial positions of x² for conv maps, so
    `sqnorm` is then ‖x_j‖² over samples *and* positions (Wanda's norm), while mean/var are over per-sample means.
    """

    def __init__(self) -> None:
        self.n = 0
        self.f: int | None = None
        self.shift: np.ndarray | None = None
        self.s: np.ndarray | None = None
        self.ss: np.ndarray | None = None
        self.sqnorm: np.ndarray | None = None

    def update(self, values, labels=None, sq=None) -> None:
        x = _as_2d_any(values)
        self.f = _check_width(self.f, x, "moments")
        if len(x) == 0:
            return
        if self.shift is None:
            self.shift = x[0].astype(np.float64)
            self.s, self.ss, self.sqnorm = np.zeros(self.f), np.zeros(self.f), np.zeros(self.f)
        d = np.subtract(x, self.shift, dtype=np.float64)
        self.s += d.sum(0)
        self.ss += (d * d).sum(0)
        self.sqnorm += np.square(x, dtype=np.float64).sum(0) if sq is None else as_2d(sq, "moments sq").sum(0)
        self.n += len(x)

    def merge(self, other: Moments) -> Moments:
        if not other.n:
            return self
        _check_width(self.f, np.empty((0, other.f)), "moments merge")
        if not self.n:
            self.f, self.n, self.shift = other.f, other.n, other.shift.copy()
            self.s, self.ss, self.sqnorm = other.s.copy(), other.ss.copy(), other.sqnorm.copy()
            return self
        s, ss = _Shifted.rebase(other.n, other.s, other.ss, other.shift - self.shift)
        self.s, self.ss, self.sqnorm = self.s + s, self.ss + ss, self.sqnorm + other.sqnorm
        self.n += other.n
        return self

    def finalize(self) -> dict[str, np.ndarray]:
        if not self.n:
            raise OnnxPruneError("moments: no samples were accumulated")
        m = self.s / self.n
        var = np.maximum(self.ss / self.n - m * m, 0.0)
        return {"n": np.float64(self.n), "mean": self.shift + m, "var": var, "sqnorm": self.sqnorm.copy()}


class ClassMoments:
    """Per-class counts n_c and sums S_c and the total sum of squares SS → one-way ANOVA F per feature (paper 001 §3.2).

    F_j = [Σ_c n_c (x̄_cj − x̄_j)² / (C−1)] / [(SS_j − Σ_c S_cj²/n_c) / (N−C)], C = classes actually seen; the
    within-class sum of squares Σ_c (SS_c − S_c²/n_c) needs only the total SS = Σ_c SS_c, so SS is kept per feature,
    not per class. Sums are taken about a per-feature shift (see `_Shifted`), which leaves F unchanged. Constant (or
    dead) features → F = 0; fewer than two classes or N ≤ C → all zeros. A feature constant within every class but
    different between classes has zero within-class variance → F = inf (as scipy gives). `update` does one one-hot
    GEMM per batch; the collector computes a batch's sums in the onnxruntime graph instead (`add_sums`). The class
    count grows on demand, so `n_classes` is only a hint.
    """

    def __init__(self, n_classes: int = 0) -> None:
        self.f: int | None = None
        self.k = max(int(n_classes), 0)
        self.count = np.zeros(self.k)
        self.shift: np.ndarray | None = None
        self.s: np.ndarray | None = None  # (k, F)
        self.ss: np.ndarray | None = None  # (F,): over all classes

    def _grow(self, k: int) -> None:
        if k <= self.k:
            return
        pad = k - self.k
        self.count = np.concatenate([self.count, np.zeros(pad)])
        if self.s is not None:
            self.s = np.vstack([self.s, np.zeros((pad, self.f))])
        self.k = k

    def _start(self, f: int, shift: np.ndarray) -> None:
        self.f, self.shift = f, np.array(shift, dtype=np.float64)
        self.s, self.ss = np.zeros((self.k, f)), np.zeros(f)

    def update(self, values, labels) -> None:
        x = _as_2d_any(values)
        b = len(x)
        y = check_labels(labels, b, "class moments")
        _check_width(self.f, x, "class moments")
        if b == 0:
            return
        self._grow(int(y.max()) + 1)
        if self.shift is None:
            self._start(x.shape[1], x[0])
        d = np.subtract(x, self.shift, dtype=np.float64)  # upcast and shift in one pass
        onehot = np.zeros((self.k, b))
        onehot[y, np.arange(b)] = 1.0
        self.count += onehot.sum(1)
        self.s += onehot @ d
        self.ss += np.einsum("ij,ij->j", d, d)

    def add_sums(self, count, shift, s, ss) -> ClassMoments:
        """Add sums taken about `shift` (F,): n_c (K,), S_c = Σ_{y=c}(x − shift) (K, F) and SS = Σ(x − shift)² (F,).

        They are one batch's, as the instrumented graph computes them (float32 there, float64 from here on), or
        another accumulator's (`merge`). Sums about another shift than ours are re-based onto it exactly; the
        collector feeds every batch the same shift, so then they are just added.
        """
        shift = np.asarray(shift).reshape(-1)
        k, f = len(count), len(shift)
        if np.shape(s) != (k, f) or np.shape(ss) != (f,):
            raise OnnxPruneError(f"class moments: sums of shapes {np.shape(s)} / {np.shape(ss)} do not match {k} "
                                 f"classes and {f} features")
        _check_width(self.f, np.empty((0, f)), "class moments")
        self._grow(k)
        if self.s is None:
            self._start(f, shift)
        delta = shift - self.shift
        if np.count_nonzero(delta):  # re-base S_c with n_c, the total SS with N and Σ_c S_c
            n = np.asarray(count, dtype=np.float64)
            s, ss = s + n[:, None] * delta, _Shifted.rebase(n.sum(), np.sum(s, 0), ss, delta)[1]
        self.count[:k] += count
        self.s[:k] += s
        self.ss += ss
        return self

    @classmethod
    def from_sums(cls, count, shift, s, ss) -> ClassMoments:
        """A new accumulator holding the given sums (see `add_sums`)."""
        return cls(len(count)).add_sums(count, shift, s, ss)

    def merge(self, other: ClassMoments) -> ClassMoments:
        if other.s is None:
            return self
        return self.add_sums(other.count, other.shift, other.s, other.ss)

    def finalize(self) -> dict[str, np.ndarray]:
        if self.s is None:
            raise OnnxPruneError("class moments: no samples were accumulated")
        n_c = self.count
        big_n = n_c.sum()
        seen = n_c > 0
        c = int(seen.sum())
        safe = np.where(seen, n_c, 1)[:, None]
        mean_c = self.s / safe  # about the shift
        grand = self.s.sum(0) / big_n
        within = np.maximum(self.ss - (self.s * mean_c).sum(0), 0.0)
        dev = mean_c - grand
        between = (n_c[:, None] * dev * dev).sum(0)
        f = np.zeros(self.f)
        if c >= 2 and big_n > c:
            total = between + within
            const = (total == 0) | (total / big_n <= (CONST_RTOL * np.abs(grand + self.shift)) ** 2)
            ms_b = between / (c - 1)
            ms_w = within / (big_n - c)
            with np.errstate(invalid="ignore", divide="ignore"):
                f = np.where(ms_w > 0, ms_b / np.where(ms_w > 0, ms_w, 1), np.inf)
            f[const] = 0.0
        class_mean = np.where(seen[:, None], mean_c + self.shift, 0.0)
        return {"n": np.float64(big_n), "f": f, "class_n": n_c.copy(), "class_mean": class_mean}


class ZeroCounts:
    """Fraction of exact zeros per feature (APoZ).

    Raw mode (default): `values` (B, F) are activations; zeros are counted here. Fraction mode
    (`fractions=True`): `values` are per-sample zero fractions already computed (the collector computes them in the
    onnxruntime graph over each channel's spatial positions); every sample then weighs the same, which equals the
    fraction over samples and positions because every sample has the same number of positions.
    """

    def __init__(self, fractions: bool = False) -> None:
        self.fractions = fractions
        self.n = 0
        self.f: int | None = None
        self.zeros: np.ndarray | None = None

    def update(self, values, labels=None) -> None:
        a = np.asarray(values)
        if a.ndim < 2:
            raise OnnxPruneError(f"zero counts: expected a (batch, features) array, got shape {a.shape}")
        a = a.reshape(len(a), -1)
        self.f = _check_width(self.f, a, "zero counts")
        z = a.sum(0, dtype=np.float64) if self.fractions else (a == 0).sum(0, dtype=np.float64)
        self.zeros = z if self.zeros is None else self.zeros + z
        self.n += len(a)

    def merge(self, other: ZeroCounts) -> ZeroCounts:
        if other.zeros is not None:
            _check_width(self.f, np.empty((0, other.f)), "zero counts merge")
            self.f = other.f
            self.zeros = other.zeros.copy() if self.zeros is None else self.zeros + other.zeros
            self.n += other.n
        return self

    def finalize(self) -> dict[str, np.ndarray]:
        if not self.n:
            raise OnnxPruneError("zero counts: no samples were accumulated")
        return {"n": np.float64(self.n), "apoz": self.zeros / self.n}


class Gram:
    """XᵀX (F×F) summed over samples, float64 (for least-squares reconstruction). Uses BLAS syrk (half a GEMM)."""

    def __init__(self) -> None:
        self.n = 0
        self.f: int | None = None
        self.g: np.ndarray | None = None  # upper triangle only until finalize

    def update(self, values, labels=None) -> None:
        x = as_2d(values)
        self.f = _check_width(self.f, x, "gram")
        if self.g is None:
            self.g = np.zeros((self.f, self.f), order="F")
        if len(x):
            # C = alpha * A^T A + beta * C (trans=1 with a C-ordered x is x^T x in Fortran terms)
            self.g = _blas.dsyrk(1.0, np.asfortranarray(x), beta=1.0, c=self.g, trans=1, lower=0,
                                 overwrite_c=1)
        self.n += len(x)

    def merge(self, other: Gram) -> Gram:
        if other.g is not None:
            _check_width(self.f, np.empty((0, other.f)), "gram merge")
            self.f = other.f
            self.g = np.array(other.g, order="F") if self.g is None else self.g + other.g
            self.n += other.n
        return self

    def finalize(self) -> dict[str, np.ndarray]:
        if self.g is None:
            raise OnnxPruneError("gram: no samples were accumulated")
        u = np.triu(self.g)
        return {"n": np.float64(self.n), "gram": np.ascontiguousarray(u + np.triu(u, 1).T)}


class Contributions:
    """Relative importance of each connection (paper 003, DESIGN §4), mean and std over samples.

    Per sample s: r_sij = |w_ij·x_sj| / (Σ_k |w_ik·x_sk| + |b_i| + eps). Samples where output neuron i's
    pre-activation lies in the blind range of the following activation are skipped for row i (`active[s, i]` is
    False), so counts differ per row. `weight` is (out, in) — for a Conv layer, the kernel summed over its spatial
    axes, with x the per-sample input channel means (the collector arranges that); `groups` > 1 means `weight` is
    (out, in/groups) and output i sees input channels of its group only.

    Vectorised exactly, without a (B, out, in) temporary: with D_si = |x_s|·|w_i| + |b_i| + eps and m_si the keep
    mask, Σ_s m_si r_sij = |w_ij| [(m/D)ᵀ|X|]_ij and Σ_s m_si r_sij² = w_ij² [(m/D²)ᵀX²]_ij — three GEMMs per batch.
    Per batch we form (count, mean, M2 = Σr² − (Σr)²/n in float64 — harmless cancellation since r ∈ [0, 1]) per
    (i, j) and combine batches with Chan's rule (the batched, mergeable form of Welford's update); the std reported
    is the population std over kept samples (0 where fewer than 2 were kept).
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None = None, groups: int = 1, eps: float = 1e-12):
        w = np.asarray(weight, dtype=np.float64)
        if w.ndim != 2:
            raise OnnxPruneError(f"contributions: weight must be (out, in), got shape {w.shape}")
        self.out, self.in_local = w.shape
        self.groups = int(groups)
        if self.out % self.groups:
            raise OnnxPruneError(f"contributions: {self.out} outputs not divisible by {self.groups} groups")
        self.in_full = self.in_local * self.groups
        if self.groups == 1:
            self.absw = np.abs(w)
        else:  # block-diagonal (out, in_full) with zeros outside each output's group
            self.absw = np.zeros((self.out, self.in_full))
            og = self.out // self.groups
            for g in range(self.groups):
                self.absw[g * og:(g + 1) * og, g * self.in_local:(g + 1) * self.in_local] = np.abs(w[g * og:(g + 1) * og])
        b = np.zeros(self.out) if bias is None else np.broadcast_to(np.asarray(bias, np.float64).reshape(-1), (self.out,))
        self.absb = np.abs(b)
        self.eps = eps
        self.count = np.zeros(self.out)
        self.mean = np.zeros((self.out, self.in_full))
        self.m2 = np.zeros((self.out, self.in_full))

    def update(self, values, labels=None, active=None) -> None:
        x = as_2d(values, "contributions input")
        if x.shape[1] != self.in_full:
            raise OnnxPruneError(f"contributions: input has {x.shape[1]} features, weight expects {self.in_full}")
        b = len(x)
        if b == 0:
            return
        ax = np.abs(x)
        denom = ax @ self.absw.T + self.absb + self.eps  # (B, out)
        if active is None:
            m = np.ones((b, self.out))
        else:
            m = np.asarray(active, dtype=np.float64).reshape(b, -1)
            if m.shape[1] != self.out:
                raise OnnxPruneError(f"contributions: activity mask has {m.shape[1]} outputs, weight has {self.out}")
        nb = m.sum(0)  # (out,)
        s1 = (m / denom).T @ ax * self.absw  # Σ_s m r
        s2 = (m / (denom * denom)).T @ (ax * ax) * (self.absw * self.absw)  # Σ_s m r²
        safe = np.where(nb > 0, nb, 1)[:, None]
        mb = s1 / safe
        m2b = np.maximum(s2 - s1 * mb, 0.0)
        n, self.mean, self.m2 = _chan_merge(self.count[:, None], self.mean, self.m2, nb[:, None], mb, m2b)
        self.count = n[:, 0]

    def merge(self, other: Contributions) -> Contributions:
        if other.mean.shape != self.mean.shape:
            raise OnnxPruneError("contributions merge: accumulators are for different layers")
        n, self.mean, self.m2 = _chan_merge(self.count[:, None], self.mean, self.m2, other.count[:, None],
                                            other.mean, other.m2)
        self.count = n[:, 0]
        return self

    def _local(self, a: np.ndarray) -> np.ndarray:
        if self.groups == 1:
            return a
        og = self.out // self.groups
        cols = (np.arange(self.out)[:, None] // og) * self.in_local + np.arange(self.in_local)[None, :]
        return np.take_along_axis(a, cols, axis=1)

    def finalize(self) -> dict[str, np.ndarray]:
        cnt = np.broadcast_to(self.count[:, None], self.mean.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(cnt > 0, self.m2 / np.where(cnt > 0, cnt, 1), 0.0)
        return {"n": np.float64(self.count.max(initial=0)), "ri_mean": self._local(self.mean),
                "ri_std": self._local(np.sqrt(var)), "ri_count": self._local(np.array(cnt))}
