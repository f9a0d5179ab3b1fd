"""Calibration / evaluation data: `.npz` files with `x` (or one array per input name) and optional `y`.

Data is validated against the model's inputs up front so a mismatch is one clear sentence, not an onnxruntime
stack trace. Arrays stay in their stored dtype (uint8 images stay small) and are cast per batch.
"""
from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..errors import OnnxPruneError
from .runtime import InputSpec, input_specs


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

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Feed dicts of at most `batch_size` samples, cast to the dtype each input expects."""
        n = len(self) if limit is None else min(limit, len(self))
        for i in range(0, n, batch_size):
            j = min(i + batch_size, n)
            yield {s.name: np.ascontiguousarray(self.inputs[s.name][i:j], dtype=s.dtype) for s in self.specs}

    def label_batches(self, batch_size: int) -> Iterator[np.ndarray | None]:
        for i in range(0, len(self), batch_size):
            yield None if self.labels is None else self.labels[i:i + batch_size]

    def subset(self, idx: np.ndarray) -> "Dataset":
        """A view on the samples `idx` (used for seeded splits, e.g. LTT's build / certify halves)."""
        return Dataset({k: v[idx] for k, v in self.inputs.items()},
                       None if self.labels is None else self.labels[idx], self.specs, self.source, list(self.notes))


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise OnnxPruneError(f"{p}: no such data file")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise OnnxPruneError(f"{p}: not a readable .npz file ({str(e).splitlines()[0][:200]})") from None


def load_dataset(path: str | Path, model: onnx.ModelProto) -> Dataset:
    """Load an .npz and check it against the model's inputs; every mismatch is a one-line error."""
    arrays = read_npz(path)
    specs = input_specs(model)
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
    labels = arrays.get("y")
    if labels is not None:
        if labels.ndim != 1 or len(labels) != n:
            raise OnnxPruneError(f"{path}: 'y' has shape {labels.shape}; expected ({n},) integer class labels")
        if not np.issubdtype(labels.dtype, np.integer):
            raise OnnxPruneError(f"{path}: 'y' has dtype {labels.dtype}; expected integer class labels")
        labels = labels.astype(np.int64)
        if labels.min() < 0:
            raise OnnxPruneError(f"{path}: 'y' has negative labels")
    return Dataset(inputs, labels, specs, str(path))


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
