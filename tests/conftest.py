"""Shared fixtures: tiny models and small slices of the bundled data (never the shared/ data)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import MNIST_EVAL, tiny_mlp


@pytest.fixture
def tiny_model_path(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.onnx"
    onnx.save(tiny_mlp(), p)
    return p


@pytest.fixture(scope="session")
def mnist_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 500 MNIST test images, labelled."""
    z = np.load(MNIST_EVAL)
    p = tmp_path_factory.mktemp("data") / "mnist_small.npz"
    np.savez(p, x=z["x"][:500], y=z["y"][:500])
    return p
