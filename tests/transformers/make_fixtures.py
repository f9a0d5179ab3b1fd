"""Write the dynamo-exported fixtures (tests/transformers/fixtures/*.onnx): the dev venv has no onnxscript, so
these are made once with a torch venv that has it (names given: only those are written):

    /work/tvenv/bin/python tests/transformers/make_fixtures.py [packed separate ... convnext bert_ids gpt2]

The *sdpa* models are exported at opset 23, where scaled_dot_product_attention becomes the ONNX `Attention` op.
"""
import sys
from pathlib import Path

import onnx
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]
from tf_build import (DYNAMO_OPSET, GQA_VARIANTS, MHA_BATCH, SDPA_TOKEN_MODELS, TOKEN_MODELS,  # noqa: E402
                      VARIANTS, ConvNeXtTiny, Encoder, TokenModel, encoder_inputs, export, randomise, token_inputs)

out = HERE / "fixtures"
out.mkdir(exist_ok=True)
encoders = {**VARIANTS, **GQA_VARIANTS}
token_models = {**TOKEN_MODELS, **SDPA_TOKEN_MODELS}
wanted = set(sys.argv[1:]) or {*encoders, *MHA_BATCH, "convnext", *token_models}
for name in sorted(wanted):
    torch.manual_seed(0)
    if name in encoders:
        m = randomise(Encoder(**encoders[name]), 0)  # mha at batch 1, as torchvision's ViT exports
        model = export(m, encoder_inputs(m, n=1 if name == "mha" else 2), dynamo=True,
                       opset=DYNAMO_OPSET.get(name, 17))
    elif name in MHA_BATCH:  # nn.MultiheadAttention, heads through the batch ([T, B·H, dh]) before the Attention op
        m = randomise(Encoder(**VARIANTS["mha"]), 0)
        model = export(m, encoder_inputs(m, n=MHA_BATCH[name] or 2), dynamo=True, opset=DYNAMO_OPSET[name],
                       dynamic_batch=MHA_BATCH[name] is None)
    elif name in token_models:
        m = randomise(TokenModel(**token_models[name]), 0)
        model = export(m, token_inputs(m), dynamo=True, opset=DYNAMO_OPSET.get(name, 17))
    else:
        model = export(randomise(ConvNeXtTiny(), 0), (torch.randn(2, 3, 8, 8),), dynamo=True)
    for n in model.graph.node:  # the exporter's per-node stack traces: most of the file, none of the graph
        del n.metadata_props[:]
    onnx.save(model, out / f"dynamo_{name}.onnx")
print(sorted(p.name for p in out.glob("*.onnx")))
