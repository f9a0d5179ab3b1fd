"""Precision of the student's training step: bf16 autocast only where it pays (channels-last conv nets on AMX CPUs)
or when asked for; weights, written model and determinism unchanged in kind."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from recover_builders import conv_chain, residual, tiny_data  # noqa: E402

from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.recover.distill import recover, use_bf16  # noqa: E402


def _perturbed(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose conv weights are scaled by 0.9, so that distillation has something to learn."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for k, t in enumerate(m.graph.initializer):
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32 and a.ndim == 4:
            m.graph.initializer[k].CopyFrom(numpy_helper.from_array(a * 0.9, t.name))
    return m


@pytest.mark.parametrize("amx", [True, False])
def test_auto_uses_bf16_only_for_channels_last_convs_on_amx(monkeypatch, amx: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert use_bf16("auto", channels_last=True) is amx
    assert use_bf16("auto", channels_last=False) is False   # Gemm nets, odd conv widths: float32
    assert use_bf16("fp32", channels_last=True) is False
    assert use_bf16("bf16", channels_last=False) is True    # forced


def test_unknown_precision_is_an_error() -> None:
    dense = residual()
    with pytest.raises(OnnxPruneError, match="precision"):
        recover(dense, dense, tiny_data(dense, 16), epochs=1, precision="fp16", progress=False)


def test_report_says_what_auto_chose(monkeypatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    res, odd = residual(), conv_chain()                     # conv_chain has a 6-channel conv: not channels-last
    got = [recover(m, m, tiny_data(m, 24), epochs=1, batch_size=8, progress=False)[1].settings["precision"]
           for m in (res, odd)]
    assert got == ["bf16", "fp32"]


def test_bf16_training_is_deterministic_and_writes_float32_weights() -> None:
    dense = residual()
    pruned, data = _perturbed(dense), tiny_data(dense, 48)
    runs = [recover(pruned, dense, data, epochs=2, batch_size=16, seed=3, precision="bf16",
                    progress=False) for _ in range(2)]
    (m0, rep0), (m1, _) = runs
    assert m0.SerializeToString() == m1.SerializeToString()
    assert rep0.settings["precision"] == "bf16"
    assert all(np.isfinite(h.loss) for h in rep0.history)
    types = {t.name: t.data_type for t in m0.graph.initializer}
    assert types == {t.name: t.data_type for t in pruned.graph.initializer}  # float32 stays float32
    changed = [t.name for t, u in zip(m0.graph.initializer, pruned.graph.initializer)
               if not np.array_equal(numpy_helper.to_array(t), numpy_helper.to_array(u))]
    assert changed                                          # it trained
