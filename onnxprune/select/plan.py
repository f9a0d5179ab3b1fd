"""What to prune, as data: settings in, a reviewable `Plan` out.

A Plan records every decision in compact form (bit-packed masks for weights, kept channel indices for groups) and
the hash of the model it was made for, so `onnxprune apply MODEL plan.json` reproduces the pruned model byte for
byte and refuses a plan made for another model.
"""
from __future__ import annotations

import base64
import json
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import OnnxPruneError

Mode = Literal["unstructured", "structured"]


@dataclass(frozen=True)
class PruneSettings:
    """Every knob of one pruning run; shared by the unstructured and structured pipelines."""

    ratio: float = 0.5  # fraction of weights (unstructured) or channels (structured) to remove
    mode: Mode = "structured"
    criterion: str = "fscreen"
    alpha: float = 0.2  # F-screen mixing weight: M = alpha * S + (1 - alpha) * magnitude (0.2: docs/BENCHMARKS.md)
    beta: float = 1.0  # relative importance: score = mean + beta * std
    allocation: Literal["global", "uniform"] = "global"
    protect: tuple[str, ...] = ()  # node or weight names (or 'first' / 'last') left untouched
    min_keep: float = 0.02  # minimum fraction kept per layer / group, so nothing is emptied
    min_channels: int = 1
    round_to: int = 8  # structured: kept channel counts rounded to multiples of this (1 disables)
    reconstruct: bool = True  # least-squares re-fit after pruning; switched off automatically without data
    ridge: float = 1e-3  # relative ridge term of least-squares reconstruction
    labels: Literal["auto", "true", "predicted"] = "auto"
    batch_size: int = 256
    seed: int = 0
    # recovery: distillation from the dense model in PyTorch after the re-fit (0 epochs = off; needs the torch extra)
    recover_epochs: int = 0
    recover_seconds: float | None = None  # wall-clock budget of the recovery training
    recover_labels: bool = False  # add cross-entropy on the data's labels to the (label-free) distillation loss
    augment: bool | None = None  # recovery's image augmentation: None = automatic (crop + flip for image inputs)
    # oneshot: prune, re-fit, then recover; iterative: prune in `prune_steps` annealed steps while recovering
    # (paper 001 Algorithms 1-2, workflows/iterative.py)
    schedule: Literal["oneshot", "iterative"] = "oneshot"
    prune_steps: int = 5
    activation_l1: float = 0.0  # λ of paper 003's pruning-aware training: + λ·mean|a| of the units' outputs; 0 = off

    RECOVERY = ("recover_epochs", "recover_seconds", "recover_labels", "augment", "schedule", "prune_steps",
                "activation_l1")

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise OnnxPruneError(f"--ratio {self.ratio}: must be in [0, 1)")
        if not 0.0 <= self.alpha <= 1.0:
            raise OnnxPruneError(f"--alpha {self.alpha}: must be in [0, 1]")
        if not 0.0 <= self.min_keep <= 1.0:
            raise OnnxPruneError(f"--min-keep {self.min_keep}: must be in [0, 1]")
        if self.round_to < 1:
            raise OnnxPruneError(f"--round-to {self.round_to}: must be >= 1")
        if self.recover_epochs < 0:
            raise OnnxPruneError(f"--recover-epochs {self.recover_epochs}: must be >= 0")
        if self.schedule not in ("oneshot", "iterative"):
            raise OnnxPruneError(f"--schedule {self.schedule}: choose oneshot or iterative")
        if self.prune_steps < 1:
            raise OnnxPruneError(f"--prune-steps {self.prune_steps}: must be >= 1")
        if self.schedule == "iterative" and not self.recovers:
            raise OnnxPruneError("--schedule iterative trains between its pruning steps: add --recover (or "
                                 "--recover-epochs N)")
        if self.schedule == "iterative" and self.recover_seconds is not None:
            raise OnnxPruneError("--recover-time is not supported with --schedule iterative: give --recover-epochs")
        if not (np.isfinite(self.activation_l1) and self.activation_l1 >= 0):
            raise OnnxPruneError(f"--activation-l1 {self.activation_l1}: must be a finite number >= 0")
        if self.activation_l1 and not self.recovers:
            raise OnnxPruneError("--activation-l1 penalises activations while training: add --recover (or "
                                 "--recover-epochs N)")

    @property
    def recovers(self) -> bool:
        return self.recover_epochs > 0

    def to_dict(self) -> dict:
        """Plain data for plans and reports (recovery keys only when recovery is on, so plans without it are
        unchanged)."""
        d = asdict(self)
        d["protect"] = list(self.protect)
        if not self.recovers:
            for k in self.RECOVERY:
                d.pop(k)
        elif not self.activation_l1:
            d.pop("activation_l1")  # plans of recovery runs without the penalty are unchanged too
        return d


@dataclass
class Plan:
    """Unstructured: `masks[weight] = bool keep-mask` (shape of the weight).
    Structured: `channels[group_id] = sorted kept channel indices` (group ids from graph.groups)."""

    mode: Mode
    model_hash: str
    settings: dict
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    channels: dict[str, list[int]] = field(default_factory=dict)

    def to_json(self) -> str:
        payload = {
            "format": "onnxprune-plan/1", "mode": self.mode, "model_hash": self.model_hash, "settings": self.settings,
            "masks": {k: _pack(v) for k, v in sorted(self.masks.items())},
            "channels": {k: [int(i) for i in v] for k, v in sorted(self.channels.items())},
        }
        return json.dumps(payload, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "plan") -> "Plan":
        try:
            d = json.loads(text)
            if not isinstance(d, dict) or d.get("format") != "onnxprune-plan/1":
                raise ValueError("not an onnxprune plan (missing format 'onnxprune-plan/1')")
            return cls(d["mode"], d["model_hash"], d["settings"],
                       {k: _unpack(v) for k, v in d["masks"].items()}, {k: list(v) for k, v in d["channels"].items()})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise OnnxPruneError(f"{source}: invalid plan ({str(e).splitlines()[0][:200]})") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        p = Path(path)
        if not p.is_file():
            raise OnnxPruneError(f"{p}: no such plan file")
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError) as e:
            raise OnnxPruneError(f"{p}: not a plan file (JSON text) — {type(e).__name__}") from None
        return cls.from_json(text, str(p))


def _pack(mask: np.ndarray) -> dict:
    m = np.asarray(mask, dtype=bool)
    bits = zlib.compress(np.packbits(m.ravel()).tobytes(), 9)
    return {"shape": list(m.shape), "kept": int(m.sum()), "bits": base64.b64encode(bits).decode("ascii")}


def _unpack(d: dict) -> np.ndarray:
    shape = tuple(d["shape"])
    bits = np.frombuffer(zlib.decompress(base64.b64decode(d["bits"])), dtype=np.uint8)
    m = np.unpackbits(bits, count=int(np.prod(shape))).astype(bool).reshape(shape)
    if int(m.sum()) != d["kept"]:
        raise ValueError("mask checksum mismatch")
    return m
