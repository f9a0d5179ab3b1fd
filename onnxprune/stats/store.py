"""`Stats`: finalized statistics keyed by (tensor, key), with the hash of the model they came from; .npz on disk."""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx

from ..errors import OnnxPruneError

FORMAT = "onnxprune-stats/1"
_META = "__meta__"


class Stats:
    """Finalized statistics. `get(tensor, key)` → float64 array.

    Keys per tensor (depending on what was requested): n, f, class_n, class_mean, apoz, mean, var, sqnorm, gram,
    ri_mean, ri_std, ri_count. Relative-importance keys (ri_*) belong to a *layer*: they are stored under the layer
    (node) name, and `get(input_tensor, "ri_mean")` also works when exactly one requested layer reads that tensor.
    """

    def __init__(self, arrays: dict[tuple[str, str], np.ndarray], *, model_hash: str, n: int, label_mode: str,
                 meta: dict | None = None) -> None:
        self._a = dict(arrays)
        self.model_hash = model_hash
        self.n = int(n)
        self.label_mode = label_mode
        self.meta = dict(meta or {})
        # layer name -> input tensor, for ri_* lookups by tensor
        self.contrib_inputs: dict[str, str] = dict(self.meta.get("contrib_inputs", {}))

    # ------------------------------------------------------------------ lookup
    def _resolve(self, tensor: str, key: str) -> tuple[str, str] | None:
        if (tensor, key) in self._a:
            return tensor, key
        if key.startswith("ri_") or key == "n":
            layers = [l for l, t in self.contrib_inputs.items() if t == tensor and (l, key) in self._a]
            if len(layers) == 1:
                return layers[0], key
        return None

    def has(self, tensor: str, key: str) -> bool:
        return self._resolve(tensor, key) is not None

    def get(self, tensor: str, key: str) -> np.ndarray:
        k = self._resolve(tensor, key)
        if k is None:
            if key.startswith("ri_"):
                layers = [l for l, t in self.contrib_inputs.items() if t == tensor]
                if len(layers) > 1:
                    raise OnnxPruneError(f"statistics: '{tensor}' feeds several layers ({', '.join(layers)}); "
                                         f"ask for '{key}' by layer name")
            have = sorted({k for t, k in self._a if t == tensor})
            hint = f"it has {', '.join(have)}" if have else "no statistics were collected for it"
            raise OnnxPruneError(f"statistics: no '{key}' for tensor '{tensor}' ({hint}); "
                                 f"re-run `onnxprune stats` with the criterion that needs it")
        return self._a[k]

    def keys(self) -> list[tuple[str, str]]:
        return sorted(self._a)

    def tensors(self) -> list[str]:
        return sorted({t for t, _ in self._a})

    KEY_OF = {"class_moments": "f", "zeros": "apoz", "moments": "sqnorm", "gram": "gram", "contrib": "ri_mean"}

    def missing(self, requests) -> list[str]:
        """What `requests` (stats.Request) ask for that these statistics do not hold, as 'tensor: statistic'."""
        out = []
        for r in requests:
            for stat in sorted(r.stats):
                where = r.layer if stat == "contrib" else r.tensor
                if not self.has(where, self.KEY_OF[stat]):
                    out.append(f"{where}: {stat}")
        return out

    def check_model(self, model: onnx.ModelProto | str) -> None:
        """Raise if these statistics were collected on another model (compare by content hash)."""
        from ..io.model import model_hash

        h = model if isinstance(model, str) else model_hash(model)
        if h != self.model_hash:
            raise OnnxPruneError(f"statistics were collected on another model (hash {self.model_hash}, "
                                 f"this model is {h}); re-run `onnxprune stats`")

    def summary(self) -> dict:
        return {"model_hash": self.model_hash, "n": self.n, "label_mode": self.label_mode,
                "tensors": len(self.tensors()), "arrays": len(self._a),
                "bytes": int(sum(a.nbytes for a in self._a.values())), **{k: v for k, v in self.meta.items()
                                                                           if k in ("criteria", "n_classes")}}

    # ------------------------------------------------------------------ disk
    def save(self, path: str | os.PathLike) -> Path:
        out = Path(path)
        meta = {"format": FORMAT, "model_hash": self.model_hash, "n": self.n, "label_mode": self.label_mode,
                **self.meta, "contrib_inputs": self.contrib_inputs}
        payload = {f"{t}::{k}": a for (t, k), a in self._a.items()}
        payload[_META] = np.array(json.dumps(meta, sort_keys=True))
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp.npz")
        os.close(fd)
        try:
            np.savez(tmp, **payload)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> Stats:
        p = Path(path)
        if not p.is_file():
            raise OnnxPruneError(f"{p}: no such statistics file")
        try:
            with np.load(p, allow_pickle=False) as z:
                if _META not in z.files:
                    raise OnnxPruneError(f"{p}: not an onnxprune statistics file (no metadata)")
                meta = json.loads(str(z[_META]))
                arrays = {}
                for k in z.files:
                    if k == _META:
                        continue
                    t, _, key = k.rpartition("::")
                    arrays[(t, key)] = z[k]
        except OnnxPruneError:
            raise
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, json.JSONDecodeError) as e:
            raise OnnxPruneError(f"{p}: not a readable statistics file ({str(e).splitlines()[0][:200]})") from None
        if meta.get("format") != FORMAT:
            raise OnnxPruneError(f"{p}: unsupported statistics format {meta.get('format')!r} (expected {FORMAT})")
        model_hash, n, label_mode = meta.pop("model_hash"), meta.pop("n"), meta.pop("label_mode")
        meta.pop("format", None)
        return cls(arrays, model_hash=model_hash, n=n, label_mode=label_mode, meta=meta)

    def __repr__(self) -> str:
        return f"Stats(n={self.n}, label_mode={self.label_mode!r}, tensors={len(self.tensors())}, hash={self.model_hash})"
