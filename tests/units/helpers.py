"""Shared test helpers: run a model, compare two models, tiny fixed architectures like the bundled ones."""
from __future__ import annotations

import numpy as np
import onnx
from units.generate import Builder, random_keep

from onnxprune.io.runtime import make_session
from onnxprune.rewrite.channels import remove_channels, zero_consumers
from onnxprune.units.count import count
from onnxprune.units.groups import analyse


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = make_session(model, threads=1)
    return sess.run(None, {sess.get_inputs()[0].name: x})


def rel_err(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(u - v).max() / max(np.abs(v).max(), 1e-6)) for u, v in zip(a, b))


def sample_input(model: onnx.ModelProto, rng: np.random.Generator, batch: int = 2) -> np.ndarray:
    dims = [d.dim_value if d.HasField("dim_value") else batch for d in model.graph.input[0].type.tensor_type.shape.dim]
    return rng.standard_normal(dims).astype(np.float32)


def _finish(b: Builder) -> onnx.ModelProto:
    return b.model(b.head())


def tiny_resnet(seed: int = 0) -> onnx.ModelProto:
    b = Builder(np.random.default_rng(seed))
    b.stem()
    b.residual()
    b.residual()
    b.residual()
    return _finish(b)


def tiny_densenet(seed: int = 0) -> onnx.ModelProto:
    b = Builder(np.random.default_rng(seed))
    b.stem()
    b.dense()
    b.pool()
    b.dense()
    return _finish(b)


def tiny_mobilenet(seed: int = 0) -> onnx.ModelProto:
    b = Builder(np.random.default_rng(seed))
    b.stem()
    b.depthwise_se()
    b.depthwise_se()
    return _finish(b)


def tiny_lenet5bn(seed: int = 0) -> onnx.ModelProto:
    b = Builder(np.random.default_rng(seed), channels=1, hw=12)
    b.stem()
    b.pool()
    b.conv_chain()
    b.pool()
    f = b.op("Flatten", [b.x], axis=1)[0]
    h = b.op("Relu", [b._gemm(f, b.c * b.hw * b.hw, 8)])[0]
    return b.model(b._gemm(h, 8, 5))


def tiny_resnext(seed: int = 0) -> onnx.ModelProto:
    """Grouped convolutions (1 < group < C) in residual blocks, as in ResNeXt / RegNet."""
    b = Builder(np.random.default_rng(seed))
    b.stem()
    b.grouped()
    b.grouped()
    return _finish(b)


TINY = {"resnet": tiny_resnet, "densenet": tiny_densenet, "mobilenet": tiny_mobilenet, "lenet5bn": tiny_lenet5bn,
        "resnext": tiny_resnext}


def assert_prunes_exactly(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """Random kept subsets for every prunable group: removal equals consumer zeroing, and the model is valid."""
    rng = np.random.default_rng(seed)
    keep = random_keep(analyse(model), rng)
    pruned = remove_channels(model, keep)  # validates: strict inference, full checker, onnxruntime load
    onnx.checker.check_model(pruned, full_check=True)
    x = sample_input(model, rng)
    assert rel_err(run(pruned, x), run(zero_consumers(model, keep), x)) <= 1e-4
    if any(len(k) < g.size for g in analyse(model) for gid, k in keep.items() if g.id == gid):
        assert count(pruned).params < count(model).params
    return pruned
