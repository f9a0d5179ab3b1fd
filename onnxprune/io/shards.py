"""Data bigger than memory: a directory of `.npy` memmaps or of `.npz` shards, read lazily.

`read_dir(folder)` gives one `LazyArray` per array name:
- `.npy` files (`x.npy`, optional `y.npy`, or one `<input name>.npy` per model input), opened with
  `np.load(mmap_mode="r")`;
- `.npz` shards (sorted by file name), each holding the same array names, presented as one array per name that
  concatenates the shards along the sample axis. Only the member headers are read up front; a request decompresses
  only the shards it touches (the last one read is kept, so a sequential pass reads each shard once). A shard whose
  arrays disagree in per-sample shape or dtype with the first shard (or miss one of its arrays) is one error naming
  the shard.

`LazyArray` supports `len`, `shape`, `ndim`, `dtype`, integer / slice / integer-array / boolean indexing of the
sample axis (which return numpy arrays of just those samples) and `take(idx)` (a lazy view: what
`Dataset.subset` uses). It pickles as file names and indices, never as data (Ray tasks reopen the files, so on a
cluster the folder must be on storage every node sees at the same path). `np.asarray(lazy)` reads everything: the
fallback for code that needs a real array.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import OnnxPruneError


@dataclass(frozen=True)
class _Segment:
    path: str  # absolute
    key: str | None  # member of an .npz; None: a whole .npy (memory-mapped)
    n: int


class LazyArray:
    """Samples stored across files, concatenated along axis 0; optionally a view on a subset of them (`index`)."""

    def __init__(self, segments: list[_Segment], sample_shape: tuple[int, ...], dtype: np.dtype,
                 index: np.ndarray | None = None) -> None:
        self.segments = list(segments)
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.dtype = np.dtype(dtype)
        self.offsets = np.concatenate([[0], np.cumsum([s.n for s in self.segments])]).astype(np.int64)
        self.index = None if index is None else np.asarray(index, dtype=np.int64)
        self._cache: tuple[int, np.ndarray] | None = None
        self._maps: dict[int, np.ndarray] = {}

    # array-like surface
    def __len__(self) -> int:
        return int(self.offsets[-1]) if self.index is None else len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.sample_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"LazyArray(shape={self.shape}, dtype={self.dtype}, files={len(self.segments)})"

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_cache"], d["_maps"] = None, {}
        return d

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a if dtype is None else a.astype(dtype, copy=False)

    def _positions(self, key) -> np.ndarray | int:
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"index {i} out of range for {n} samples")
            return i % n
        if isinstance(key, slice):
            return np.arange(*key.indices(n), dtype=np.int64)
        idx = np.asarray(key)
        if idx.dtype == np.bool_:
            if idx.shape != (n,):
                raise IndexError(f"boolean index of shape {idx.shape} for {n} samples")
            return np.flatnonzero(idx)
        if not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"unsupported index of dtype {idx.dtype}")
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for {n} samples")
        return np.where(idx < 0, idx + n, idx).astype(np.int64)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            first, rest = (key[0] if key else slice(None)), key[1:]
            head = self[first]
            return head[rest] if np.ndim(self._positions(first)) == 0 else head[(slice(None), *rest)]
        pos = self._positions(key)
        if np.ndim(pos) == 0:
            return self._read(np.array([pos]))[0]
        return self._read(pos)

    def take(self, idx) -> "LazyArray":
        """A lazy view on the samples `idx` (nothing is read)."""
        pos = self._positions(idx)
        pos = np.atleast_1d(pos)
        base = pos if self.index is None else self.index[pos]
        return LazyArray(self.segments, self.sample_shape, self.dtype, base)

    # reading
    def _source(self, s: int) -> np.ndarray:
        seg = self.segments[s]
        if seg.key is None:
            if s not in self._maps:
                self._maps[s] = np.load(seg.path, mmap_mode="r", allow_pickle=False)
            return self._maps[s]
        if self._cache is None or self._cache[0] != s:
            self._cache = None  # drop the previous shard before reading the next
            try:
                with np.load(seg.path, allow_pickle=False) as z:
                    a = z[seg.key]
            except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
                raise OnnxPruneError(f"{seg.path}: cannot read '{seg.key}' ({str(e).splitlines()[0][:200]})") from None
            if a.shape[1:] != self.sample_shape or a.dtype != self.dtype or len(a) != seg.n:
                raise OnnxPruneError(f"{seg.path}: '{seg.key}' changed since it was opened (shape {a.shape}, "
                                     f"dtype {a.dtype})")
            self._cache = (s, a)
        return self._cache[1]

    def _read(self, pos: np.ndarray) -> np.ndarray:
        base = pos if self.index is None else self.index[pos]
        out = np.empty((len(base), *self.sample_shape), self.dtype)
        if not len(base):
            return out
        seg = np.searchsorted(self.offsets, base, side="right") - 1
        if np.all(seg[1:] >= seg[:-1]):  # sorted by segment (the usual case): contiguous runs
            cuts = np.flatnonzero(np.diff(seg)) + 1
            runs = zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(base)]]))
            for a, b in runs:
                s = int(seg[a])
                local = base[a:b] - self.offsets[s]
                src = self._source(s)
                if local[-1] - local[0] == b - a - 1 and np.all(np.diff(local) == 1):
                    out[a:b] = src[local[0]:local[-1] + 1]
                else:
                    out[a:b] = src[local]
            return out
        for s in np.unique(seg):
            m = seg == s
            out[m] = self._source(int(s))[base[m] - self.offsets[s]]
        return out


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{name: (shape, dtype)} of an .npz's members, from their headers only (nothing decompressed)."""
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version[0] == 1
                                       else np.lib.format.read_array_header_2_0(f))
                out[name[:-4]] = (tuple(shape), np.dtype(dtype))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise OnnxPruneError(f"{path}: not a readable .npz shard ({str(e).splitlines()[0][:200]})") from None
    return out


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise OnnxPruneError(f"{path}: not a readable .npy file ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(a, np.ndarray) or a.ndim == 0:
        raise OnnxPruneError(f"{path}: expected an array with a leading sample axis, got a scalar")
    return a.shape, a.dtype


def read_dir(folder: str | Path) -> dict[str, LazyArray]:
    """One lazy array per name from a folder of `.npy` files or of `.npz` shards (see the module docstring)."""
    folder = Path(folder).resolve()
    npz = sorted(folder.glob("*.npz"))
    npy = sorted(folder.glob("*.npy"))
    if npz and npy:
        raise OnnxPruneError(f"{folder}/ holds both .npz shards and .npy files; keep one kind per data folder")
    if npy:
        out = {}
        for p in npy:
            shape, dtype = _npy_header(p)
            out[p.stem] = LazyArray([_Segment(str(p), None, shape[0])], shape[1:], dtype)
        return out
    if not npz:
        raise OnnxPruneError(f"{folder}/: no .npz shards or .npy files in this folder")
    first = _npz_headers(npz[0])
    if not first:
        raise OnnxPruneError(f"{npz[0]}: shard holds no arrays")
    segs: dict[str, list[_Segment]] = {k: [] for k in first}
    for p in npz:
        heads = first if p == npz[0] else _npz_headers(p)
        if set(heads) != set(first):
            raise OnnxPruneError(f"{p}: shard holds arrays {', '.join(sorted(heads)) or 'none'}; the first shard "
                                 f"{npz[0].name} holds {', '.join(sorted(first))}")
        counts = set()
        for k, (shape, dtype) in heads.items():
            shape0, dtype0 = first[k]
            if len(shape) == 0 or shape[1:] != shape0[1:] or dtype != dtype0:
                raise OnnxPruneError(f"{p}: shard array '{k}' has per-sample shape {tuple(shape[1:])} and dtype "
                                     f"{dtype}; the first shard {npz[0].name} has {tuple(shape0[1:])} and {dtype0}")
            counts.add(shape[0])
            segs[k].append(_Segment(str(p), k, shape[0]))
        if len(counts) > 1:
            raise OnnxPruneError(f"{p}: shard arrays have different sample counts "
                                 f"({', '.join(map(str, sorted(counts)))})")
    return {k: LazyArray(v, first[k][0][1:], first[k][1]) for k, v in segs.items()}
