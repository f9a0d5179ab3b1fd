"""Calibration / evaluation data: `.npz` files with `x` (or one array per input name) and optional `y`.

Data is validated against the model up front so a mismatch is one clear sentence, not an onnxruntime stack trace
or a silently wrong model: shapes and dtypes against the inputs, every value finite (NaN / Inf would give NaN
weights), labels integers in [0, K) where K is the class count the model's output gives. Arrays stay in their
stored dtype (uint8 images stay small) and are cast per batch. A model that fixes its batch size (batch 1 is the
`torch.onnx.export` default) is always fed batches of exactly that size, whatever batch size a caller asks for.

Besides one `.npz`, a data path may be a folder of `.npy` memmaps or of `.npz` shards (`io/shards.py`), or a folder
of image files with class sub-folders or a JSON preprocessing spec naming one (`io/images.py`): inputs are then
`LazyArray`s read batch by batch, so memory stays flat in the number of samples; every check below reads them in
chunks (decoded images are finite by construction and skip that check). Labels (`y`, N integers) are always read
into memory.
"""
from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..errors import OnnxPruneError
from ..progress import say
from .images import is_image_data, read_images
from .runtime import InputSpec, input_specs
from .shards import LazyArray, read_dir


def take_rows(a, idx):
    """`a[idx]` for a numpy array; a lazy view (nothing read) for a `LazyArray`."""
    return a.take(idx) if isinstance(a, LazyArray) else a[idx]


def row_range(a, i: int, j: int):
    """Samples i..j-1: a numpy view, or a lazy view of a `LazyArray`."""
    return a.take(slice(i, j)) if isinstance(a, LazyArray) else a[i:j]


def chunk_rows(a, budget: int = 1 << 26) -> int:
    """Samples per chunk for a pass over `a` that holds at most ~`budget` bytes (and at most CHUNK samples)."""
    per = max(1, int(np.prod(a.shape[1:], dtype=np.int64)) * np.dtype(a.dtype).itemsize)
    return max(1, min(CHUNK, budget // per))


@dataclass
class Dataset:
    """Inputs keyed by graph input name, all with the same first (sample) axis, plus optional labels."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    specs: list[InputSpec]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model fixes (every batch must have exactly this many samples), or None."""
        fixed = [s.batch for s in self.specs if getattr(s, "batch", None)]
        return min(fixed) if fixed else None

    def batch_size(self, wanted: int) -> int:
        """The batch size actually fed for a requested one: the model's fixed batch when it has one, else at most
        MAX_BATCH_BYTES of input per batch (onnxruntime's activations grow with the batch: 256 images of 224² made
        ResNet-50's statistics pass hold ~10 GB; memory must not grow with the batch a user asks for)."""
        per = sum(int(np.prod(self.inputs[s.name].shape[1:], dtype=np.int64)) * np.dtype(s.dtype).itemsize
                  for s in self.specs)
        return self.fixed_batch or max(1, min(wanted, MAX_BATCH_BYTES // max(per, 1)))

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Feed dicts of at most `batch_size` samples (exactly the model's fixed batch size when it has one), cast to
        the dtype each input expects."""
        batch_size = self.batch_size(batch_size)
        n = len(self) if limit is None else min(limit, len(self))
        if self.fixed_batch:
            n -= n % self.fixed_batch
        for i in range(0, n, batch_size):
            j = min(i + batch_size, n)
            yield {s.name: np.ascontiguousarray(self.inputs[s.name][i:j], dtype=s.dtype) for s in self.specs}

    def label_batches(self, batch_size: int) -> Iterator[np.ndarray | None]:
        batch_size = self.batch_size(batch_size)
        for i in range(0, len(self), batch_size):
            yield None if self.labels is None else self.labels[i:i + batch_size]

    def subset(self, idx: np.ndarray) -> "Dataset":
        """A view on the samples `idx` (used for seeded splits, e.g. LTT's build / certify halves); for a model with a
        fixed batch size B, cut to a multiple of B samples."""
        idx = np.asarray(idx)
        b = self.fixed_batch
        if b and len(idx) % b and len(idx) > b:
            idx = idx[:len(idx) - len(idx) % b]
        return Dataset({k: take_rows(v, idx) for k, v in self.inputs.items()},
                       None if self.labels is None else self.labels[idx], self.specs, self.source, list(self.notes))

    def range(self, i: int, j: int) -> "Dataset":
        """Samples i..j-1 as views (lazy for folder data): what a distributed pass hands each task."""
        return Dataset({k: row_range(v, i, j) for k, v in self.inputs.items()},
                       None if self.labels is None else self.labels[i:j], self.specs, self.source, list(self.notes))


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz (in memory), or of a folder of .npy memmaps / .npz shards (lazy, `io/shards.py`)."""
    p = Path(path)
    if p.is_dir():
        return read_dir(p)
    if not p.is_file():
        raise OnnxPruneError(f"{p}: no such data file or folder")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise OnnxPruneError(f"{p}: not a readable .npz file ({str(e).splitlines()[0][:200]})") from None


def load_dataset(path: str | Path, model: onnx.ModelProto, preprocess: dict | None = None) -> Dataset:
    """Load an .npz (or a folder of shards, memmaps or images) and check it against the model's inputs; every
    mismatch is a one-line error. `preprocess`: an image folder's spec as a dict (`io/images.py`; it overrides the
    folder's preprocess.json key by key)."""
    specs = input_specs(model)
    image_notes: list[str] = []
    if preprocess is not None or is_image_data(path):
        if not Path(path).exists():
            raise OnnxPruneError(f"{path}: no such data file or folder")
        if not is_image_data(path):
            raise OnnxPruneError(f"{path}: a preprocessing spec is for image folders; this is not one")
        arrays, image_notes = read_images(path, specs, preprocess)
        for note in image_notes:
            say(f"note: {note}")
    else:
        arrays = read_npz(path)
    inputs: dict[str, np.ndarray] = {}
    for s in specs:
        if s.name in arrays:
            inputs[s.name] = arrays[s.name]
        elif "x" in arrays and len(specs) == 1:
            inputs[s.name] = arrays["x"]
        else:
            raise OnnxPruneError(f"{path}: no array for model input '{s.name}' (found: {', '.join(sorted(arrays))}); "
                                 f"store it as 'x' or '{s.name}'")
    n = None
    for s in specs:
        a = inputs[s.name]
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise OnnxPruneError(f"{path}: array for '{s.name}' has dtype {a.dtype}; expected numbers")
        if a.ndim != len(s.sample_shape) + 1 or any(d is not None and d != ad
                                                     for d, ad in zip(s.sample_shape, a.shape[1:])):
            raise OnnxPruneError(f"{path}: array for '{s.name}' has shape {a.shape}, model expects {s.describe()}")
        if n is not None and len(a) != n:
            raise OnnxPruneError(f"{path}: inputs have different sample counts ({n} vs {len(a)})")
        n = len(a)
    if not n:
        raise OnnxPruneError(f"{path}: contains no samples")
    for s in specs:
        check_finite(inputs[s.name], f"{path}: array for '{s.name}'")
    labels = arrays.get("y")
    notes: list[str] = list(image_notes)
    if isinstance(labels, LazyArray):
        labels = labels[:]  # N integers: kept in memory
    if labels is not None:
        if labels.ndim != 1 or len(labels) != n:
            raise OnnxPruneError(f"{path}: 'y' has shape {labels.shape}; expected ({n},) integer class labels")
        if not np.issubdtype(labels.dtype, np.integer):
            raise OnnxPruneError(f"{path}: 'y' has dtype {labels.dtype}; expected integer class labels")
        labels = labels.astype(np.int64)
        if labels.min() < 0:
            first = np.flatnonzero(labels < 0)[:5].tolist()
            raise OnnxPruneError(f"{path}: 'y' has negative labels (samples {_indices(first)})")
        from .shapes import output_kind

        kind, k = output_kind(model, {s.name: (s.batch or 1, *inputs[s.name].shape[1:]) for s in specs})
        if k and labels.max() >= k:
            bad = np.flatnonzero(labels >= k)
            raise OnnxPruneError(f"{path}: 'y' has labels up to {labels.max()}, but the model's output gives {k} "
                                 f"classes (labels must lie in 0..{k - 1}; first bad samples {_indices(bad[:5])})")
        if kind == "values":
            notes.append("the model's output is not a (N, K) class score: 'y' is used only to group samples for "
                         "class statistics, not for accuracy")
    ds = Dataset(inputs, labels, specs, str(path), notes)
    b = ds.fixed_batch
    if b and n % b:
        if n < b:
            raise OnnxPruneError(f"{path}: {n} samples, but the model fixes its batch size to {b}; give at least {b}")
        m = n - n % b  # a slice, not a copy
        ds = Dataset({k: row_range(v, 0, m) for k, v in inputs.items()}, None if labels is None else labels[:m],
                     specs, str(path), notes)
        ds.notes.append(f"the model fixes its batch size to {b}: using the first {len(ds)} of {n} samples")
    return ds


MAX_BATCH_BYTES = 4 << 20  # model input per batch: 6 images of 3×224×224 float32 (ResNet-50 statistics pass:
# 2.9 GB peak at 27 images, 1.6 GB at 8); CIFAR- and MNIST-size batches of 256 are unaffected
CHUNK = 4096  # samples checked at a time (bounded extra memory)


def check_finite(a: np.ndarray, what: str) -> None:
    """A one-line error naming the first samples holding NaN or Inf (floating arrays only)."""
    if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.complexfloating):
        return
    if getattr(a, "finite", False):  # decoded images: finite by construction (no pass over every file)
        return
    bad: list[int] = []
    total = 0
    step = chunk_rows(a)
    for i in range(0, len(a), step):
        rows = ~np.isfinite(np.asarray(a[i:i + step]).reshape(min(step, len(a) - i), -1)).all(axis=1)
        hits = np.flatnonzero(rows)
        total += len(hits)
        bad.extend((hits[:5 - len(bad)] + i).tolist() if len(bad) < 5 else [])
    if total:
        raise OnnxPruneError(f"{what} has NaN or Inf values in {total} sample(s) ({_indices(bad)}"
                             f"{', …' if total > len(bad) else ''}); remove or fix them")


def _indices(idx) -> str:
    return "indices " + ", ".join(str(int(i)) for i in idx)


def peek_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Array shapes of an .npz read from the member headers only, without decompressing the data."""
    shapes = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.endswith(".npy"):
                    with zf.open(name) as f:
                        major, _ = np.lib.format.read_magic(f)
                        read_header = (np.lib.format.read_array_header_1_0 if major == 1
                                       else np.lib.format.read_array_header_2_0)
                        shape, _, _ = read_header(f)
                        shapes[name[:-4]] = tuple(shape)
    except (zipfile.BadZipFile, ValueError, OSError):
        return {}
    return shapes


def matches(path: str | Path, model: onnx.ModelProto) -> bool:
    """Whether the file's arrays fit the model's inputs (cheap: headers only), for auto-discovery."""
    shapes = peek_shapes(path)
    for s in input_specs(model):
        shape = shapes.get(s.name, shapes.get("x") if len(input_specs(model)) == 1 else None)
        if shape is None or len(shape) != len(s.sample_shape) + 1:
            return False
        if any(d is not None and d != sd for d, sd in zip(s.sample_shape, shape[1:])):
            return False
    return True


def discover(model: onnx.ModelProto, folder: str | Path, kind: str) -> Path | None:
    """The one `*{kind}*.npz` in `folder` that fits the model; None if none fits; an error if several do."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    hits = sorted(p for p in folder.glob(f"*{kind}*.npz") if matches(p, model))
    if len(hits) > 1:
        raise OnnxPruneError(f"several {kind} files in {folder}/ fit this model ({', '.join(p.name for p in hits)}); "
                             f"choose one with --{kind}")
    return hits[0] if hits else None


CALIB_DIR = Path("calib_data")  # where commands look for data when none is given (relative to the current directory)


def resolve_data(model: onnx.ModelProto, path: str | Path | None, kind: str, notes: list[str]) -> Path | None:
    """An explicit path, or the single `calib_data/*{kind}*.npz` that fits the model (said in the notes)."""
    if path is not None:
        return Path(path)
    found = discover(model, CALIB_DIR, kind)
    if found is not None:
        note = (f"using {found.resolve()} as {kind} data (the one {CALIB_DIR}/*{kind}*.npz under the current directory "
                f"that fits the model input; pass --{kind} to choose another)")
        notes.append(note)
        say(f"note: {note}")  # before the work it applies to
    return found
