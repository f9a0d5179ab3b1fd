"""Pruning modes: structured (remove channels) and unstructured (zero weights), behind one `Mode` protocol."""
from __future__ import annotations

from ..errors import OnnxPruneError
from .base import Mode, Scores

MODES = ("structured", "unstructured")


def get(name: str) -> Mode:
    """The mode called `name` (imported on demand)."""
    if name == "structured":
        from .structured import STRUCTURED

        return STRUCTURED
    if name == "unstructured":
        from .unstructured import UNSTRUCTURED

        return UNSTRUCTURED
    raise OnnxPruneError(f"--mode {name}: expected {' or '.join(MODES)}")


__all__ = ["MODES", "Mode", "Scores", "get"]
