"""Static int8 quantization (QDQ, per-channel) with onnxruntime.quantization, calibrated on data the caller picks.

The caller chooses the calibration samples on purpose: in a certified run only the build split may shape any
model, so the quantizer must never see the certification samples.
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx

from ..io.data import Dataset
from ..io.model import serialize

CALIBRATION_SAMPLES = 512  # activation ranges settle well before this on the bundled models
CALIBRATION_BATCH = 32


def calibration_samples(data: Dataset, limit: int = CALIBRATION_SAMPLES) -> Dataset:
    """The first `limit` samples of `data`: what the quantizer's range calibration reads."""
    return data.subset(np.arange(min(len(data), limit)))


def quantize_int8(model: onnx.ModelProto, data: Dataset, out: str | Path) -> Path:
    """Write `model` as static int8 (QDQ, per-channel weights, int8 activations) to `out`; ranges from `data`."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
        src = Path(tmp) / "model.onnx"
        src.write_bytes(serialize(model))
        quantize_static(str(src), str(out), _reader(calibration_samples(data)), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out


def _reader(data: Dataset):
    """onnxruntime's calibration reader over `data` in batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(data.batches(CALIBRATION_BATCH))

        def get_next(self):
            return next(self.it, None)

    return Reader()


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The quantizer's generic pre-processing advice is not actionable here; silence it for this call only."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
