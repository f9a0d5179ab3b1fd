"""Data bigger than memory: a directory of `.npy` memmaps or of `.npz` shards, read lazily.

`read_dir(folder)` gives one `LazyArray` per array name:
- `.npy` files (`x.npy`, optional `y.npy`, or one `<input name>.npy` per model input), opened with
  `np.load(mmap_mode="r")`;
- `.npz` shards (sorted by file name), each holding the same array names, presented as one array per name that
  concatenates the shards along the sample axis. Only the member headers are read up front; a request reads only
  the samples it asks for, never a whole shard: from an uncompressed shard (`np.savez`) by file offset, from a
  compressed one (`np.savez_compressed`) by decompressing forward from where the last read stopped (a sequential
  pass decompresses each shard once). Memory is one batch, whatever the shard size (a 512-image shard of 224²
  float32 is 308 MB: holding it whole, twice once the re-fit reads its subset, cost ResNet-50 `compress` 0.6 GB).
  A shard whose arrays disagree in per-sample shape or dtype with the first shard (or miss one of its arrays) is
  one error naming the shard.

`LazyArray` supports `len`, `shape`, `ndim`, `dtype`, integer / slice / integer-array / boolean indexing of the
sample axis (which return numpy arrays of just those samples) and `take(idx)` (a lazy view: what
`Dataset.subset` uses). It pickles as file names and indices, never as data (Ray tasks reopen the files, so on a
cluster the folder must be on storage every node sees at the same path). `np.asarray(lazy)` reads everything: the
fallback for code that needs a real array.
"""
from __future__ import annotations

import struct
import zipfile
import zlib
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
        self._cache: tuple[int, np.ndarray] | None = None  # a whole member: only for Fortran-order arrays
        self._maps: dict[int, np.ndarray] = {}
        self._where: dict[int, tuple[str, int, int, bool, int, int]] = {}  # segment → `_locate`
        self._stream: _Inflate | None = None  # the compressed member being read forward

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
        d["_cache"], d["_maps"], d["_where"], d["_stream"] = None, {}, {}, None
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
        return self._view(base)

    def _view(self, base: np.ndarray) -> "LazyArray":
        """The same files, samples `base` (subclasses that read another kind of file return their own type)."""
        return LazyArray(self.segments, self.sample_shape, self.dtype, base)

    # reading
    def _source(self, s: int) -> np.ndarray:
        """The whole array of segment `s`: a memmap of an `.npy`; a Fortran-order `.npz` member read whole (kept)."""
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
                raise self._unreadable(seg, e) from None
            self._check(seg, a.shape, a.dtype)
            self._cache = (s, a)
        return self._cache[1]

    def _unreadable(self, seg: _Segment, e: Exception) -> OnnxPruneError:
        return OnnxPruneError(f"{seg.path}: cannot read '{seg.key}' ({str(e).splitlines()[0][:200]})")

    def _check(self, seg: _Segment, shape, dtype) -> None:
        if tuple(shape[1:]) != self.sample_shape or np.dtype(dtype) != self.dtype or shape[0] != seg.n:
            raise OnnxPruneError(f"{seg.path}: '{seg.key}' changed since it was opened (shape {tuple(shape)}, "
                                 f"dtype {dtype})")

    def _header(self, seg: _Segment, f) -> bool:
        """Read an .npy header from `f` (positioned at it), check it against the segment; whether Fortran order."""
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version[0] == 1
                                 else np.lib.format.read_array_header_2_0(f))
        self._check(seg, shape, dtype)
        return bool(fortran) and len(self.sample_shape) > 0

    def _locate(self, s: int) -> tuple[str, int, int, bool, int, int]:
        """Where segment `s`'s samples are: (how, file offset, .npy header length, Fortran order, CRC-32, size):
        "stored" (offset of the array data), "deflated" (offset of the compressed bytes) or "whole" (another
        compression: read whole)."""
        if s in self._where:
            return self._where[s]
        seg = self.segments[s]
        try:
            with zipfile.ZipFile(seg.path) as zf:
                info = zf.getinfo(seg.key + ".npy")
                with zf.open(info) as m:
                    fortran = self._header(seg, m)
                    header = m.tell()
                how = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}.get(info.compress_type, "whole")
                start = 0
                if how != "whole" and not info.flag_bits & 0x1:
                    with open(seg.path, "rb") as f:
                        f.seek(info.header_offset)
                        local = f.read(30)
                    if len(local) != 30 or local[:4] != b"PK\x03\x04":
                        raise zipfile.BadZipFile("bad local file header")
                    name_len, extra_len = struct.unpack("<HH", local[26:30])
                    start = info.header_offset + 30 + name_len + extra_len + (header if how == "stored" else 0)
                else:
                    how = "whole"
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
            raise self._unreadable(seg, e) from None
        self._where[s] = (how, start, header, fortran, info.CRC, info.file_size)
        return self._where[s]

    def _rows(self, s: int, local: np.ndarray, dest: np.ndarray) -> None:
        """Fill `dest` with rows `local` (strictly ascending) of segment `s`, reading only those samples."""
        seg = self.segments[s]
        how, start, header, fortran, crc, size = (self._locate(s) if seg.key is not None
                                                  else ("whole", 0, 0, False, 0, 0))
        if how == "whole" or fortran:
            src = self._source(s)
            dest[...] = src[local[0]:local[-1] + 1] if local[-1] - local[0] == len(local) - 1 else src[local]
            return
        row = int(np.prod(self.sample_shape, dtype=np.int64)) * self.dtype.itemsize
        cuts = np.flatnonzero(np.diff(local) != 1) + 1
        runs = zip(np.concatenate([[0], cuts]).tolist(), np.concatenate([cuts, [len(local)]]).tolist())
        view = memoryview(dest.reshape(-1).view(np.uint8))
        try:
            if how == "stored":  # read each run at its offset
                with open(seg.path, "rb", buffering=0) as f:
                    for a, b in runs:
                        f.seek(start + int(local[a]) * row)
                        done = 0
                        while done < (b - a) * row:
                            got = f.readinto(view[a * row + done:b * row])
                            if not got:
                                raise EOFError("the file ends early (truncated shard)")
                            done += got
            else:  # decompress forward from the last read's end (start over to go back)
                if self._stream is None or self._stream.segment != s or self._stream.row > int(local[0]):
                    self._close_stream()
                    self._stream = _Inflate(s, seg.path, start, header, crc, size)
                for a, b in runs:
                    self._stream.read_rows(int(local[a]), view[a * row:b * row], row)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as e:
            self._close_stream()
            raise self._unreadable(seg, e) from None

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _read(self, pos: np.ndarray) -> np.ndarray:
        base = pos if self.index is None else self.index[pos]
        out = np.empty((len(base), *self.sample_shape), self.dtype)
        if not len(base):
            return out
        seg = np.searchsorted(self.offsets, base, side="right") - 1
        for s in np.unique(seg).tolist():
            hits = np.flatnonzero(seg == s)
            local = base[hits] - self.offsets[s]
            if hits[-1] - hits[0] == len(hits) - 1 and np.all(np.diff(local) > 0):  # the usual case: in place
                if out.size:
                    self._rows(s, local, out[hits[0]:hits[-1] + 1])
                continue
            order = np.argsort(local, kind="stable")
            uniq, inverse = np.unique(local[order], return_inverse=True)
            rows = np.empty((len(uniq), *self.sample_shape), self.dtype)
            if rows.size:
                self._rows(s, uniq, rows)
            out[hits[order]] = rows[inverse.reshape(-1)]
        return out


class _Inflate:
    """A deflated `.npz` member read forward in bounded pieces (zlib directly: `ZipFile.open().read(n)` builds
    several copies of each request). A read that reaches the member's end checks its CRC-32, as `np.load` does:
    a full pass (the finite-value check of float data) finds a damaged shard."""

    PIECE = 1 << 15  # bytes decompressed per call (and compressed bytes read: half): the transient memory of a read

    def __init__(self, segment: int, path: str, start: int, header: int, crc: int, size: int) -> None:
        self.segment, self.row = segment, 0
        self.crc, self.want_crc, self.left = 0, crc, size
        self.f = open(path, "rb")
        self.f.seek(start)
        self.z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._out(memoryview(bytearray(header)))  # the .npy header (already checked)

    def _out(self, view: memoryview) -> None:
        done = 0
        while done < len(view):
            data = self.z.unconsumed_tail or self.f.read(self.PIECE // 2)
            if not data:
                raise EOFError("the file ends early (truncated shard)")
            got = self.z.decompress(data, min(len(view) - done, self.PIECE))
            view[done:done + len(got)] = got
            done += len(got)
            self.crc = zlib.crc32(got, self.crc)
            self.left -= len(got)
            if self.left == 0 and self.crc != self.want_crc:
                raise zipfile.BadZipFile("bad CRC-32: the shard is damaged")

    def read_rows(self, first: int, view: memoryview, row: int) -> None:
        skip = (first - self.row) * row
        sink = memoryview(bytearray(min(skip, self.PIECE))) if skip > 0 else None
        while skip > 0:  # decompress and drop what lies before
            k = min(skip, self.PIECE)
            self._out(sink[:k])
            skip -= k
        self._out(view)
        self.row = first + len(view) // row

    def close(self) -> None:
        self.f.close()


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
