"""Write the dynamo-exported fixtures (tests/transformers/fixtures/*.onnx): the dev venv has no onnxscript, so
these are made once with the torch venv that has it:

    /work/tvenv/bin/python tests/transformers/make_fixtures.py
"""
import sys
from pathlib import Path

import onnx
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]
from tf_build import VARIANTS, ConvNeXtTiny, Encoder, encoder_inputs, export, randomise  # noqa: E402

out = HERE / "fixtures"
out.mkdir(exist_ok=True)
torch.manual_seed(0)
for name, kw in VARIANTS.items():
    m = randomise(Encoder(**kw), 0)
    onnx.save(export(m, encoder_inputs(m), dynamo=True), out / f"dynamo_{name}.onnx")
m = randomise(ConvNeXtTiny(), 0)
onnx.save(export(m, (torch.randn(2, 3, 8, 8),), dynamo=True), out / "dynamo_convnext.onnx")
print(sorted(p.name for p in out.glob("*.onnx")))
