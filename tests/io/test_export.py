"""export: a torch factory round-trips to ONNX that matches torch, with a dynamic batch axis."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.io.export import export, parse_shape  # noqa: E402
from onnxprune.io.runtime import make_session  # noqa: E402

SRC = """
import torch
from torch import nn

def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
"""


@pytest.fixture
def src(tmp_path):
    p = tmp_path / "net.py"
    p.write_text(SRC)
    return p


def test_export_matches_torch_and_keeps_batchnorm(tmp_path, src):
    out = tmp_path / "net.onnx"
    r = export(f"{src}:net", out, (1, 3, 8, 8))
    assert r.max_abs_diff < 1e-4
    m = onnx.load(out)
    assert m.opset_import[0].version >= 17
    assert "BatchNormalization" in {n.op_type for n in m.graph.node}
    assert [i.name for i in m.graph.input] == ["input"] and [o.name for o in m.graph.output] == ["logits"]
    # the batch axis is dynamic: a batch of 4 runs and matches torch
    x = np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(np.float32)
    import importlib.util

    spec = importlib.util.spec_from_file_location("net_src", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with torch.no_grad():
        ref = mod.net().eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(make_session(m).run(None, {"input": x})[0], ref, atol=1e-4)


def test_export_loads_weights(tmp_path, src):
    import importlib.util

    spec = importlib.util.spec_from_file_location("net_src2", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.net()
    with torch.no_grad():
        net[-1].bias.fill_(7.0)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    export(f"{src}:net", tmp_path / "w.onnx", (1, 3, 8, 8), weights=tmp_path / "w.pt")
    m = onnx.load(tmp_path / "w.onnx")
    biases = [onnx.numpy_helper.to_array(t) for t in m.graph.initializer if t.dims == [5]]
    assert any(np.allclose(b, 7.0) for b in biases)


@pytest.mark.parametrize("spec, message", [("nofactory", "expected SRC.py:factory"),
                                           ("missing.py:net", "no such Python file")])
def test_bad_source_spec(tmp_path, spec, message):
    with pytest.raises(OnnxPruneError, match=message):
        export(spec, tmp_path / "o.onnx", (1, 3, 8, 8))


def test_unknown_factory(tmp_path, src):
    with pytest.raises(OnnxPruneError, match="no function named 'nope'"):
        export(f"{src}:nope", tmp_path / "o.onnx", (1, 3, 8, 8))


def test_parse_shape():
    assert parse_shape("1,3,32,32") == (1, 3, 32, 32)
    with pytest.raises(OnnxPruneError):
        parse_shape("1,x")
