"""Small seeded transformer graphs exported by both torch exporters, for the equivalence suite.

`export(module, x, dynamo=...)` returns the normalised ModelProto (as `load_model` gives it). Modules:
ViT-style blocks with packed qkv or separate q/k/v projections, GELU (Erf form) or ReLU MLPs, an optional additive
attention mask fed as a second input, a ConvNeXt block (channel-last MLP between two Transposes), and token-id
models shaped like Hugging Face's BERT and GPT-2 exports (dynamic sequence length, embeddings, GPT-2's Conv1D on
[B·T, F] rows with q, k, v split out of one projection, causal mask). Attention through
F.scaled_dot_product_attention (packed, with a mask or a per-head bias, grouped-query, Hugging Face's sdpa) becomes
the ONNX `Attention` op when exported by dynamo at opset 23; `attention_graph` writes that op by hand in both forms.
"""
from __future__ import annotations

import io

import numpy as np
import onnx
import torch
from torch import nn

from onnxprune.io.model import normalise


class SepAttention(nn.Module):
    """BERT-style: separate q, k, v projections, heads split by view, optional additive mask [N, T] → [N, 1, 1, T]."""

    def __init__(self, dim: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.h, self.dh, self.t = heads, dim // heads, tokens
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, self.t, self.h, self.dh).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        s = q @ k.transpose(-1, -2) / self.dh ** 0.5
        if mask is not None:
            s = s + (1.0 - mask[:, None, None, :]) * -10000.0
        a = torch.softmax(s, -1) @ v
        return self.o(a.transpose(1, 2).reshape(-1, self.t, self.h * self.dh))


class HFAttention(SepAttention):
    """Hugging Face BERT style: head split and merge with shapes computed from `x.size()` (Shape → Gather → Concat
    in the TorchScript graph with a dynamic batch), the merge width read from the input's shape (as Swin does)."""

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.size()[:-1], self.h, self.dh).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        s = torch.matmul(q, k.transpose(-1, -2)) / self.dh ** 0.5
        if mask is not None:
            s = s + (1.0 - mask[:, None, None, :]) * -10000.0
        a = torch.matmul(torch.softmax(s, -1), v).permute(0, 2, 1, 3).contiguous()
        return self.o(a.view(*a.size()[:-2], x.size(-1)))


class HFSdpaAttention(HFAttention):
    """Hugging Face's "sdpa" attention implementation: the same head split / merge, scaled_dot_product_attention with
    the padding mask expanded to [N, 1, T, T] (an ONNX `Attention` op at opset 23, dynamic batch and sequence)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        m = None if mask is None else ((1.0 - mask[:, None, None, :]) * -10000.0).expand(-1, 1, x.size(1), -1)
        a = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m).permute(0, 2, 1, 3).contiguous()
        return self.o(a.view(*a.size()[:-2], x.size(-1)))


class PackedAttention(nn.Module):
    """timm / our ViT: one qkv projection reshaped to [N, T, 3, H, dh] and permuted."""

    def __init__(self, dim: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.h, self.dh, self.t = heads, dim // heads, tokens
        self.qkv, self.o = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        qkv = self.qkv(x).reshape(-1, self.t, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        s = (q @ k.transpose(-2, -1)) * self.dh ** -0.5
        if mask is not None:
            s = s + (1.0 - mask[:, None, None, :]) * -10000.0
        a = torch.softmax(s, -1) @ v
        return self.o(a.transpose(1, 2).reshape(-1, self.t, self.h * self.dh))


class MHAttention(nn.Module):
    """torchvision's ViT: nn.MultiheadAttention (batch_first): packed in-projection unflattened to [T, B, 3, E], heads
    as [T, B·H, dh] — B·H is H with a fixed batch (dynamo's static export), Mul(B, H) at run time in TorchScript."""

    def __init__(self, dim: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.t = tokens
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.mha(x, x, x, need_weights=False)[0]


class SDPAttention(PackedAttention):
    """timm's fused path: the packed q / k / v unbound and fed to F.scaled_dot_product_attention, which torch's
    exporter writes as the ONNX `Attention` op at opset 23 (4-D [N, H, T, dh]); the additive mask expanded to
    [N, 1, T, T] (as Hugging Face prepares it; onnxruntime does not broadcast its query axis) and / or a learned
    per-head bias [H, T, T] (`bias`) as its attn_mask."""

    def __init__(self, dim: int, heads: int, tokens: int, bias: bool = False) -> None:
        super().__init__(dim, heads, tokens)
        self.bias = nn.Parameter(torch.zeros(heads, tokens, tokens)) if bias else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.qkv(x).reshape(-1, self.t, 3, self.h, self.dh).permute(2, 0, 3, 1, 4).unbind(0)
        m = None if mask is None else ((1.0 - mask[:, None, None, :]) * -10000.0).expand(-1, 1, self.t, -1)
        if self.bias is not None:
            m = self.bias if m is None else m + self.bias
        a = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m)
        return self.o(a.transpose(1, 2).reshape(-1, self.t, self.h * self.dh))


class SDPABiasAttention(SDPAttention):
    def __init__(self, dim: int, heads: int, tokens: int) -> None:
        super().__init__(dim, heads, tokens, bias=True)


class GQAttention(nn.Module):
    """Grouped-query attention as LLMs write it: 2 query heads per key/value head (k, v projections half as wide),
    F.scaled_dot_product_attention(enable_gqa=True) → one ONNX `Attention` with 4 query and 2 key/value heads."""

    def __init__(self, dim: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.h, self.dh, self.t = heads, dim // heads, tokens
        self.q, self.o = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.k, self.v = nn.Linear(dim, dim // 2), nn.Linear(dim, dim // 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.q(x).reshape(-1, self.t, self.h, self.dh).transpose(1, 2)
        k, v = (p(x).reshape(-1, self.t, self.h // 2, self.dh).transpose(1, 2) for p in (self.k, self.v))
        a = nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        return self.o(a.transpose(1, 2).reshape(-1, self.t, self.h * self.dh))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, tokens: int, packed: bool, act: str) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = {True: PackedAttention, False: SepAttention, "hf": HFAttention, "mha": MHAttention,
                     "sdpa": SDPAttention, "sdpa_bias": SDPABiasAttention, "gqa": GQAttention}[packed](
            dim, heads, tokens)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU() if act == "gelu" else nn.ReLU(),
                                 nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.n1(x), mask)
        return x + self.mlp(self.n2(x))


class Encoder(nn.Module):
    """Token input [N, T, F_in] → embedding Linear → blocks → LayerNorm → mean over tokens → classifier."""

    def __init__(self, dim: int = 16, heads: int = 4, hidden: int = 24, tokens: int = 5, depth: int = 2,
                 packed: bool = True, act: str = "gelu", masked: bool = False, f_in: int = 6) -> None:
        super().__init__()
        self.masked = masked
        self.embed = nn.Linear(f_in, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden, tokens, packed, act) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(x)
        for b in self.blocks:
            x = b(x, mask if self.masked else None)
        return self.head(self.norm(x).mean(1))


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.ln = nn.LayerNorm(c)
        self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.rand(c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(nn.functional.gelu(self.fc1(self.ln(y)))).permute(0, 3, 1, 2)
        return x + self.gamma * y


class ConvNeXtTiny(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 2, 2)
        self.blocks = nn.Sequential(ConvNeXtBlock(c), ConvNeXtBlock(c))
        self.head = nn.Linear(c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class Conv1D(nn.Module):
    """GPT-2's Conv1D: the tokens flattened into rows, `addmm`, the rows unflattened ([B·T, F] between)."""

    def __init__(self, nx: int, nf: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight, self.bias = nn.Parameter(torch.empty(nx, nf)), nn.Parameter(torch.empty(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.size()[:-1] + (self.nf,)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size)


class GPT2Attention(nn.Module):
    """GPT-2: one Conv1D makes q, k, v, `split` along the features; HF-style head split / merge; causal mask."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.h, self.dh, self.dim = heads, dim // heads, dim
        self.c_attn, self.c_proj = Conv1D(dim, 3 * dim), Conv1D(dim, dim)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.size()[:-1], self.h, self.dh).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = (self.split(t) for t in self.c_attn(x).split(self.dim, dim=2))
        s = torch.matmul(q, k.transpose(-1, -2)) / self.dh ** 0.5
        t = x.size(1)
        causal = torch.tril(torch.ones(t, t, dtype=torch.bool, device=x.device))
        s = torch.where(causal, s, torch.tensor(-1e4, dtype=s.dtype))  # as transformers < 4.36 export it
        if mask is not None:
            s = s + (1.0 - mask[:, None, None, :]) * -1e4
        a = torch.matmul(torch.softmax(s, -1), v).permute(0, 2, 1, 3).contiguous()
        return self.c_proj(a.view(*a.size()[:-2], self.dim))


class TokenBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, gpt2: bool, sdpa: bool = False) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = GPT2Attention(dim, heads) if gpt2 else (HFSdpaAttention if sdpa else HFAttention)(dim, heads, 0)
        self.fc1, self.fc2 = (Conv1D(dim, hidden), Conv1D(hidden, dim)) if gpt2 else \
            (nn.Linear(dim, hidden), nn.Linear(hidden, dim))
        self.gpt2 = gpt2

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.gpt2:  # pre-LN, tanh GELU
            x = x + self.attn(self.n1(x), mask)
            return x + self.fc2(nn.functional.gelu(self.fc1(self.n2(x)), approximate="tanh"))
        x = self.n1(x + self.attn(x, mask))  # BERT: post-LN
        return self.n2(x + self.fc2(nn.functional.gelu(self.fc1(x))))


class TokenModel(nn.Module):
    """Token ids [N, T] (+ mask [N, T]) with a dynamic sequence length, as Hugging Face exports them: word and
    position embeddings → blocks → BERT: LayerNorm'd first token → classifier [N, 3]; GPT-2: LM head [N, T, V]."""

    def __init__(self, gpt2: bool, dim: int = 16, heads: int = 4, hidden: int = 24, depth: int = 2,
                 vocab: int = 11, tokens: int = 5, sdpa: bool = False) -> None:
        super().__init__()
        self.gpt2, self.t = gpt2, tokens
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(64, dim)
        self.blocks = nn.ModuleList(TokenBlock(dim, heads, hidden, gpt2, sdpa) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab if gpt2 else 3)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids) + self.wpe(torch.arange(ids.size(1), device=ids.device))[None]
        for b in self.blocks:
            x = b(x, mask.to(x.dtype))
        x = self.norm(x)
        return self.head(x if self.gpt2 else x[:, 0])


VARIANTS = {  # fixture name: Encoder keyword arguments
    "packed": dict(packed=True), "separate": dict(packed=False),
    "separate_mask_relu": dict(packed=False, masked=True, act="relu"), "packed_mask": dict(packed=True, masked=True),
    "hf_mask": dict(packed="hf", masked=True), "mha": dict(packed="mha"),
    "sdpa": dict(packed="sdpa"), "sdpa_mask": dict(packed="sdpa", masked=True), "sdpa_bias": dict(packed="sdpa_bias"),
}
GQA_VARIANTS = {"sdpa_gqa": dict(packed="gqa")}  # dynamo only (2 key/value heads, 4 query heads: other group sizes)
MHA_BATCH = {"mha_sdpa_b2": 2, "mha_sdpa_dyn": None}  # dynamo nn.MultiheadAttention at batch 2 / a dynamic batch
SDPA_TOKEN_MODELS = {"bert_sdpa": dict(gpt2=False, sdpa=True)}  # dynamo only: Hugging Face's sdpa attention
DYNAMO_OPSET = {name: 23 for name in [*VARIANTS, *GQA_VARIANTS, *SDPA_TOKEN_MODELS, *MHA_BATCH]
                if "sdpa" in name}  # scaled_dot_product_attention → the ONNX Attention op


def randomise(module: nn.Module, seed: int) -> nn.Module:
    """Seeded weights with non-trivial biases and LayerNorm affines (so zeroed channels are visible)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim > 1 else 0.2) + (1.0 if p.ndim == 1 and
                                                                                       p.shape[0] and False else 0))
    return module.eval()


TOKEN_MODELS = {"bert_ids": dict(gpt2=False), "gpt2": dict(gpt2=True)}  # TokenModel keyword arguments


def export(module: nn.Module, inputs: tuple, dynamo: bool = False, opset: int = 17,
           dynamic_batch: bool = False) -> onnx.ModelProto:
    """Batch axis dynamic; for token models (ids input) the sequence axis too, as Hugging Face exports are. dynamo
    exports encoders at the inputs' batch unless `dynamic_batch`."""
    tokens = isinstance(module, TokenModel)
    names = (["ids", "mask"] if tokens else ["x", "mask"])[:len(inputs)]
    axes = {0: "batch", 1: "sequence"} if tokens else {0: "batch"}
    buf = io.BytesIO()
    if dynamo:
        dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence", max=64)} if tokens else None
        shapes = {"ids": dims, "mask": dims} if tokens else (
            {"x": {0: torch.export.Dim("batch")}} if dynamic_batch else None)
        prog = torch.onnx.export(module, inputs, dynamo=True, input_names=names, output_names=["y"],
                                 opset_version=max(opset, 18), verbose=False, dynamic_shapes=shapes)
        model = prog.model_proto
    else:
        torch.onnx.export(module, inputs, buf, dynamo=False, opset_version=opset, input_names=names,
                          output_names=["y"], dynamic_axes={**{n: axes for n in names}, "y": {0: "batch"}})
        model = onnx.load_from_string(buf.getvalue())
    return normalise(model)


def token_inputs(module: TokenModel, n: int = 3, seed: int = 0) -> tuple:
    """Ids and a padding mask: sample 0 is padded after 3 tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, module.wte.num_embeddings, (n, module.t), generator=g)
    mask = torch.ones(n, module.t, dtype=torch.int64)
    mask[0, 3:] = 0
    return ids * mask, mask


def encoder_inputs(module: Encoder, n: int = 2, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, module.blocks[0].attn.t, module.embed.in_features, generator=g)
    if not module.masked:
        return (x,)
    mask = torch.ones(n, module.blocks[0].attn.t)
    mask[0, -2:] = 0
    return (x, mask)


def numpy_feed(model: onnx.ModelProto, inputs: tuple) -> dict[str, np.ndarray]:
    inits = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    return {k: v.numpy() for k, v in zip(names, inputs)}


def attention_graph(form: int = 3, heads: int = 4, kv_heads: int | None = None, mask: str | None = None,
                    dim: int = 16, hidden: int = 24, tokens: int = 5, depth: int = 2, f_in: int = 6,
                    seed: int = 0) -> onnx.ModelProto:
    """A pre-LN encoder written with the ONNX `Attention` op (opset 23) by hand, where no exporter makes the form:
    `form` 3 feeds it [N, T, H·dh] with `q_num_heads` / `kv_num_heads`; 4 feeds [N, H, T, dh] (Reshape + Transpose
    around it). `kv_heads` < `heads` is grouped-query attention (k, v projections dh·kv_heads wide). `mask`: None;
    "broadcast" (an input [N, 1, T, T] added to every head's scores); "const" (a constant per-head bias
    [H, T, T], ALiBi / learned-bias style); "input" (an input [N, H, T, T]: a mask per head computed at run time)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    kv_heads = kv_heads or heads
    dh = dim // heads
    nodes, inits, k = [], [], [0]

    def const(v: np.ndarray, name: str) -> str:
        inits.append(numpy_helper.from_array(np.asarray(v), name))
        return name

    def op(kind: str, ins: list[str], **kw) -> str:
        k[0] += 1
        out = f"{kind.lower()}_{k[0]}"
        nodes.append(helper.make_node(kind, ins, [out], name=f"n{k[0]}_{kind}", **kw))
        return out

    def linear(x: str, fi: int, fo: int, name: str) -> str:
        w = const((rng.standard_normal((fi, fo)) * 0.5).astype(np.float32), f"{name}.w")
        return op("Add", [op("MatMul", [x, w]), const((rng.standard_normal(fo) * 0.2).astype(np.float32), f"{name}.b")])

    def norm(x: str, name: str) -> str:
        g = const((1 + rng.standard_normal(dim) * 0.2).astype(np.float32), f"{name}.g")
        return op("LayerNormalization", [x, g, const((rng.standard_normal(dim) * 0.2).astype(np.float32), f"{name}.b")],
                  axis=-1)

    def split(x: str, h: int) -> str:  # [N, T, h·dh] → [N, h, T, dh]
        return op("Transpose", [op("Reshape", [x, const(np.array([0, tokens, h, dh], np.int64), f"split{h}_{k[0]}")])],
                  perm=[0, 2, 1, 3])

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", tokens, f_in])]
    if mask in ("broadcast", "input"):
        shape = ["batch", 1, tokens, tokens] if mask == "broadcast" else ["batch", heads, tokens, tokens]
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, shape))
    h = linear("x", f_in, dim, "embed")
    for b in range(depth):
        n = norm(h, f"b{b}.n1")
        q, kk, v = (linear(n, dim, hh * dh, f"b{b}.{p}") for p, hh in (("q", heads), ("k", kv_heads), ("v", kv_heads)))
        ins = [q, kk, v] if form == 3 else [split(q, heads), split(kk, kv_heads), split(v, kv_heads)]
        if mask == "const":
            ins.append(const((rng.standard_normal((heads, tokens, tokens))).astype(np.float32), f"b{b}.bias"))
        elif mask:
            ins.append("mask")
        kw = dict(q_num_heads=heads, kv_num_heads=kv_heads) if form == 3 else {}
        a = op("Attention", ins, **kw)
        if form == 4:
            a = op("Reshape", [op("Transpose", [a], perm=[0, 2, 1, 3]),
                               const(np.array([0, tokens, dim], np.int64), f"merge_{k[0]}")])
        h = op("Add", [h, linear(a, dim, dim, f"b{b}.o")])
        f = op("Gelu", [linear(norm(h, f"b{b}.n2"), dim, hidden, f"b{b}.fc1")])
        h = op("Add", [h, linear(f, hidden, dim, f"b{b}.fc2")])
    pooled = op("ReduceMean", [norm(h, "norm"), const(np.array([1], np.int64), "axes")], keepdims=0)
    y = linear(pooled, dim, 3, "head")
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "attention_op", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                             ["batch", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return normalise(model)
