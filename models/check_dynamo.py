"""Export a bundled transformer with the dynamo exporter too, and check it against the bundled (TorchScript) file.

    /work/tvenv/bin/python models/check_dynamo.py vit_cifar models/vit_cifar10.onnx calib_data/cifar10_eval.npz

(the dev venv has no onnxscript, which the dynamo exporter needs). Prints the largest output difference and the
argmax agreement on 512 evaluation samples, and the prunable channel groups onnxprune finds in both exports.
"""
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
import archs  # noqa: E402

from onnxprune.io.model import normalise  # noqa: E402
from onnxprune.units.groups import analyse  # noqa: E402

name, bundled, data = sys.argv[1:4]
model = archs.FACTORIES[name]()
model.load_state_dict(torch.load(HERE / "weights" / f"{name}.pt", weights_only=True))
model.eval()
x = np.load(data)["x"][:512].astype(np.float32)
prog = torch.onnx.export(model, (torch.from_numpy(x[:1]),), dynamo=True, input_names=["input"],
                         output_names=["logits"], opset_version=18,
                         dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
dyn = normalise(prog.model_proto)
ts = normalise(onnx.load(bundled))
run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (ts, dyn)]
ya, yb = (s.run(None, {s.get_inputs()[0].name: x})[0] for s in run)
print(f"{name}: dynamo vs TorchScript max |diff| {np.abs(ya - yb).max():.2e}, argmax agreement "
      f"{(ya.argmax(1) == yb.argmax(1)).mean():.4f} on {len(x)} samples")
for label, m in (("torchscript", ts), ("dynamo", dyn)):
    groups = analyse(m)
    print(f"  {label}: prunable groups {sorted(g.size for g in groups if g.prunable)}")
