"""Write the dynamo-exported fixtures (tests/transformers/fixtures/*.onnx): the dev venv has no onnxscript, so
these are made once with a torch venv that has it (names given: only those are written):

    /work/tvenv/bin/python tests/transformers/make_fixtures.py [packed separate ... convnext bert_ids gpt2]
"""
import sys
from pathlib import Path

import onnx
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]
from tf_build import (TOKEN_MODELS, VARIANTS, ConvNeXtTiny, Encoder, TokenModel, encoder_inputs,  # noqa: E402
                      export, randomise, token_inputs)

out = HERE / "fixtures"
out.mkdir(exist_ok=True)
wanted = set(sys.argv[1:]) or {*VARIANTS, "convnext", *TOKEN_MODELS}
for name in sorted(wanted):
    torch.manual_seed(0)
    if name in VARIANTS:
        m = randomise(Encoder(**VARIANTS[name]), 0)  # mha at batch 1, as torchvision's ViT exports
        model = export(m, encoder_inputs(m, n=1 if name == "mha" else 2), dynamo=True)
    elif name in TOKEN_MODELS:
        m = randomise(TokenModel(**TOKEN_MODELS[name]), 0)
        model = export(m, token_inputs(m), dynamo=True)
    else:
        model = export(randomise(ConvNeXtTiny(), 0), (torch.randn(2, 3, 8, 8),), dynamo=True)
    onnx.save(model, out / f"dynamo_{name}.onnx")
print(sorted(p.name for p in out.glob("*.onnx")))
