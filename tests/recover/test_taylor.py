"""First-order Taylor scores through the torch graph."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from recover_builders import residual, tiny_data  # noqa: E402

from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.recover.taylor import taylor_scores  # noqa: E402
from onnxprune.recover.torch_graph import TorchGraph  # noqa: E402


def test_weight_scores_are_abs_grad_times_weight() -> None:
    m = residual()
    data = tiny_data(m, 12)
    w, c = taylor_scores(m, data, batch_size=5)
    assert not c and w
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    for k, v in w.items():
        assert v.shape == inits[k].shape and (v >= 0).all() and np.isfinite(v).all()
    # reference: one full-batch gradient of the summed cross-entropy, divided by n
    tg = TorchGraph(m).eval()
    z = tg.run({"input": data.inputs["input"]})["out"]
    torch.nn.functional.cross_entropy(z, torch.from_numpy(data.labels).long(), reduction="sum").backward()
    name = next(iter(w))
    ref = (tg.tensor(name).grad / 12 * tg.tensor(name)).abs().detach().numpy()
    np.testing.assert_allclose(w[name], ref, rtol=1e-4, atol=1e-7)


def test_channel_scores_and_kd_against_reference() -> None:
    m = residual()
    ref = residual()
    for k, t in enumerate(ref.graph.initializer):  # a perturbed reference: non-zero KD gradient
        a = numpy_helper.to_array(t)
        if a.ndim == 4:
            ref.graph.initializer[k].CopyFrom(numpy_helper.from_array((a * 1.1).astype(a.dtype), t.name))
    relu = [n.output[0] for n in m.graph.node if n.op_type == "Relu"][:2]
    w, c = taylor_scores(m, tiny_data(m, 8, labels=None), tensors=relu, reference=ref, batch_size=4)
    assert set(c) == set(relu) and all(v.shape == (8,) and (v >= 0).all() and v.sum() > 0 for v in c.values())
    assert all(v.sum() > 0 for v in w.values())
    with pytest.raises(OnnxPruneError, match="no tensor named"):
        taylor_scores(m, tiny_data(m, 4), tensors=["nope"])
