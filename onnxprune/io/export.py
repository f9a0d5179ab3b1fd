"""PyTorch → ONNX with a parity check against onnxruntime.

We use the TorchScript exporter with `TrainingMode.PRESERVE` on an eval-mode module: it keeps BatchNormalization
as its own node (the dynamo exporter folds it into the Conv), and BN's γ is a pruning criterion. The result is
normalised like any loaded model (Identity aliases of weights folded), checked, and compared with torch on random
input; a difference above the tolerance is an error, not a warning.
"""
from __future__ import annotations

import importlib.util
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..errors import OnnxPruneError
from .model import check_writable, normalise, save_model
from .runtime import make_session, parse_dims

DEFAULT_OPSET = 18


@dataclass(frozen=True)
class ExportResult:
    path: Path
    max_abs_diff: float
    tolerance: float
    opset: int


def load_factory(spec: str):
    """`path/to/file.py:factory` → the callable `factory` defined in that file."""
    if ":" not in spec:
        raise OnnxPruneError(f"'{spec}': expected SRC.py:factory (a Python file and a function that builds the model)")
    src, name = spec.rsplit(":", 1)
    path = Path(src)
    if not path.is_file():
        raise OnnxPruneError(f"{src}: no such Python file")
    mod_spec = importlib.util.spec_from_file_location(f"_onnxprune_src_{path.stem}", path)
    module = importlib.util.module_from_spec(mod_spec)
    import sys

    sys.path.insert(0, str(path.parent.resolve()))  # let the file import its neighbours
    try:
        mod_spec.loader.exec_module(module)
    except Exception as e:
        raise OnnxPruneError(f"{src}: failed to import ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    finally:
        sys.path.pop(0)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise OnnxPruneError(f"{src}: no function named '{name}'")
    return factory


def parse_shape(text: str) -> tuple[int, ...]:
    return parse_dims(text, "--input-shape", "1,3,32,32")


def export(spec: str, out: str | Path, input_shape: tuple[int, ...], weights: str | Path | None = None,
           opset: int = DEFAULT_OPSET, tolerance: float = 1e-4, seed: int = 0) -> ExportResult:
    """Build the model, load weights, export with a dynamic batch axis, verify against onnxruntime, save."""
    try:
        import torch
    except ImportError:
        raise OnnxPruneError("export needs PyTorch: pip install 'onnxprune[torch]'") from None
    if opset < 17:
        raise OnnxPruneError(f"--opset {opset}: onnxprune exports opset 17 or newer")
    check_writable(out)  # before any work
    module = load_factory(spec)()
    if weights is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            module.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        except Exception as e:
            raise OnnxPruneError(f"{weights}: cannot load weights ({str(e).splitlines()[0][:200]})") from None
    module.eval()
    torch.manual_seed(seed)
    x = torch.randn(*input_shape)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (x,), buf, dynamo=False, opset_version=opset, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True)
        except Exception as e:
            raise OnnxPruneError(f"torch.onnx.export failed: {str(e).splitlines()[0][:300]}") from None
    model = normalise(onnx.load_from_string(buf.getvalue()))
    onnx.checker.check_model(model, full_check=True)
    with torch.no_grad():
        ref = module(x).numpy()
    got = make_session(model).run(None, {"input": x.numpy()})[0]
    diff = float(np.max(np.abs(ref - got)))
    scale = max(1.0, float(np.max(np.abs(ref))))
    if diff > tolerance * scale:
        raise OnnxPruneError(f"onnxruntime output differs from torch by {diff:.3g} (tolerance {tolerance * scale:.3g})")
    path = save_model(model, out)
    return ExportResult(path, diff, tolerance * scale, opset)
